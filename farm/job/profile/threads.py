"""The target's ``threads`` list (profile only): a variant's p50 at each count, and which counts oversubscribe the
cores the job's process may use."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from farm.job.report import ThreadLatency

OVERSUBSCRIBED = (
    "threads = {count} is above the {cores} cores this target's process may use: its p50 in the profile is measured "
    "but oversubscribed (the threads take turns on the cores), so it says little about a device with {count} cores"
)


def cores() -> int:
    """The cores the job's process may run on (its affinity, which a container's cpuset limits)."""
    return len(os.sched_getaffinity(0))


def others(counts: Iterable[int], threads: int) -> tuple[int, ...]:
    """The counts of the list that need sessions of their own: every one but ``--threads``, whose p50 is the
    variant's latency."""
    return tuple(count for count in counts if count != threads)


def latencies(
    counts: Iterable[int], *, threads: int, own_p50: float, other_p50: Mapping[int, float], cores: int
) -> tuple[ThreadLatency, ...]:
    """The variant's p50 at each count of the list that was timed (``other_p50`` lacks a count it could not)."""
    timed = {**other_p50, threads: own_p50}
    return tuple(
        ThreadLatency(threads=count, p50_ms=timed[count], oversubscribed=count > cores)
        for count in counts
        if count in timed
    )


def oversubscribed(counts: Iterable[int], cores: int) -> list[str]:
    """The target's warnings for the counts above its cores."""
    return [OVERSUBSCRIBED.format(count=count, cores=cores) for count in counts if count > cores]
