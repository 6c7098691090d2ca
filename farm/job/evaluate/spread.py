"""The variants after fp32, in the report's order (optimized, each candidate followed by its mitigations, tuned): one
after another in the job's process, or, on a target where nothing is timed, shared out among worker processes
(farm.job.pool) over the container's cores.

Only an emulated target spreads: its variants report accuracy only, while a timed target's timing must never overlap
other work (and its sessions stay in the job for the timing phase). With an estimate (the counting QEMU), the workers
measure accuracy only, and the job counts every variant first, one after another, before fp32's accuracy
(count_first, farm.job.evaluate.counted): the marks count the instructions of the process that sets them, their ids
are the job's, the estimate's budget is the job's, and the job's memory is then the same in every run, so the counts
repeat;
a second session creation per variant is the price, next to the accuracy runs that the workers share (measured in
the README). The estimates go into the variants that ran ok.

Each worker opens and runs a variant with the measure as the job holds it after fp32 (its reference, its metric) and
answers with the variant's result (farm.job.codec); the job writes each result into result.json as it arrives, at
its place in the order, and asks the profile server for the variant's profile itself: the server's pipes are the
job's alone. A worker that dies costs only the variant it was running, failed with how it died.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from farm.job import capacity
from farm.job.codec import decode, encode
from farm.job.data import Dataset
from farm.job.estimate.marks import MarkedRun
from farm.job.evaluate.counted import count_opened, put_counts
from farm.job.evaluate.file import ResultFile
from farm.job.evaluate.measure import VariantMeasure, level_for, opener
from farm.job.evaluate.profiled import Profiler
from farm.job.evaluate.timed import Timer
from farm.job.pool import Answer, Lost, run_pool
from farm.job.profile.child import status_kib
from farm.job.report import Quantization, Variant
from farm.job.spec import Spec
from farm.job.variants import FP32

log = logging.getLogger("farm.job")
# What a worker needs at least: under QEMU the process's own growth (the code it translates) comes on top of a
# variant's session; the job's own growth through fp32 is the figure when it is larger (see worker_bytes).
WORKER_FLOOR = 128 << 20
LOST = "{why}; the other variants went on"


@dataclass(frozen=True, kw_only=True, slots=True)
class Slot:
    """One variant: ``ready`` when it is known without running anything (a candidate prepare did not make, or one
    that quantized nothing), else ``run`` opens and measures it; ``path`` and ``config`` are what its profile
    opens, ``quantization`` how prepare (or tune) made it."""

    name: str
    ready: Variant | None = None
    run: Callable[[VariantMeasure], Variant] | None = None
    path: Path | None = None
    config: Mapping[str, str] = field(default_factory=dict)
    quantization: Quantization | None = None
    # Writes ``path`` where its run writes it (optimized), once per process that calls it first: the job calls it to
    # count the variant before the workers start, and the worker, forked after, finds it made.
    make: Callable[[], Path] | None = None

    def measured(self, measure: VariantMeasure) -> Variant:
        assert self.run is not None
        return replace(self.run(measure), quantization=self.quantization)


def spreads(spec: Spec) -> bool:
    """Whether ``spec``'s variants may be shared out among workers: nothing is timed."""
    return spec.target.emulated and spec.timing.iterations == 0


def run_slots(
    spec: Spec,
    file: ResultFile,
    measure: VariantMeasure,
    slots: Sequence[Slot],
    rss_start_kib: int,
    counted: Mapping[str, Sequence[MarkedRun]],
) -> None:
    """Add every slot's variant to ``file``, in order, with the estimates of ``counted`` (count_first's).
    ``rss_start_kib``: the job's resident memory when the stage began, from which its growth through fp32 is one
    worker's need (worker_bytes)."""
    runs = sum(1 for slot in slots if slot.run is not None)
    count = 1
    if spreads(spec) and runs > 1:
        per_worker = worker_bytes(rss_start_kib)
        server = measure.profiler.server
        reserve = 0 if server is None else per_worker * server.parallel
        count, rule = capacity.worker_count(runs, per_worker=per_worker, reserve=reserve)
        log.info("evaluate: %d variant(s) in %d worker process(es) (%s)", runs, count, rule)
    if count <= 1:
        for slot in slots:
            if slot.ready is not None:
                file.add(slot.ready)
                continue
            file.begin(slot.name)
            file.add(slot.measured(measure))
    else:
        _Spread(file, measure, slots).run(count)
    if spec.estimate is not None:
        put_counts(file, counted, spec.estimate)


