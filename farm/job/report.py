"""The report as typed, immutable values (``farm.report/2``, docs/contracts.md section 2): one definition on both
sides of the container boundary.

The job builds a ``TargetResult`` (its result.json, one ``targets[]`` entry) and the controller reads it back, adds
what only it knows (exit code, log tail, image, backend, whether inspect predicted a load failure) and writes the
``Report``. Both write with ``farm.job.codec.encode`` and read with ``decode``: the fields, in order, are the JSON's
keys, in order. Fields with defaults are the keys older reports lack.

Standard library only: ``farm report`` and ``farm gate`` read these and must not load onnx (tests/unit/test_layers.py).
The controller's reading of a report file (JSON, then the schema, then ``decode``) is farm.report.model.load_report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from farm.job.codec import keyed
from farm.job.loadfailure import LoadFailure
from farm.job.types import Accuracy, Latency, NodeCount

# The schema a report written now follows; farm.report.schema also reads the older ones.
SCHEMA_ID = "farm.report/2"
# One wording: farm.inputs.data adds it to a synthetic run's warnings, and the renderers show it as a banner instead.
SYNTHETIC_WARNING = (
    "inputs are synthetic (random, from the declared types and shapes): accuracy figures may be meaningless; "
    "pass --data with real samples"
)

# A tensor dimension: its size, its symbolic name, or None when it has neither (farm.model.shapes prints them).
Dim = int | str | None
Mode = Literal["native", "masked", "emulated", "unavailable"]
Status = Literal["ok", "failed", "skipped"]
# What a variant's latency rests on: timed natively, timed on a masked tier, QEMU wall time (no speed proxy), an
# instruction-count estimate (farm.job.estimate), or nothing.
Timing = Literal["measured", "masked", "emulated", "estimated", "none"]
# How a timed target's rounds end (docs/contracts.md section 2): "fixed", after iterations / rounds runs each;
# "adaptive", by time as well, with fewer rounds for the variants that can claim nothing more.
TimingMode = Literal["adaptive", "fixed"]
# What a target's speed claims rest on (its variants' timing, summed up): "estimated" only for a trusted estimate.
SpeedEvidence = Literal["measured", "masked", "estimated", "none"]
DataSource = Literal["bundled", "npz", "onnx-test-data", "synthetic"]
# What a reader wants to know of a variant: ran fine, ran but drifted from fp32, quantized nothing, or did not run.
Outcome = Literal["ok", "out-of-tolerance", "not-quantized", "failed", "skipped"]
# How a target's image got to where it ran (farm.images.content).
ImageOrigin = Literal["built", "cached", "tagged", "shipped"]
# The export pitfall check's verdict (farm.job.pitfall).
CheckStatus = Literal["passed", "flagged", "not-run"]


@dataclass(frozen=True, kw_only=True, slots=True)
class TensorSummary:
    name: str
    dtype: str
    shape: tuple[Dim, ...] | None


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSummary:
    path: str
    sha256: str
    ir_version: int
    opsets: Mapping[str, int]
    inputs: tuple[TensorSummary, ...]
    outputs: tuple[TensorSummary, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class DataSummary:
    source: DataSource
    samples: int
    synthetic: bool
    labels: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class Tolerance:
    """What makes a verdict: cosine and top-1 thresholds, the outputs counted (None: every float output), and the
    user's --metric (``file.py:function``), which decides alone when given."""

    cosine: float
    top1_agreement: float
    outputs: tuple[str, ...] | None = None
    metric: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class HostSummary:
    """The machine the controller ran on: for native and masked targets, the CPU their timings come from."""

    arch: str
    cpu_model: str | None
    cpu_flags: tuple[str, ...]
    cores: int
    engine: str | None
    kernel: str

    @property
    def summary(self) -> str:
        """How the reports name the machine: its CPU (or architecture) and cores."""
        return f"{self.cpu_model or self.arch}, {self.cores} cores"


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSettings:
    """The options that change what a timing or an int8 artifact means."""

    threads: int
    iterations: int
    timing_rounds: int
    calibration: str
    optimization_level: str
    samples: int
    # `farm matrix --variant`: the only variants evaluated (fp32 among them); None: every variant. A variant such a
    # run left out is not a failure, and `farm gate` does not call it one.
    variants: tuple[str, ...] | None = keyed(omit="none", default=None)
    # `farm matrix --timing`; reports written before it timed every round in full: "fixed".
    timing_mode: TimingMode = "fixed"


