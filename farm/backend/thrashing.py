"""Telling a container that thrashes at its memory limit from one that merely works.

A job over its memory limit is seldom killed by the kernel: while any page of its cgroup can be reclaimed, the
kernel drops the pages of the job's own code (onnxruntime's library, Python's modules) and reads them back from disk
at the next instruction, so the job runs on at a few thousand major page faults a second and makes no progress.
Measured here (cgroup v1, fuse-overlayfs): `import onnxruntime` under a 32 MiB limit stayed at its limit, faulting
4,000-5,000 pages a second, for as long as it was let run (over 100 s), never OOM-killed; farm's job under 48 MiB did
the same for 12 s before the kernel killed it here, and past its 60 s budget on another machine. Reported as a
timeout, that sends the user to the budget instead of to the memory limit.

So farm watches: a container whose every sample over WINDOW_S sits at its limit while its major faults climb at
FAULTS_PER_S or more has run out of memory, and is stopped and reported as such (systemd-oomd's rule, on the
counters the Docker engine gives on both cgroup versions).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

# How long a container must stay at its limit and keep faulting before it counts as thrashing: longer than a job's
# burst of first reads as it loads its libraries and model, short against any budget.
WINDOW_S = 10.0
# Major faults (pages read back from disk) a second. A job that fits faults a few hundred pages in all as it starts;
# one that thrashes, thousands a second (see above).
FAULTS_PER_S = 500.0
# "At its limit": the usage the engine reports, page cache included, within this fraction of the limit.
AT_LIMIT = 0.95


@dataclass(frozen=True, kw_only=True)
class Sample:
    at_s: float
    usage_bytes: int
    limit_bytes: int
    major_faults: int

    @property
    def at_limit(self) -> bool:
        return self.limit_bytes > 0 and self.usage_bytes >= AT_LIMIT * self.limit_bytes


def sample_of(stats: dict[str, Any], at_s: float) -> Sample | None:
    """One reading of the Docker engine's stats (its `memory_stats`), or None when it has none (the container
    ended, or the engine does not account memory)."""
    memory = stats.get("memory_stats") or {}
    counters = memory.get("stats") or {}
    if "usage" not in memory or "limit" not in memory or "pgmajfault" not in counters:
        return None
    return Sample(
        at_s=at_s,
        usage_bytes=int(memory["usage"]),
        limit_bytes=int(memory["limit"]),
        major_faults=int(counters["pgmajfault"]),
    )


class ThrashWatch:
    """Fed one sample at a time; says, once the rule holds, how the container thrashed."""

    def __init__(self) -> None:
        self._samples: deque[Sample] = deque()

    def feed(self, sample: Sample) -> str | None:
        if not sample.at_limit:
            self._samples.clear()  # a sample under the limit: the job made room, so the window starts again
            return None
        self._samples.append(sample)
        while len(self._samples) >= 2 and sample.at_s - self._samples[1].at_s >= WINDOW_S:
            self._samples.popleft()
        first = self._samples[0]
        span = sample.at_s - first.at_s
        if span < WINDOW_S:
            return None
        rate = (sample.major_faults - first.major_faults) / span
        if rate < FAULTS_PER_S:
            return None
        return (
            f"it thrashed at its memory limit of {_mib(sample.limit_bytes)}: for {span:.0f} s it stayed there, "
            f"reading {rate:,.0f} pages a second back from disk, and was stopped"
        )


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"
