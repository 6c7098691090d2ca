"""The timing phase: the variants' sessions kept open and timed together in alternating rounds (farm.job.timing),
or, past a memory budget, each timed alone as soon as its accuracy is known."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from farm.job.evaluate.counted import count_kept
from farm.job.evaluate.file import ResultFile
from farm.job.report import Timing as TimingLabel
from farm.job.result import error_text
from farm.job.spec import Estimate, SpecTarget, Timing
from farm.job.timing import time_rounds
from farm.job.types import Latency

# Sessions are kept open for the alternating timing phase up to this much model on disk; beyond it (a large
# model times many variants), the rest are timed one after another, as soon as their accuracy is known.
KEEP_SESSIONS_BYTES = 1 << 30
TIMED_ALONE = (
    "some variants were timed one after another rather than in alternating rounds (the models are too large to "
    "keep open together), so a slow stretch of the host may fall on some of them only"
)

log = logging.getLogger("farm.job")


@dataclass(frozen=True, kw_only=True, slots=True)
class _Timed:
    name: str
    session: Any


def timing_label(target: SpecTarget, latency: Latency | None) -> TimingLabel:
    """What a latency measured on ``target`` stands for (docs/contracts.md section 2)."""
    if latency is None:
        return "none"
    return "emulated" if target.emulated else "masked" if target.masked else "measured"


class Timer:
    """The sessions kept for the timing phase, and the model bytes they hold."""

    def __init__(
        self,
        *,
        timing: Timing,
        target: SpecTarget,
        feeds: list[dict[str, np.ndarray]],
        file: ResultFile,
        estimate: Estimate | None = None,
    ) -> None:
        self.timing, self.target, self.feeds, self.file = timing, target, feeds, file
        self.estimate = estimate
        self.kept: list[_Timed] = []
        self.kept_bytes = 0

    def keep(self, name: str, session: Any, size: int | None) -> Latency | None:
        """Keep the session for the alternating timing phase, or, past the memory budget, time it right away."""
        timing = self.timing
        if self.estimate is not None:
            # Counting is cheap in memory next to QEMU itself, and its marks need every session in one place.
            self.kept.append(_Timed(name=name, session=session))
            return None
        if timing.iterations == 0:
            return None
        if self.kept_bytes + (size or 0) <= KEEP_SESSIONS_BYTES:
            self.kept.append(_Timed(name=name, session=session))
            self.kept_bytes += size or 0
            return None
        if TIMED_ALONE not in self.file.result.warnings:
            self.file.warn(TIMED_ALONE)
        latency = time_rounds(
            [session], self.feeds, warmup=timing.warmup, iterations=timing.iterations, rounds=timing.rounds
        )[0]
        if isinstance(latency, Exception):
            # Its accuracy stands; a variant that cannot be timed simply has no latency.
            self.file.warn(f"{name} could not be timed: {error_text(latency)}")
            return None
        return latency

    def time_kept(self) -> None:
        """Time every kept session, alternating their rounds, and put each latency into its variant's result.

        Round i of every variant runs in the same stretch of time, so a slow stretch (a noisy neighbour, a clock
        change) lands on all of them alike, and comparing round by round cancels it.
        """
        if not self.kept:
            return
        if self.estimate is not None:
            self.file.time_underway(True)
            count_kept([(k.name, k.session) for k in self.kept], self.feeds, self.estimate, self.file)
            self.kept = []
            self.file.time_underway(False)
            return
        file, timing = self.file, self.timing
        log.info("evaluate: timing %d variants in alternating rounds", len(self.kept))
        file.time_underway(True)
        file.save()
        latencies = time_rounds(
            [k.session for k in self.kept],
            self.feeds,
            warmup=timing.warmup,
            iterations=timing.iterations,
            rounds=timing.rounds,
        )
        by_name: dict[str, Latency] = {}
        for kept, latency in zip(self.kept, latencies, strict=True):
            if isinstance(latency, Exception):
                # One variant's runtime error while timing costs its latency, not the others' nor its accuracy.
                file.warn(f"{kept.name} could not be timed: {error_text(latency)}")
            else:
                by_name[kept.name] = latency
        self.kept = []
        file.time_underway(False)
        variants = tuple(
            replace(v, latency_ms=by_name[v.name], timing=timing_label(self.target, by_name[v.name]))
            if v.name in by_name
            else v
            for v in file.result.variants
        )
        file.save(variants=variants)
