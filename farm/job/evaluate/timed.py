"""The timing phase: the variants' sessions kept open and timed together in alternating rounds (farm.job.timing),
or, past a memory budget, each timed alone as soon as its accuracy is known."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from farm.job.evaluate.file import ResultFile
from farm.job.profile import threads as thread_counts
from farm.job.report import Timing as TimingLabel
from farm.job.report import Variant
from farm.job.result import error_text
from farm.job.spec import Estimate, SpecTarget, Timing
from farm.job.timing import Role, Timed, time_variants
from farm.job.types import Latency
from farm.job.variants import BASELINES

# Sessions are kept open for the alternating timing phase up to this much model on disk; beyond it (a large
# model times many variants), the rest are timed one after another, as soon as their accuracy is known.
KEEP_SESSIONS_BYTES = 1 << 30
# The sessions opened only for the profile's other thread counts: half as much model, and at most this many intra-op
# threads in all (the container's pids limit is 512).
EXTRA_SESSIONS_BYTES = KEEP_SESSIONS_BYTES // 2
EXTRA_THREADS = 256
TIMED_ALONE = (
    "some variants were timed one after another rather than in alternating rounds (the models are too large to "
    "keep open together), so a slow stretch of the host may fall on some of them only"
)
NO_THREAD_COUNTS = (
    "{name} has no p50 at some of the profile's thread counts: the models are too large, or their threads too many, "
    "to keep their sessions open together"
)

log = logging.getLogger("farm.job")


@dataclass(frozen=True, kw_only=True, slots=True)
class _Timed:
    name: str
    session: Any
    # Its sessions at the profile's other thread counts, timed in the same rounds (profile only).
    others: tuple[tuple[int, Any], ...] = ()


def measured_as(target: SpecTarget) -> TimingLabel:
    """What a time measured on ``target`` stands for (docs/contracts.md section 2)."""
    return "emulated" if target.emulated else "masked" if target.masked else "measured"


def timing_label(target: SpecTarget, latency: Latency | None) -> TimingLabel:
    """What ``latency`` stands for: ``none`` when there is none."""
    return "none" if latency is None else measured_as(target)


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
        threads: int = 1,
        counts: tuple[int, ...] = (),
    ) -> None:
        self.timing, self.target, self.feeds, self.file = timing, target, feeds, file
        self.estimate = estimate
        # The profile's thread counts (empty: none timed) and --threads, the count of every variant's own session.
        self.threads, self.counts = threads, counts
        self.kept: list[_Timed] = []
        self.kept_bytes = 0
        # What the sessions at the profile's other thread counts hold.
        self.extra_bytes = self.extra_threads = 0

    def keep(
        self, name: str, session: Any, size: int | None, opener: Callable[[int], Any] | None = None
    ) -> Latency | None:
        """Keep the session for the alternating timing phase, or, past the memory budget, time it right away.
        ``opener(count)`` opens the variant at another thread count (None: the variant has no profile)."""
        timing = self.timing
        if self.estimate is not None:
            # Counted instead, in a session of its own before fp32 ran (spread.count_first), not in ``session``:
            # opened with onnxruntime's profiler, fp32's counted runs varied by 6-9% on x86 Haswell.
            return None
        if timing.iterations == 0:
            return None
        if self.kept_bytes + (size or 0) <= KEEP_SESSIONS_BYTES:
            self.kept_bytes += size or 0
            self.kept.append(_Timed(name=name, session=session, others=self._others(name, size, opener)))
            return None
        self.file.warn(TIMED_ALONE)
        if opener is not None and thread_counts.others(self.counts, self.threads):
            self.file.warn(NO_THREAD_COUNTS.format(name=name))
        latency = time_variants([Timed(session=session)], self.feeds, timing)[0]
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
        file, timing = self.file, self.timing
        log.info("evaluate: timing %d variants in alternating rounds (%s)", len(self.kept), timing.mode)
        file.time_underway(True)
        file.save()
        timed: list[tuple[str, int | None, Any]] = [(k.name, None, k.session) for k in self.kept]
        timed += [(k.name, count, session) for k in self.kept for count, session in k.others]
        entries = [Timed(session=k.session, role=self._role(k.name)) for k in self.kept]
        entries += [Timed(session=s, follows=i) for i, k in enumerate(self.kept) for _, s in k.others]
        latencies = time_variants(entries, self.feeds, timing)
        by_name: dict[str, Latency] = {}
        at_counts: dict[str, dict[int, float]] = {}
        for (name, count, _), latency in zip(timed, latencies, strict=True):
            at = "" if count is None else f" at {count} threads"
            if isinstance(latency, Exception):
                # One variant's runtime error while timing costs its latency, not the others' nor its accuracy.
                file.warn(f"{name} could not be timed{at}: {error_text(latency)}")
            elif count is None:
                by_name[name] = latency
            else:
                at_counts.setdefault(name, {})[count] = latency.p50
        self.kept = []
        file.time_underway(False)
        cores = thread_counts.cores()
        variants = tuple(
            self._put(v, by_name.get(v.name), at_counts.get(v.name, {}), cores) for v in file.result.variants
        )
        if any(v.profile is not None and v.profile.threads for v in variants):
            for warning in thread_counts.oversubscribed(self.counts, cores):
                file.warn(warning)
        file.save(variants=variants)

    def _role(self, name: str) -> Role:
        """What adaptive timing does with the variant: its accuracy is known by now (docs/contracts.md section 2)."""
        if name in BASELINES:
            return "baseline"
        variant = next((v for v in self.file.result.variants if v.name == name), None)
        return "drifted" if variant is not None and not variant.passes else "candidate"

    def _others(self, name: str, size: int | None, opener: Callable[[int], Any] | None) -> tuple[tuple[int, Any], ...]:
        """The variant's sessions at the profile's other thread counts, within the memory budget."""
        opened: list[tuple[int, Any]] = []
        if opener is None:
            return ()
        for count in thread_counts.others(self.counts, self.threads):
            # A budget of their own, so that profile-only sessions never push a later variant's own session out of
            # the alternating rounds; and a cap on their threads, which count against the container's pids limit.
            if self.extra_bytes + (size or 0) > EXTRA_SESSIONS_BYTES or self.extra_threads + count > EXTRA_THREADS:
                self.file.warn(NO_THREAD_COUNTS.format(name=name))
                break
            try:
                opened.append((count, opener(count)))
            except Exception as exc:  # that count's p50 is lost, nothing else
                self.file.warn(f"{name} could not be opened at {count} threads: {error_text(exc)}")
                continue
            self.extra_bytes += size or 0
            self.extra_threads += count
        return tuple(opened)

    def _put(self, variant: Variant, latency: Latency | None, at_counts: Mapping[int, float], cores: int) -> Variant:
        """``variant`` with its latency and, when it has a profile, its p50 at each of the profile's counts."""
        if latency is None:
            return variant
        variant = replace(variant, latency_ms=latency, timing=timing_label(self.target, latency))
        if variant.profile is None or not self.counts:
            return variant
        p50s = thread_counts.latencies(
            self.counts, threads=self.threads, own_p50=latency.p50, other_p50=at_counts, cores=cores
        )
        return replace(variant, profile=replace(variant.profile, threads=p50s))