def worker_bytes(rss_start_kib: int) -> int:
    """One worker's memory: the job's own growth from the stage's start to its high-water mark (fp32's session, its
    run, the export check at batch 2, with an estimate the sessions counted one at a time before them, and under QEMU
    the code translated meanwhile: what opening and running one more variant takes at most; a worker shares the rest
    with the job until it writes it), at least WORKER_FLOOR."""
    try:
        growth = (status_kib("VmHWM") - rss_start_kib) << 10
    except (OSError, RuntimeError, ValueError):
        growth = 0
    return max(WORKER_FLOOR, growth)


class _Spread:
    """The slots shared out among workers, each result written at its place in the order as it arrives."""

    def __init__(self, file: ResultFile, measure: VariantMeasure, slots: Sequence[Slot]) -> None:
        self.file, self.measure, self.slots = file, measure, slots
        self.base = len(file.result.variants)
        self.placed: set[int] = set()
        self.runs = [index for index, slot in enumerate(slots) if slot.run is not None]

    def run(self, count: int) -> None:
        for index, slot in enumerate(self.slots):
            if slot.ready is not None:
                self._place(index, slot.ready)
        profiler = self.measure.profiler
        # A worker never asks for a profile (the server's pipes are the job's); the job asks when the result comes.
        quiet = Profiler(spec=profiler.spec, server=None, feed={}, file=self.file)
        # Nor does it keep a session to count: the job counts its own (see the module's docstring).
        spec, reference = profiler.spec, self.measure.reference
        timer = Timer(
            timing=spec.timing, target=spec.target, feeds=reference.feeds, file=self.file, threads=spec.threads
        )
        worker = replace(self.measure, profiler=quiet, timer=timer)
        server = profiler.server
        run_pool(
            count,
            [partial(_answer, self.slots[index], worker) for index in self.runs],
            on_start=lambda task: self.file.begin(self.slots[self.runs[task]].name),
            on_done=self._done,
            close_in_worker=() if server is None else (server.requests, server.answers),
        )

    def _done(self, task: int, answer: Answer) -> None:
        index = self.runs[task]
        slot = self.slots[index]
        if isinstance(answer, Lost):
            variant = Variant(
                name=slot.name, status="failed", error=LOST.format(why=answer.why), quantization=slot.quantization
            )
        else:
            # The job's own answer from a worker it forked: one that does not decode is farm's bug, and fails loudly.
            variant = decode(Variant, json.loads(answer), where=f"the worker's result for {slot.name}.")
        if variant.accuracy is not None and slot.path is not None:
            level = level_for(self.measure.spec, slot.name)
            profile = self.measure.profiler.profile(slot.name, slot.path, slot.config, level)
            variant = replace(variant, profile=profile) if profile is not None else variant
        self._place(index, variant)

    def _place(self, index: int, variant: Variant) -> None:
        at = self.base + sum(1 for placed in self.placed if placed < index)
        self.placed.add(index)
        self.file.add(variant, at=at)


def count_first(spec: Spec, file: ResultFile, dataset: Dataset, slots: Sequence[Slot]) -> dict[str, list[MarkedRun]]:
    """fp32 and each variant to run, a session of each opened in the job and counted on the first sample, one after
    another, before fp32's accuracy (a worker opens its own); nothing without an estimate.

    First, because a count depends on where the process's buffers lie (pointer-keyed tables, the alignment of the
    copies), and so on everything the process allocated before it. Up to here the job allocated the same every run;
    fp32's accuracy, the workers' answers and the profile's leave memory shaped by times and the order things
    finished. Counted after fp32, one int8 variant of the same model in the same image moved 0.3-0.9% between two
    matrices in 3 of 4 suite runs on an AMD EPYC Zen 3 (after the workers, 0.18%); fp32 counted in its accuracy
    session, 3.2% on x86 Haswell."""
    if spec.estimate is None or dataset.samples == 0:
        return {}
    fp32 = Slot(name=FP32, path=spec.model)
    to_count = {
        fp32.name: fp32,
        **{slot.name: slot for slot in slots if slot.run is not None and slot.path is not None},
    }
    return count_opened(
        to_count, lambda name: _open_to_count(spec, to_count[name]), partial(dataset.feed, 0), spec.estimate, file
    )


def _open_to_count(spec: Spec, slot: Slot) -> Any:
    """``slot``'s session, or None where it does not open: its worker fails it and says why."""
    assert slot.path is not None
    try:
        if slot.make is not None:
            slot.make()
        return opener(spec, slot.name, slot.config)(slot.path)
    except Exception:
        return None


def _answer(slot: Slot, measure: VariantMeasure) -> bytes:
    """In the worker: the slot's variant, as bytes for the pipe."""
    return json.dumps(encode(slot.measured(measure)), allow_nan=False).encode()
