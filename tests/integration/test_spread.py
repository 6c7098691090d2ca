"""Issue 21's "every core where nothing is timed" on the real engine: arm64 (emulated under QEMU) shares its variants
among worker processes forked inside the QEMU process, and the report holds every variant, in the order of one
process, with the accuracy that one process measures (FARM_JOB_WORKERS=1 runs them one after another).

The matrix runs as a user's does, so where the counting QEMU is built the workers' variants are counted afterwards
in the job's own process; the estimates are compared here only for being there, since each is its own session's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from farm.controller.fleet import BuildResults
from farm.job.capacity import WORKERS_ENV
from tests.integration.farmrun import farm_matrix, read_report, target
from tests.modelgen import make_cnn

# Beside other tests (tests/conftest.py): emulated, so untimed; it compares accuracy only.
pytestmark = [pytest.mark.docker, pytest.mark.emulation, pytest.mark.concurrent]


def arm64(tmp_path: Path, out: str, monkeypatch: pytest.MonkeyPatch, workers: str | None) -> dict[str, Any]:
    if workers is None:
        monkeypatch.delenv(WORKERS_ENV, raising=False)
    else:
        monkeypatch.setenv(WORKERS_ENV, workers)
    done = farm_matrix(
        str(tmp_path / "cnn.onnx"), "--data", str(tmp_path / "cnn.npz"), "--min-top1", "0", "-t", "arm64",
        out=tmp_path / out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return target(read_report(tmp_path / out), "arm64")


def test_arm64_in_workers_reports_every_variant_in_order_as_one_process_does(
    built: BuildResults, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_cnn(tmp_path / "cnn.onnx", samples=4, size=32)
    np.savez(tmp_path / "cnn.npz", **data.inputs)  # type: ignore[arg-type]
    spread = arm64(tmp_path, "spread", monkeypatch, None)
    serial = arm64(tmp_path, "serial", monkeypatch, "1")
    assert spread["status"] == serial["status"] == "ok"
    names = [v["name"] for v in serial["variants"]]
    assert [v["name"] for v in spread["variants"]] == names
    assert names[:2] == ["fp32", "optimized"] and len(names) == 9
    for ran, alone in zip(spread["variants"], serial["variants"], strict=True):
        assert ran["status"] == alone["status"] == "ok", (ran["name"], ran["error"], alone["error"])
        assert ran["accuracy"] == alone["accuracy"], ran["name"]
        assert (ran["size_bytes"], ran["quantization"]) == (alone["size_bytes"], alone["quantization"])
        # The job asked for every profile itself, and counted every variant where it counts.
        assert ran["profile"] is not None and ran["profile"]["memory"] == "guest-heap"
        assert ran["timing"] == alone["timing"]
    assert spread["recommended"] == serial["recommended"]
