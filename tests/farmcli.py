"""farm's command line as a user runs it: a subprocess of `python -m farm` from the checkout, and the one-line error
check that unit and integration tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, outside_turn


def farm(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    with outside_turn():
        return subprocess.run(
            [sys.executable, "-m", "farm", *args],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **(env or {})},
            cwd=cwd or ROOT,
        )


def assert_one_clean_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]
