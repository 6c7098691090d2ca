"""Running a session over the samples, and timing sessions against each other in alternating rounds.

The one place the job times a model: evaluate times its variants together, and the tune search times each trial
against fp32, both with ``time_rounds`` (docs/contracts.md section 2 says what the figures mean).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from farm.job.metrics import latency_from_rounds
from farm.job.types import Latency


def run_all(session: Any, feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """Every output of ``session`` for each feed, as numpy arrays."""
    return [[np.asarray(o) for o in session.run(None, feed)] for feed in feeds]


def time_rounds(
    sessions: Sequence[Any], feeds: Sequence[dict[str, np.ndarray]], *, warmup: int, iterations: int, rounds: int
) -> list[Latency | Exception]:
    """Each session's ``iterations`` single-sample runs after ``warmup``, in ``rounds`` rounds that alternate
    between the sessions: round 1 of each, then round 2 of each, and so on. A session that raises is left out of
    the later rounds, and its entry is the exception."""
    count = max(1, min(rounds, iterations))
    per_round = [iterations // count + (1 if r < iterations % count else 0) for r in range(count)]
    timed: list[list[list[float]]] = [[[] for _ in range(count)] for _ in sessions]
    errors: dict[int, Exception] = {}

    def run(index: int, feed: dict[str, np.ndarray]) -> float | None:
        try:
            start = time.perf_counter()
            sessions[index].run(None, feed)
            return time.perf_counter() - start
        except Exception as exc:  # the runtime's error for this variant alone
            errors[index] = exc
            return None

    for index in range(len(sessions)):
        for i in range(warmup):
            if index not in errors:
                run(index, feeds[i % len(feeds)])
    for r, runs in enumerate(per_round):
        for index in range(len(sessions)):
            for i in range(runs):
                if index in errors:
                    break
                seconds = run(index, feeds[i % len(feeds)])
                if seconds is not None:
                    timed[index][r].append(seconds)
    interleaved = len(sessions) > 1
    return [
        errors[i] if i in errors else latency_from_rounds(timed[i], interleaved=interleaved)
        for i in range(len(sessions))
    ]


def speedup(fp32: Latency, variant: Latency) -> float | None:
    """How many times faster than fp32 ``variant`` ran, by p50 (None when it took no time to measure)."""
    return fp32.p50 / variant.p50 if variant.p50 > 0 else None
