"""Counting a session's instructions: the marks the counting QEMU's plugin watches, and the counts it writes.

One process runs every variant, so the plugin counts only between a begin and an end mark: a system call number
that neither x86_64 nor aarch64 Linux defines (QEMU answers ENOSYS and the plugin sees the call). At the end mark
the plugin appends ``{"id": N, "counts": {class: n}, "total": n}`` to COUNTS_FILE in the job's output folder and
flushes it, so the job reads its line as soon as the call returns.
"""

from __future__ import annotations

import ctypes
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

# 0x4641, "FA": unused on x86_64 and aarch64 (farm/host/native/insncount.c watches the same number).
MARK_SYSCALL = 17985
BEGIN, END = 1, 2
# In the job's output folder; the controller gives the plugin the same path (out=/farm/out/counts.jsonl).
COUNTS_FILE = "counts.jsonl"


class NotCounting(RuntimeError):
    """The end mark left no counts: the job does not run under farm's counting QEMU."""


@dataclass(frozen=True, kw_only=True, slots=True)
class MarkedRun:
    """One marked run: the plugin's instructions by class, and the run's wall time under QEMU (a naive predictor
    scripts/bench-estimate compares the estimate with)."""

    counts: Mapping[str, int]
    wall_s: float


class Marks:
    """Marked runs in one process; ids count up so each end finds its own line."""

    # Bytes of the counts file already read.
    _seen = 0

    def __init__(self, out: Path) -> None:
        self.path = out / COUNTS_FILE
        self.next_id = 1
        self._syscall = ctypes.CDLL(None, use_errno=True).syscall
        self._syscall.restype = ctypes.c_long
        self._syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_long]

    def count(self, run: Callable[[], object]) -> MarkedRun:
        """``run()`` once between marks; raises NotCounting when no plugin answered."""
        mark = self.next_id
        self.next_id += 1
        self._syscall(MARK_SYSCALL, BEGIN, mark)
        start = time.perf_counter()
        try:
            run()
        finally:
            wall = time.perf_counter() - start
            self._syscall(MARK_SYSCALL, END, mark)
        return MarkedRun(counts=self._line(mark), wall_s=wall)

    def _line(self, mark: int) -> dict[str, int]:
        # Only what the plugin appended since the last mark: the file grows by a line per mark, every variant's.
        try:
            with self.path.open("rb") as f:
                f.seek(self._seen)
                tail = f.read()
        except FileNotFoundError:
            tail = b""
        self._seen += len(tail)
        for line in reversed(tail.decode().splitlines()):
            entry = json.loads(line)
            if entry.get("id") == mark:
                return {str(k): int(v) for k, v in entry["counts"].items()}
        raise NotCounting(
            f"the counting plugin wrote no counts for mark {mark} to {self.path}: this job does not run under "
            "farm's counting QEMU"
        )
