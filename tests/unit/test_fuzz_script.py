"""scripts/fuzz: the atheris fuzzer of farm's model reading runs, seeded from the fixed corpus, and finds no crash in
a bounded run (longer runs are for people: scripts/fuzz -max_total_time=3600)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import ROOT

RUNS = 500


def fuzz(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "fuzz"), f"-artifact_prefix={tmp_path}/", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )


def test_a_bounded_fuzz_run_finds_no_crash(tmp_path: Path) -> None:
    result = fuzz(tmp_path, f"-runs={RUNS}", "-seed=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Done {RUNS} runs" in result.stderr
    # Seeded from tests/fuzzmodels.py's corpus, every case of which ran before the mutations began.
    assert "files found" in result.stderr and "INITED" in result.stderr
    assert not list(tmp_path.glob("crash-*"))
