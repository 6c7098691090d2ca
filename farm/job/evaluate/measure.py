"""One variant's figures: its session opened and run on fp32's feeds, its accuracy against fp32's outputs (and the
user's --metric), its latency left to the timing phase."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from farm.job import usermetric
from farm.job.evaluate.metric import Metric
from farm.job.evaluate.profiled import Profiler
from farm.job.evaluate.timed import Timer, timing_label
from farm.job.loadfailure import classify
from farm.job.metrics import compare
from farm.job.modelfile import model_size
from farm.job.reference import Reference
from farm.job.report import Variant
from farm.job.result import error_text
from farm.job.session import node_providers, open_session
from farm.job.spec import Level, Spec
from farm.job.timing import run_all
from farm.job.types import Accuracy
from farm.job.variants import OPTIMIZED


def level_for(spec: Spec, name: str) -> Level:
    """The graph optimization level variant ``name`` is opened at: the spec's for optimized, all for the others."""
    return spec.optimization_level if name == OPTIMIZED else "all"


def opener(spec: Spec, name: str, config: Mapping[str, str] | None = None) -> Callable[[Path | bytes], Any]:
    """Sessions of a model (a path, or serialized) opened as this stage opens variant ``name`` (its level,
    ``config``'s session options), unprofiled: what the counts run, and farm bisect's comparison runs fp32, a variant
    and its groups with."""
    level = level_for(spec, name)
    return lambda model: open_session(model, target=spec.target, threads=spec.threads, config=config, level=level)


@dataclass(frozen=True, kw_only=True, slots=True)
class VariantMeasure:
    """What every variant is measured against: fp32's reference, the outputs its verdict counts, the user's metric
    (None: none given), the timer that keeps its session, and the profiler that measures its start-up and memory."""

    spec: Spec
    reference: Reference
    counted: tuple[str, ...]
    metric: Metric | None
    timer: Timer
    profiler: Profiler

    def variant(self, name: str, path: Path, config: dict[str, str] | None = None) -> Variant:
        """Open and run the model at ``path``; its failure to load or run is its result, never the target's end."""
        spec = self.spec
        level = level_for(spec, name)
        try:
            session = open_session(
                path, target=spec.target, threads=spec.threads, config=config, level=level, profile=True
            )
        except Exception as exc:  # one variant's failure must not end the others
            error = error_text(exc)
            return Variant(
                name=name, status="failed", error=error, size_bytes=model_size(path), failure_class=classify(error)
            )
        try:
            outputs = run_all(session, self.reference.feeds)
        except Exception as exc:
            return Variant(name=name, status="failed", error=error_text(exc), size_bytes=model_size(path))
        ran = node_providers(session)
        return replace(self.outputs(name, path, session, outputs, config=config, level=level), providers=ran)

    def outputs(
        self,
        name: str,
        path: Path,
        session: Any,
        outputs: list[list[np.ndarray]],
        *,
        config: dict[str, str] | None = None,
        level: Level = "all",
    ) -> Variant:
        """Accuracy now, then the profile (its own process, opened as ``session`` was: ``config``, ``level``);
        latency in the timing phase, for which the session is kept (or timed now, see Timer)."""
        spec = self.spec
        size = model_size(path)
        try:
            accuracy: Accuracy = compare(
                self.reference.outputs,
                outputs,
                self.reference.labels,
                names=self.reference.names,
                counted=self.counted,
                tolerance=(spec.tolerance.cosine, spec.tolerance.top1_agreement),
            )
        except Exception as exc:
            return Variant(name=name, status="failed", error=error_text(exc), size_bytes=size)
        profile = self.profiler.profile(name, path, config, level)
        opener = None if profile is None else self._opener(path, config, level)
        latency = self.timer.keep(name, session, size, opener)
        timing = timing_label(spec.target, latency)
        if self.metric is not None:
            try:
                accuracy = replace(accuracy, metric=self.metric.score(outputs))
            except usermetric.UserMetricError as exc:
                # The variant ran and its figures stand; only its verdict is missing, so it cannot be chosen.
                return Variant(
                    name=name,
                    status="failed",
                    error=str(exc),
                    size_bytes=size,
                    latency_ms=latency,
                    timing=timing,
                    accuracy=accuracy,
                )
        return Variant(
            name=name,
            status="ok",
            size_bytes=size,
            latency_ms=latency,
            timing=timing,
            accuracy=accuracy,
            within_tolerance=accuracy.within(
                cosine=spec.tolerance.cosine, top1_agreement=spec.tolerance.top1_agreement
            ),
            profile=profile,
        )

    def _opener(self, path: Path, config: dict[str, str] | None, level: Level) -> Callable[[int], Any]:
        """Opens the variant as the evaluate stage did, at another intra-op thread count (the profile's list)."""
        target = self.spec.target
        return lambda count: open_session(path, target=target, threads=count, config=config, level=level)
