"""Running a session over the samples, and timing sessions against each other in alternating rounds.

The one place the job times a model: evaluate times its variants together with ``time_variants`` (fixed or adaptive,
as the spec's ``timing.mode`` says), and the tune search times each trial against fp32 with ``time_rounds`` (always
fixed). docs/contracts.md section 2 says what the figures mean and states the adaptive rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from farm.job.metrics import latency_from_rounds, round_p50
from farm.job.spec import Timing
from farm.job.types import Latency, StopReason

# What the adaptive rule does with a session: a baseline (fp32, optimized: what every claim is made against) runs
# every round; a candidate stops once no claim against the baselines can hold; one out of tolerance ("drifted")
# makes no claim at all and runs only enough rounds for a p50.
Role = Literal["baseline", "candidate", "drifted"]
OUT_OF_TOLERANCE_ROUNDS = 3
Clock = Callable[[], float]


@dataclass(frozen=True, kw_only=True, slots=True)
class Timed:
    """One session to time and its role; ``follows``: the index of the entry whose rounds it runs in (a variant's
    session at another thread count, which times nothing to claim on and stops when its variant stops)."""

    session: Any
    role: Role = "candidate"
    follows: int | None = None


def run_all(session: Any, feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """Every output of ``session`` for each feed, as numpy arrays."""
    return [[np.asarray(o) for o in session.run(None, feed)] for feed in feeds]


def time_rounds(
    sessions: Sequence[Any],
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    warmup: int,
    iterations: int,
    rounds: int,
    clock: Clock = time.perf_counter,
) -> list[Latency | Exception]:
    """Each session's ``iterations`` single-sample runs after ``warmup``, in ``rounds`` rounds that alternate
    between the sessions: round 1 of each, then round 2 of each, and so on (fixed timing). A session that raises is
    left out of the later rounds, and its entry is the exception."""
    timing = Timing(warmup=warmup, iterations=iterations, rounds=rounds, mode="fixed")
    return time_variants([Timed(session=s) for s in sessions], feeds, timing, clock=clock)


def time_variants(
    entries: Sequence[Timed],
    feeds: Sequence[dict[str, np.ndarray]],
    timing: Timing,
    *,
    clock: Clock = time.perf_counter,
) -> list[Latency | Exception]:
    """Every entry's latency from alternating rounds, by ``timing.mode``: ``fixed``, each round
    ``iterations / rounds`` runs of every session; ``adaptive``, each round bounded by time as well, and a candidate
    or a drifted variant stopped once its rounds can claim nothing more (docs/contracts.md section 2). A session that
    raises is left out of the later rounds, and its entry is the exception."""
    rounds = _Rounds(entries=entries, feeds=feeds, timing=timing, clock=clock)
    rounds.run()
    interleaved = len(entries) > 1
    return [
        rounds.errors[i]
        if i in rounds.errors
        else latency_from_rounds(rounds.timed[i], interleaved=interleaved, stopped=rounds.labelled(i))
        for i in range(len(entries))
    ]


@dataclass(kw_only=True, slots=True)
class _Rounds:
    """The timing phase's state: each entry's run times per round, its error, and why it stopped, if it did."""

    entries: Sequence[Timed]
    feeds: Sequence[dict[str, np.ndarray]]
    timing: Timing
    clock: Clock
    timed: list[list[list[float]]] = field(default_factory=list)
    errors: dict[int, Exception] = field(default_factory=dict)
    # Entry index -> why it stopped before the last round.
    stopped: dict[int, StopReason] = field(default_factory=dict)

    @property
    def adaptive(self) -> bool:
        return self.timing.mode == "adaptive"

    @property
    def per_round(self) -> list[int]:
        """The fixed design's runs in each round: ``iterations`` split into ``rounds`` (the adaptive ceiling)."""
        iterations = self.timing.iterations
        count = max(1, min(self.timing.rounds, iterations))
        return [iterations // count + (1 if r < iterations % count else 0) for r in range(count)]

    def run(self) -> None:
        plan = self.per_round
        self.timed = [[[] for _ in plan] for _ in self.entries]
        for index in range(len(self.entries)):
            self._runs(index, self.timing.warmup, least=1)
        for r, most in enumerate(plan):
            for index in rotated(len(self.entries), r):
                if index not in self.errors and not self._halted(index):
                    self.timed[index][r] = self._runs(index, most, least=self.timing.min_runs)
            if self.adaptive and r + 1 < len(plan):
                self._stop_after(r + 1)

    def labelled(self, index: int) -> StopReason | None:
        """Why the entry's latency has fewer rounds than the others (None: it ran every round, or it follows)."""
        return None if self.entries[index].follows is not None else self.stopped.get(index)

    def _halted(self, index: int) -> bool:
        owner = self.entries[index].follows
        return index in self.stopped or (owner is not None and owner in self.stopped)

    def _runs(self, index: int, most: int, *, least: int) -> list[float]:
        """Up to ``most`` timed runs of one entry, cycling over the feeds; adaptive, also stopping once they took
        ``timing.round_s`` seconds after at least ``least`` runs."""
        times: list[float] = []
        spent = 0.0
        for i in range(most):
            seconds = self._run(index, self.feeds[i % len(self.feeds)])
            if seconds is None:
                break
            times.append(seconds)
            spent += seconds
            if self.adaptive and len(times) >= least and spent >= self.timing.round_s:
                break
        return times

    def _run(self, index: int, feed: dict[str, np.ndarray]) -> float | None:
        try:
            start = self.clock()
            self.entries[index].session.run(None, feed)
            return self.clock() - start
        except Exception as exc:  # the runtime's error for this variant alone
            self.errors[index] = exc
            return None

    def _stop_after(self, done: int) -> None:
        """After round ``done``: stop the drifted variants that have their few rounds, and the candidates that no
        longer can be called faster or slower than any timed baseline."""
        baselines = [
            i for i, e in enumerate(self.entries) if e.role == "baseline" and e.follows is None and i not in self.errors
        ]
        for index, entry in enumerate(self.entries):
            if entry.follows is not None or index in self.stopped or index in self.errors:
                continue
            if entry.role == "drifted" and done >= OUT_OF_TOLERANCE_ROUNDS:
                self.stopped[index] = "out-of-tolerance"
            elif entry.role == "candidate" and baselines and all(self._mixed(index, b, done) for b in baselines):
                self.stopped[index] = "decided"

    def _mixed(self, index: int, baseline: int, done: int) -> bool:
        """Round by round over the first ``done`` rounds, the entry was not faster than the baseline in one and not
        slower in another: farm.job.recommend.faster, which needs every round, can then call neither faster."""
        pairs = [
            (round_p50(mine), round_p50(theirs))
            for mine, theirs in zip(self.timed[index][:done], self.timed[baseline][:done], strict=True)
            if mine and theirs
        ]
        return any(mine >= theirs for mine, theirs in pairs) and any(theirs >= mine for mine, theirs in pairs)


def rotated(count: int, round_index: int) -> list[int]:
    """The order the entries run in a round: each round starts one entry later than the round before, so that no
    session always runs first, right after another session's runs (whatever that leaves in the caches), and a place
    in the order cannot win every round for a session: what "faster" needs (farm.job.recommend.faster)."""
    return [(round_index + i) % count for i in range(count)] if count else []


def speedup(fp32: Latency, variant: Latency) -> float | None:
    """How many times faster than fp32 ``variant`` ran, by p50 (None when it took no time to measure)."""
    return fp32.p50 / variant.p50 if variant.p50 > 0 else None
