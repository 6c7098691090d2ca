"""Two farm processes on one host share caches: the lock that lets the second wait for the first's work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from farm.host.files import exclusive, lock_path

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from farm.host.files import exclusive
    with exclusive(Path(sys.argv[1]), waiting="testing"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def hold(lock: Path, seconds: float) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_a_second_holder_waits_for_the_first_and_says_why(tmp_path: Path) -> None:
    lock = lock_path(tmp_path, "wheelhouse", "linux/amd64 x")
    assert lock.parent == tmp_path / "locks" and "/" not in lock.name.removeprefix("wheelhouse-")
    holder = hold(lock, 1.5)
    said: list[str] = []
    started = time.monotonic()
    with exclusive(lock, waiting="downloading the wheels", on_wait=said.append):
        waited = time.monotonic() - started
    holder.wait(timeout=10)
    assert waited > 0.8, waited
    assert said == ["waiting for another farm process that is downloading the wheels"]


def test_an_uncontended_lock_says_nothing(tmp_path: Path) -> None:
    said: list[str] = []
    with exclusive(tmp_path / "x.lock", waiting="x", on_wait=said.append):
        pass
    assert said == []


def test_a_holder_killed_with_sigkill_releases_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    holder = hold(lock, 600)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    done = threading.Event()

    def take() -> None:
        with exclusive(lock, waiting="x"):
            done.set()

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    assert done.wait(timeout=10), "the lock of a killed process was never released"
