"""Measuring a trial's model for the search: its accuracy against fp32 (the tolerance's cosine and top-1, and the
user's --metric), how far that is from the tolerance, and its speed against fp32, their rounds alternating."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from farm.job import cpu, usermetric
from farm.job.codec import encode
from farm.job.data import Dataset, DatasetError
from farm.job.metrics import compare
from farm.job.modelfile import model_size
from farm.job.reference import Reference
from farm.job.result import error_text
from farm.job.session import open_session
from farm.job.spec import Spec, Timing
from farm.job.timing import run_all, speedup, time_rounds
from farm.job.tune import progress
from farm.job.tune.record import Record, TuneFailed
from farm.job.types import Accuracy, Latency

# A change is kept when it closes at least this share of the gap to the tolerance (or, with the tolerance met by
# cosine and top-1 but not by --metric, raises the cosine at all).
MIN_GAIN = 0.01


@dataclass(frozen=True, kw_only=True, slots=True)
class Measure:
    """fp32's reference on this target and what a model is measured against; made once, before the search."""

    reference: Reference
    counted: tuple[str, ...]
    tolerance: tuple[float, float]
    timing: Timing
    fp32_session: Any
    metric: usermetric.UserMetric | None = None
    metric_function: str | None = None
    reference_by_name: dict[str, Any] | None = None

    @property
    def timed(self) -> bool:
        return self.timing.iterations > 0

    @property
    def feeds(self) -> list[dict[str, np.ndarray]]:
        return self.reference.feeds

    def run(self, session: Any) -> Accuracy:
        """``session`` over every sample, compared with fp32; raises what the runtime or the comparison raises."""
        return self.accuracy(run_all(session, self.feeds))

    def accuracy(self, outputs: list[list[np.ndarray]]) -> Accuracy:
        ref = self.reference
        accuracy = compare(
            ref.outputs, outputs, ref.labels, names=ref.names, counted=self.counted, tolerance=self.tolerance
        )
        if self.metric is not None and self.metric_function is not None and self.reference_by_name is not None:
            score = usermetric.score(
                self.metric,
                self.metric_function,
                self.reference_by_name,
                usermetric.by_name(ref.names, outputs),
                ref.labels,
            )
            accuracy = replace(accuracy, metric=score)
        return accuracy

    def within(self, accuracy: Accuracy) -> bool:
        return accuracy.within(cosine=self.tolerance[0], top1_agreement=self.tolerance[1])

    def gap(self, accuracy: Accuracy) -> float:
        """How far from the tolerance, in units of the loss it allows (0 when cosine and top-1 are within)."""
        cosine, top1 = self.tolerance
        gap = max(0.0, cosine - accuracy.cosine) / max(1.0 - cosine, 1e-6)
        if accuracy.top1_agreement is not None:
            gap += max(0.0, top1 - accuracy.top1_agreement) / max(1.0 - top1, 1e-6)
        return gap

    def better(self, new: Accuracy, old: Accuracy) -> bool:
        """``new`` is closer to the tolerance than ``old`` by enough to pay for what the change costs."""
        new_within, old_within = self.within(new), self.within(old)
        if new_within != old_within:
            return new_within
        new_gap, old_gap = self.gap(new), self.gap(old)
        if old_gap > 0:
            return new_gap < old_gap * (1.0 - MIN_GAIN)
        return not old_within and new.cosine > old.cosine + 1e-6

    def time(self, sessions: list[Any]) -> list[Latency | Exception]:
        """fp32 and ``sessions``, their rounds alternating; fp32's entry first."""
        timing = self.timing
        return time_rounds(
            [self.fp32_session, *sessions],
            self.feeds,
            warmup=timing.warmup,
            iterations=timing.iterations,
            rounds=timing.rounds,
        )

    def time_against_fp32(self, session: Any) -> tuple[Latency | None, float | None, str | None]:
        """``session`` against fp32, their rounds alternating: (latency, speedup, why there is none)."""
        fp32, latency = self.time([session])
        if isinstance(latency, Exception):
            return None, None, f"could not be timed: {error_text(latency)}"
        if isinstance(fp32, Exception):
            return latency, None, f"fp32 could not be timed: {error_text(fp32)}"
        return latency, speedup(fp32, latency), None


def load(spec: Spec, record: Record) -> tuple[Dataset, Measure]:
    """The dataset, the --metric, and fp32's reference on this target; writes fp32's accuracy into tune.json."""
    try:
        dataset = Dataset.load(spec.inputs, spec.labels)
    except DatasetError as exc:
        raise TuneFailed(str(exc)) from exc
    if spec.target.masked:
        seen = cpu.features_seen() if spec.target.arch == "x86_64" else None
        problem = cpu.mask_problem(spec.target.cpu_unseen, seen)
        if problem:
            raise TuneFailed(problem)
    metric = None
    if spec.metric is not None:
        try:
            metric = usermetric.load(spec.metric.file, spec.metric.function)
        except usermetric.UserMetricError as exc:
            raise TuneFailed(str(exc)) from exc
    progress.say("evaluating fp32")
    try:
        session = open_session(spec.model, target=spec.target, threads=spec.threads)
        reference = Reference.run(session, dataset)
    except Exception as exc:  # ORT's own words: the model does not run here
        raise TuneFailed(f"fp32 does not run: {error_text(exc)}") from exc
    unknown = reference.unknown(spec.outputs)
    if unknown:
        raise TuneFailed(f"--output names {', '.join(unknown)}, which the model does not output")
    measure = Measure(
        reference=reference,
        counted=reference.counted(spec.outputs),
        tolerance=(spec.tolerance.cosine, spec.tolerance.top1_agreement),
        timing=spec.timing,
        fp32_session=session,
        metric=metric,
        metric_function=None if spec.metric is None else spec.metric.function,
        reference_by_name=reference.by_name() if metric is not None else None,
    )
    accuracy = measure.accuracy(reference.outputs)
    record.state["fp32"] = {"accuracy": encode(accuracy), "latency_ms": None, "size_bytes": model_size(spec.model)}
    record.save()
    return dataset, measure
