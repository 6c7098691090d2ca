"""A real-size CNN on emulated arm64: its evaluation finishes within the target's budget, with accuracy and no speed
claim.

It runs beside other tests (scripts/test's second process): QEMU gives no timings, and its budget (targets.toml,
1800 s) is far above the minute it takes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from farm.controller.fleet import BuildResults, Fleet
from tests.integration.farmrun import farm_matrix, read_report, target
from tests.modelgen import make_cnn

pytestmark = [pytest.mark.docker, pytest.mark.concurrent]


@pytest.mark.emulation
def test_the_emulated_arm64_evaluation_of_a_real_size_cnn_finishes_within_its_budget(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    # About 2 GFLOP (16 ms of fp32 on one core of this kind of host): under QEMU only accuracy is worth the time.
    model = make_cnn(tmp_path / "cnn.onnx", samples=4)
    np.savez(tmp_path / "data.npz", **model.inputs)  # type: ignore[arg-type]
    result = farm_matrix(
        str(model.path), "--data", str(tmp_path / "data.npz"), "--target", "arm64", out=tmp_path / "out"
    )
    assert result.returncode == 0, result.stderr
    entry = target(read_report(tmp_path / "out"), "arm64")
    budget = fleet.config.target("arm64").budget_s
    assert entry["status"] == "ok" and entry["duration_s"] < budget, entry
    assert entry["variants"] and all(v["accuracy"] is not None for v in entry["variants"]), entry["variants"]
    assert all(v["timing"] == "none" for v in entry["variants"])  # not timed under QEMU
    # QEMU gives accuracy, not speed: the baseline, and no speed claim.
    assert entry["speed_evidence"] == "none" and entry["recommended"] in ("fp32", "optimized"), entry
    assert entry["recommendation_reason"].startswith("speed unknown on arm64"), entry["recommendation_reason"]