# How many hex digits of an artifact cache key the log and the renderers show.
SHORT_KEY = 12


@dataclass(frozen=True, kw_only=True, slots=True)
class PrepareStage:
    """One toolchain's int8 artifacts in a run: made by a prepare job now, or reused from farm's artifact cache,
    where an earlier run of the same key stored them (farm/controller/artifactkey.py: the model, data, settings and
    the maker's image)."""

    # The runtime and packages that quantized them (targets.toml), e.g. "onnxruntime==1.31.1 onnx==1.20.1".
    toolchain: str
    # The targets they served in this run.
    targets: tuple[str, ...]
    # "failed": the prepare job made none, and the int8 variants of these targets say why.
    artifacts: Literal["made", "reused", "failed"]
    # The target whose image made them (for "reused", the one of the run that stored them).
    maker: str
    key: str
    # Whether they are in the cache after this run (not with --no-cache, a cache that cannot be written, or a
    # prepare that did not finish every candidate).
    cached: bool

    @property
    def short_key(self) -> str:
        """The key as the log and the renderers show it."""
        return self.key[:SHORT_KEY]


@dataclass(frozen=True, kw_only=True, slots=True)
class RunInfo:
    """Where and how a run ran (farm.report/2). Each target's image tag is in its own entry; the model's hash in
    ``model.sha256``."""

    label: str | None
    host: HostSummary
    settings: RunSettings
    data_sha256: str | None
    # Each toolchain's prepare stage in this run, in the order they ran; absent in reports from before farm cached
    # them, and empty when no target needed int8 artifacts.
    prepare: tuple[PrepareStage, ...] | None = keyed(omit="none", default=None)


@dataclass(frozen=True, kw_only=True, slots=True)
class Runtime:
    onnxruntime: str
    providers: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class CalibrationUsed:
    """How a static int8 variant was calibrated: the method, and the samples it actually saw (the spec's count, or
    fewer when the data has fewer)."""

    method: str
    samples: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Quantization:
    """How an int8 variant was made, and how many of the model's quantizable nodes it actually quantized
    (farm.job.quantize writes it into prepare.json; the evaluate stage copies it into the variant)."""

    kind: Literal["static", "dynamic"]
    format: Literal["QDQ", "QOperator"]
    activation_type: str
    weight_type: str
    reduce_range: bool
    per_channel: bool
    subgraphs: bool
    # None for dynamic quantization, which needs no calibration.
    calibration: CalibrationUsed | None
    opset: int
    nodes: NodeCount | None
    # What `farm tune` changed (the "tuned" variant): nodes left in fp32 and weights quantized to 7 bits, ...
    nodes_to_exclude: tuple[str, ...] = keyed(omit="empty", default=())
    seven_bit: tuple[str, ...] = keyed(omit="empty", default=())
    # ... and the exporter patterns it fused before quantizing ("nodes -> HardSwish node").
    fused: tuple[str, ...] = keyed(omit="empty", default=())


