"""The host's turns: a job whose figures are timings on this machine runs with the machine to itself.

One farm run never times a target while it does other work (it runs its jobs one after another). Two farm runs on
one machine (two CI jobs on one runner, a nightly report beside a pull request's gate, the test suite's two
processes) would: one's emulated target or quantization would run on the cores while the other's timing loop ran,
and the timings would measure the neighbour. So every farm process takes a turn for each job: alone for a job that
times on this host, shared for any other, and a timed job that waits is not overtaken by work that asks after it.

The turns are two flock files in one folder per user (FARM_HOST_TURNS names another, or ``off``: the caller holds
the host itself, e.g. a test harness that runs farm inside its own turn). The kernel releases an flock when its
process dies, even by SIGKILL, so a killed run never blocks the next. A turn taken while this process already holds
one would wait for itself, so jobs that take turns never nest.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

TURNS_ENV = "FARM_HOST_TURNS"
OFF = "off"
# "gate" makes the readers-writer lock "turn" fair: whoever waits for it holds the gate, so a turn asked for later
# (shared or not) waits behind it.
GATE, TURN = "gate", "turn"
# A log of the turns taken, one JSON line each (start, end, shared, who), written only where the file exists: the
# test suite creates it and checks that no turn taken alone overlapped another.
LOG = "turns"


def folder() -> Path | None:
    """Where this process takes its turns; None when FARM_HOST_TURNS is ``off``."""
    given = os.environ.get(TURNS_ENV, "")
    if given == OFF:
        return None
    return Path(given) if given else Path(tempfile.gettempdir()) / f"farm-turns-{os.getuid()}"


@contextlib.contextmanager
def turn(
    who: str, *, alone: bool, on_wait: Callable[[str], None] | None = None, place: Path | None = None
) -> Iterator[None]:
    """Hold this host's turn for the block: ``alone`` excludes every other turn, else it is shared with other shared
    ones. ``on_wait`` hears one line when the turn is not free at once. ``place``: the folder of the turns, where
    not FARM_HOST_TURNS's (``folder``)."""
    where = place if place is not None else folder()
    if where is None:
        yield
        return
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        gate = held.enter_context(open(where / GATE, "a"))
        lock = held.enter_context(open(where / TURN, "a"))
        waited = _take(gate, fcntl.LOCK_EX, on_wait, alone)
        _take(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH, None if waited else on_wait, alone)
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
        held.callback(record, where / LOG, who, not alone, time.monotonic())
        yield


def asked_for(place: Path | None = None) -> bool:
    """Whether a turn waits at the gate now (in practice a timed job: a shared one holds the gate only for the moment it
    takes its turn). Work that holds a shared turn for long can give it up at a point of its choosing and take it
    again behind the waiting one, so that a timed job does not idle until that work ends (tests/conftest.py)."""
    where = place if place is not None else folder()
    if where is None or not (where / GATE).exists():
        return False
    with open(where / GATE, "a") as gate:
        try:
            fcntl.flock(gate, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(gate, fcntl.LOCK_UN)
    return False


def _take(file: IO[str], how: int, on_wait: Callable[[str], None] | None, alone: bool) -> bool:
    """Lock ``file``; whether it had to wait (``on_wait`` heard why, once for the turn)."""
    try:
        fcntl.flock(file, how | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        if on_wait is not None:
            on_wait(
                "waiting for this host: another farm run is timing a target here"
                if not alone
                else "waiting for this host to itself: another farm run is working here, and this job times"
            )
        fcntl.flock(file, how)
        return True


def record(log: Path, who: str, shared: bool, began: float) -> None:
    """One line per turn, written while it is still held, where the log exists (CLOCK_MONOTONIC is the machine's,
    the same in every process)."""
    if not log.exists():
        return
    with log.open("a") as stream:  # one short append per line: lines of several processes never interleave
        stream.write(json.dumps([began, time.monotonic(), shared, who]) + "\n")
