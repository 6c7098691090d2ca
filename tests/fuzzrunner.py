"""Runs many farm command lines fast: one process imports farm once, then forks a child per command line.

The console script spends about 1.5 s importing farm, onnx, numpy and the Docker SDK before it reads its first
argument; hundreds of fuzzed models would spend minutes on that alone. A forked child starts with all of it loaded
and calls ``farm.cli.main()``, the function the ``farm`` console script calls, with ``sys.argv`` set, so it behaves
as the command would: the same argument parsing, error handling and exit codes.

Protocol (``python -m tests.fuzzrunner``): one JSON object per line on stdin,
``{"argv": [...], "out": DIR, "timeout": SECONDS}`` (and ``"entry": "module:function"`` to call another function than
``farm.cli:main``, which the runner's own tests use); for each, one JSON line on stdout,
``{"rc": CODE, "signal": N or null, "timed_out": BOOL, "seconds": S}``, after the child's stdout and stderr are in
``DIR/stdout`` and ``DIR/stderr``. A child past its timeout gets SIGTERM (farm removes its containers on it), then
SIGKILL after ``GRACE_S``; ``timed_out`` is then true.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# numpy's BLAS starts its threads at import; a forked child inherits none of them, so keep it at one.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

# What the commands import lazily is imported here, once, so that every child starts with it.
import farm.cli
import farm.controller.inspection
import farm.controller.matrix
import farm.inputs.data
import farm.model.inspect
import farm.model.rewrite

PRELOADED = (
    farm.cli,
    farm.inputs.data,
    farm.model.inspect,
    farm.controller.inspection,
    farm.controller.matrix,
    farm.model.rewrite,
)
FARM_MAIN = "farm.cli:main"  # what the console script `farm` calls
GRACE_S = 15.0
_POLL_S = 0.02


def _entry(name: str) -> Callable[[], object]:
    module, _, function = name.partition(":")
    entry: Callable[[], object] = getattr(importlib.import_module(module), function)
    return entry


def _child(argv: list[str], out: Path, entry: str) -> None:
    """Never returns: runs the command and exits with its code, as the console script would."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group, so a hang is ended with everything it started
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            target = os.open(out / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        sys.argv = ["farm", *argv]
        _entry(entry)()
        code = 0
    except SystemExit as exc:
        code = _exit_status(exc.code)
    except BaseException:
        # Whatever escapes main() is what the console script would print as a traceback.
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            # A closed or broken stream must not stop the child from exiting.
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _exit_status(code: object) -> int:
    """What the interpreter would exit with for ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def run_one(argv: list[str], out: Path, timeout: float, entry: str = FARM_MAIN) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(argv, out, entry)
    timed_out = False
    status = _wait(pid, started + timeout)
    if status is None:
        timed_out = True
        status = _stop(pid)
    seconds = round(time.monotonic() - started, 3)
    if os.WIFSIGNALED(status):
        return {"rc": None, "signal": os.WTERMSIG(status), "timed_out": timed_out, "seconds": seconds}
    return {"rc": os.WEXITSTATUS(status), "signal": None, "timed_out": timed_out, "seconds": seconds}


def _wait(pid: int, deadline: float) -> int | None:
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(_POLL_S)


def _stop(pid: int) -> int:
    """SIGTERM to the child's group (farm cleans up on it), then SIGKILL when it does not end in GRACE_S."""
    for sig, wait_s in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 60.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        status = _wait(pid, time.monotonic() + wait_s)
        if status is not None:
            return status
    raise RuntimeError(f"child {pid} survived SIGKILL")


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        result = run_one(
            list(request["argv"]), Path(request["out"]), float(request["timeout"]), request.get("entry", FARM_MAIN)
        )
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
