"""Stage ``tune`` (``farm tune``, issue 12): the fastest int8 model of this target that holds the tolerance, found in
the target itself, with its own kernels; or the evidence that none beats fp32 by the speed floor.

1. The start: ``tune.start``, else among the target's static candidates the most accurate one that is at least
   ``floor`` times as fast as fp32 (when timed), else the most accurate. An emulated target given the native
   search's tuned model (``tune.candidate``) starts from that instead.
2. The kernel check (farm.job.kernels), once per lane: each quantized compute node cut out with its Q/DQ nodes and
   run fused, with this target's int8 kernel, against the same QDQ computed as written. A node whose kernel loses
   accuracy here (VPMADDUBSW's int16 pair sums saturate on x86 without VNNI; a run with 32-bit sums tells) first gets
   7-bit weights alone, the classic remedy that keeps its int8 speed, and fp32 when those fall short. Where several
   saturate, 7-bit weights for all of them are one trial first; ``MAX_IDLE_TRIALS`` remedies in a row that did not
   help leave the rest to the ranking.
3. The cheap knobs, each one trial: exporter patterns fused (farm.job.fuse), the other calibration methods,
   per-channel weights, and 7-bit weights everywhere (reduce_range) only where the kernel check could not run.
4. The SQNR ranking (farm.job.ranking), once, or ``tune.ranking`` as the native search wrote it; then the greedy
   search, worst point first: each trial keeps one more *region* in fp32 and is kept only when it brings the real
   metric (the tolerance's cosine and top-1, or ``--metric``) closer to the tolerance and, when timed, the model
   still beats fp32 by the floor; otherwise it is undone.
5. Within tolerance, each change is undone alone and stays undone while the model stays within: those whose reason
   does not hold on this target first (a node kept in fp32 for a kernel that is exact here). Then, for speed, the
   fusion of exporter patterns.
6. Lanes: on a timed target, each kernel family (activation and weight type) whose naive variants ran faster than
   the best model's family gets a search of its own, from its plain recipe with the best model's settings: U8S8 with
   one node in fp32 can beat U8U8 with none, whose kernels run at about half the speed on x86.

It stops when the lanes end, at the budget (``budget_trials`` search trials, ``budget_s`` seconds since the stage
started); a lane stops within tolerance, after ``MAX_IDLE_TRIALS`` trials in a row that did not help, when the points
run out, when it can no longer beat its rival, or at once when its start does not beat fp32 by the floor (keeping
more in fp32 only makes it slower).

``tune.json`` (``farm.tune/1``) is rewritten atomically after every trial, so an interrupted search keeps its log
(``status`` says "running" until the end). When nothing within tolerance beats fp32 by the floor the verdict is
"keep-fp32", with the best trade-off found: a result, not a failure. ``tuned.onnx`` is written when the verdict is
"tuned".

The package, one job a module: ``record`` (the configs, the trials and tune.json as it stands), ``measure`` (fp32's
reference and a model's accuracy and speed against it), ``source`` (the prepared and fused sources), ``trials`` (make,
measure and judge one model), ``start`` (the naive variants and the start), ``kernelstep``, ``steps`` and ``points``
(the search steps), ``lanes`` (the lanes), ``lineage`` (what a model keeps out of int8 and why), ``judge`` and
``verdict`` (the best trial and the verdict), ``progress`` and ``words`` (its progress lines and how it words
figures), ``stage`` (the stage that ties them together).
"""

from farm.job.tune.kernelstep import MAX_IDLE_TRIALS
from farm.job.tune.lanes import FASTER_BY
from farm.job.tune.measure import MIN_GAIN
from farm.job.tune.record import SCHEMA, QuantConfig, TuneFailed
from farm.job.tune.stage import run_tune

__all__ = ["FASTER_BY", "MAX_IDLE_TRIALS", "MIN_GAIN", "SCHEMA", "QuantConfig", "TuneFailed", "run_tune"]
