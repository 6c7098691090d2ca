"""What every process the job forks (never execs) shares: it dies with its parent, offers itself to the OOM killer
before the job does, and is reaped with its death said in words. Used by the profile server (farm.job.profile.server)
and the worker pool (farm.job.pool).

Fork, never exec: the job's process is the target's (under a masked tier it carries the mask library and cpuid
faulting; under emulation it is the QEMU user-mode process the backend's entrypoint started), and an exec of the
interpreter would escape both through the host's binfmt: another QEMU, another CPU model.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time

PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> None:
    """Be killed when ``parent`` ends (SIGTERM, a crash, SIGKILL): no forked process outlives the job."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the line above
        os._exit(1)


def offer_to_oom_killer(score: int) -> None:
    """Be killed before the job (whose score is 0) when the container runs out of memory: a forked process's loss
    costs what it was doing, the job's the target. ``score``: oom_score_adj, up to 1000 (killed first)."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w", encoding="ascii") as stream:
        stream.write(str(score))


def reap(pid: int, wait_s: float) -> int:
    """Wait for ``pid`` (killing it after ``wait_s``); its wait status, or -1 when it was not ours to wait for."""
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return -1


def death(status: int, what: str) -> str:
    """How ``what`` (e.g. "the profile process") ended before it answered, from its wait status."""
    if status >= 0 and os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGKILL:
            return f"{what} was killed (SIGKILL) before it answered: most likely the target's memory limit"
        try:
            name = f" ({signal.Signals(number).name})"
        except ValueError:
            name = ""
        return f"{what} died of signal {number}{name} before it answered"
    code = os.waitstatus_to_exitcode(status) if status >= 0 else "?"
    return f"{what} exited ({code}) before it answered"