@dataclass(frozen=True, kw_only=True, slots=True)
class InstructionCounts:
    """Guest instructions one run of the variant executed under farm's counting QEMU, by class
    (farm/host/native/insncount.c names the classes): the fewest of ``runs`` marked runs; ``spread`` is how much
    more the run that executed most did, relative to that (what varies between runs only adds).
    ``qemu_wall_ms`` is the runs' median wall time under QEMU: no speed proxy, kept as the naive predictor
    scripts/bench-estimate measures the estimate against."""

    runs: int
    per_run: Mapping[str, int]
    spread: float
    qemu_wall_ms: float


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeDivergence:
    """One point where an int8 variant is compared with its reference (farm.job.divergence), over the samples: the
    SQNR and cosine of the variant's value there, and ``local_db``, the node's int8 group alone on the reference's
    inputs (None where the point has no such group)."""

    node: str
    op: str
    tensor: str
    sqnr_db: float
    cosine: float
    local_db: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class VariantDivergence:
    """Where an out-of-tolerance variant leaves fp32 on this target (`farm matrix --divergence`, `farm bisect`'s
    comparison): the first node below ``threshold_db`` (None: none is, the loss is spread out) and the worst nodes
    by local error; ``reproduced``: every marked run gave the variant's own outputs, bit for bit."""

    first_node: str | None
    op: str | None
    sqnr_db: float | None
    threshold_db: float
    worst: tuple[NodeDivergence, ...]
    reproduced: bool
    seconds: float


@dataclass(frozen=True, kw_only=True, slots=True)
class SpeedEstimate:
    """How a target's estimated latencies were made and whether they may carry a speed claim: the cost model
    (farm/job/estimate/costs.json), ``trusted`` as scripts/bench-estimate validated it for this architecture and cost
    model (farm/job/estimate/trust.json), and the estimate's 90th-percentile speedup error there, which a speed claim
    must beat."""

    cost_model: str
    trusted: bool
    error_p90: float | None
    basis: str


