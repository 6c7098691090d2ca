"""What the profile server's fresh child does for one variant: read its resident memory, create the session exactly
as the evaluate stage does, run it once, read the high-water mark; and under emulation, the guest's malloc heap.

The child was forked from a server that only imported numpy, onnxruntime and the job (no session, no dataset), so its
resident memory at start is that of a fresh process after its imports; every byte above it is the variant's.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from farm.job.session import open_session
from farm.job.spec import Level, SpecTarget

# mallopt(3)'s parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """One variant to profile, as the evaluate stage opens it (path, session config entries, optimization level,
    intra-op threads) and the first sample's feed (None: the feed the server was sent before, so that later requests
    are small enough to wait in the pipe while the server works)."""

    path: str
    config: Mapping[str, str]
    level: Level
    threads: int
    feed: Mapping[str, np.ndarray] | None
    # time.monotonic() (one clock for every process of the container) past which the profile is not waited for.
    deadline: float | None = None


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def status_kib(field: str) -> int:
    """A /proc/self/status figure in KiB (VmRSS: resident now; VmHWM: the most resident since the fork)."""
    with open("/proc/self/status", encoding="ascii") as stream:
        for line in stream:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def keep_heap_peak() -> None:
    """Make the malloc heap's size its own high-water mark (glibc; the images are Debian bookworm, glibc 2.36).

    With no mmapped chunks (M_MMAP_MAX 0) every allocation, however large, comes from an arena; with trimming off
    (M_TRIM_THRESHOLD -1) freed memory stays in the arena; with one arena (M_ARENA_MAX 1) the worker threads' own
    arenas, which glibc may unmap whole, never exist. So mallinfo2's ``arena`` (the bytes obtained from the system
    over all arenas) only grows, and its growth is the peak of what the heap held at once (free lists included).
    tests/unit/test_job_profile.py shows a large numpy array allocated and freed still counted.
    """
    libc = ctypes.CDLL(None)
    for parameter, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1), (M_ARENA_MAX, 1)):
        if libc.mallopt(parameter, value) != 1:
            raise RuntimeError(f"mallopt({parameter}, {value}) failed")


def heap_bytes() -> int:
    """The malloc heap's size: arena bytes plus mmapped chunks (none are made after keep_heap_peak; those made
    before it stay in the count, so the growth is the same). Raises AttributeError without mallinfo2 (glibc < 2.33)."""
    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    return int(info.arena + info.hblkhd)


def measure(request: Request, target: SpecTarget) -> dict[str, Any]:
    """The child's figures for ``request`` (farm.job.profile.answer reads them)."""
    if target.emulated:
        keep_heap_peak()
    figures: dict[str, Any] = {"rss_start_kib": status_kib("VmRSS")}
    if target.emulated:
        figures["heap_start"] = heap_bytes()
    start = time.perf_counter()
    session = open_session(
        Path(request.path), target=target, threads=request.threads, config=request.config, level=request.level
    )
    created = time.perf_counter()
    session.run(None, dict(request.feed or {}))
    ran = time.perf_counter()
    figures["hwm_kib"] = status_kib("VmHWM")
    if target.emulated:
        figures["heap_end"] = heap_bytes()
    else:
        figures["create_ms"] = (created - start) * 1000.0
        figures["first_run_ms"] = (ran - created) * 1000.0
    return figures
