"""tests/fuzzrunner.py, the harness of the fuzzed-model tests: a forked child ends as the console script would, and
the harness tells an exit, a traceback and a hang apart (the functions below stand in for farm where it must fail)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import farm
from tests.conftest import ROOT


def hang() -> None:
    time.sleep(600)


def crash() -> None:
    raise ValueError("a bug")


def exit_with_text() -> None:
    sys.exit("a message")


@pytest.fixture(scope="module")
def runner() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fuzzrunner"], cwd=ROOT, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    yield process
    assert process.stdin is not None
    process.stdin.close()
    assert process.wait(timeout=30) == 0


def run(
    runner: subprocess.Popen[str], out: Path, *argv: str, timeout: float = 30, entry: str | None = None
) -> dict[str, Any]:
    assert runner.stdin is not None and runner.stdout is not None
    request: dict[str, Any] = {"argv": list(argv), "out": str(out), "timeout": timeout}
    if entry is not None:
        request["entry"] = f"tests.unit.test_fuzzrunner:{entry}"
    runner.stdin.write(json.dumps(request) + "\n")
    runner.stdin.flush()
    result: dict[str, Any] = json.loads(runner.stdout.readline())
    result["stdout"] = (out / "stdout").read_text()
    result["stderr"] = (out / "stderr").read_text()
    return result


def test_a_child_runs_farm_cli_main_with_the_arguments(runner: subprocess.Popen[str], tmp_path: Path) -> None:
    result = run(runner, tmp_path / "version", "version")
    assert (result["rc"], result["stdout"], result["timed_out"]) == (0, farm.__version__ + "\n", False)
    missing = tmp_path / "missing.onnx"
    result = run(runner, tmp_path / "inspect", "inspect", str(missing))
    assert result["rc"] == 2 and result["stdout"] == ""
    assert result["stderr"] == f"error: {missing} does not exist; pass the path of an existing .onnx file\n"


def test_an_exception_that_escapes_is_a_traceback_and_exit_1(runner: subprocess.Popen[str], tmp_path: Path) -> None:
    result = run(runner, tmp_path / "crash", entry="crash")
    assert result["rc"] == 1 and "Traceback" in result["stderr"] and "ValueError: a bug" in result["stderr"]
    result = run(runner, tmp_path / "text", entry="exit_with_text")
    assert (result["rc"], result["stderr"]) == (1, "a message\n")


def test_a_hang_is_stopped_and_reported(runner: subprocess.Popen[str], tmp_path: Path) -> None:
    started = time.monotonic()
    result = run(runner, tmp_path / "hang", timeout=0.5, entry="hang")
    assert result["timed_out"] and (result["rc"], result["signal"]) == (None, signal.SIGTERM)
    assert time.monotonic() - started < 10
    assert run(runner, tmp_path / "after", "version")["rc"] == 0  # the runner goes on with the next command