# What a variant's ``peak_rss_mib`` counts (docs/contracts.md section 2): ``process``, the profile process's own
# resident growth (its high-water mark less its resident memory once numpy and onnxruntime are imported); under QEMU
# user mode, where the resident figure is mostly QEMU's own, ``guest-heap``, the guest's malloc heap growth.
MemoryBasis = Literal["process", "guest-heap"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ThreadLatency:
    """The variant's p50 at one intra-op thread count of the target's ``threads`` list (profile only: the
    recommendation and the gate's latency rules use ``--threads``); ``oversubscribed``: more threads than the cores the
    target's process may use, so the figure is measured but says little."""

    threads: int
    p50_ms: float
    oversubscribed: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Profile:
    """The variant's deployment profile (farm.job.profile): start-up and memory in a process of its own that opened
    only this variant, created with the settings used for timing (``session_threads``, the optimization level).
    ``timing`` says what the start-up times rest on (``none`` under emulation, which has no times); on emulated
    targets ``rss_upper_bound_mib`` is the QEMU process's resident growth: the guest's touched pages and QEMU's own."""

    memory: MemoryBasis
    peak_rss_mib: float | None
    rss_upper_bound_mib: float | None = keyed(omit="none", default=None)
    session_threads: int
    session_create_ms: float | None = keyed(omit="none", default=None)
    first_run_ms: float | None = keyed(omit="none", default=None)
    timing: Timing = "none"
    threads: tuple[ThreadLatency, ...] = keyed(omit="empty", default=())


@dataclass(frozen=True, kw_only=True, slots=True)
class Variant:
    name: str
    status: Status
    error: str | None = None
    size_bytes: int | None = None
    latency_ms: Latency | None = None
    timing: Timing = "none"
    accuracy: Accuracy | None = None
    within_tolerance: bool | None = None
    # How the int8 model was made and what it quantized; None for fp32 and optimized.
    quantization: Quantization | None = None
    # Why the runtime refused to load it, when it did (farm.job.loadfailure).
    failure_class: LoadFailure | None = None
    # How many nodes each provider ran (the session's profile), after the runtime's graph optimizations.
    providers: Mapping[str, int] | None = None
    # Under farm's counting QEMU: the instructions one run executed, by class (what ``timing: estimated`` rests on).
    instructions: InstructionCounts | None = keyed(omit="none", default=None)
    # Memory, start-up and latency per thread count (farm.job.profile); None when not profiled (older reports,
    # --no-profile, a variant that failed).
    profile: Profile | None = keyed(omit="none", default=None)
    # Where it leaves fp32, for the out-of-tolerance variants closest to tolerance (`--divergence`); None: not asked.
    divergence: VariantDivergence | None = keyed(omit="none", default=None)

    @property
    def passes(self) -> bool:
        """Ran, and within tolerance: a variant the recommendation may pick."""
        return self.status == "ok" and self.within_tolerance is True

    @property
    def not_quantized(self) -> bool:
        """An int8 name on a model in which nothing was quantized (e.g. all compute inside If branches)."""
        nodes = None if self.quantization is None else self.quantization.nodes
        return nodes is not None and nodes.quantized == 0

    @property
    def outcome(self) -> Outcome:
        if self.status == "ok" and self.within_tolerance is False:
            return "out-of-tolerance"
        if self.status == "skipped" and self.not_quantized:
            return "not-quantized"
        return self.status


@dataclass(frozen=True, kw_only=True, slots=True)
class LoadRefusal:
    """Why the runtime refused the model as given. The job knows the class; the controller adds whether
    ``farm inspect`` predicted it (None: it could not tell) and what inspect's prediction was."""

    kind: LoadFailure = keyed(key="class")
    predicted: bool | None = None
    prediction: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ExportCheck:
    """The export pitfall check at batch 2 (farm.job.pitfall): fp32 on two samples as one batch against each
    sample at batch 1; ``node`` and ``op`` name the first node that stopped matching, when one was found."""

    status: CheckStatus
    detail: str
    node: str | None = None
    op: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TargetBackend:
    """Where a target ran (farm/backend): the backend's kind ("docker", "kubernetes") and place ("local" or an
    engine's address), the CPU of the machine there, and how its image got there (None until it did)."""

    kind: str
    where: str
    cpu_model: str | None
    image: ImageOrigin | None


@dataclass(frozen=True, kw_only=True, slots=True)
class TargetResult:
    """One ``targets[]`` entry. The job writes it as result.json with the controller's fields None; the controller
    fills those in (exit_code .. image, load_failure.predicted, resume_key, resumed_from, backend)."""

    name: str
    platform: str
    mode: Mode
    cpu_model: str | None = None
    status: Status
    reason: str | None = None
    runtime: Runtime | None = None
    variants: tuple[Variant, ...] = ()
    recommended: str | None = None
    recommendation_reason: str | None = None
    warnings: tuple[str, ...] = ()
    exit_code: int | None = None
    log_tail: str | None = None
    duration_s: float | None = None
    image: str | None = None
    # What the runtime's process saw of the CPU (numpy's CPUID probe), on x86: what a masked tier's proof rests on.
    cpu_seen: tuple[str, ...] | None = None
    load_failure: LoadRefusal | None = None
    export_check: ExportCheck | None = None
    # What the result depends on, hashed (farm/controller/resume.py); None when the job did not end on its own.
    resume_key: str | None = None
    # The created time of the report `farm matrix --resume` took this result from; None when it ran in this run.
    resumed_from: str | None = None
    # None in reports written before backends, and for a target whose backend was unreachable.
    backend: TargetBackend | None = None
    # What the target's speed claims rest on; None in reports written before farm recorded it.
    speed_evidence: SpeedEvidence | None = keyed(omit="none", default=None)
    # The int8 variant to ship if int8 is wanted (for size or power), by farm.job.recommend's stated rule.
    int8_if_needed: str | None = keyed(omit="none", default=None)
    # How the estimated latencies were made, when the target ran under farm's counting QEMU.
    estimate: SpeedEstimate | None = keyed(omit="none", default=None)

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)


@dataclass(frozen=True, kw_only=True, slots=True)
class Report:
    schema: str = SCHEMA_ID
    farm_version: str
    created: str
    model: ModelSummary
    data: DataSummary
    tolerance: Tolerance
    # None only in farm.report/1 reports, written before farm recorded it; then the key is absent.
    run: RunInfo | None = keyed(omit="none", default=None)
    # Why the run stopped before every target finished (Ctrl-C, SIGTERM, a lost engine); None when it finished.
    incomplete: str | None = None
    warnings: tuple[str, ...] = ()
    targets: tuple[TargetResult, ...]
