"""`farm matrix --variant` on the real engine: only the named variants are quantized and evaluated, fp32 always.

The timed default target (native or masked here) evaluates fp32 and u8s8-qdq alone: no `optimized`, no other int8
variant. On a tier without VNNI the job also runs the named variant again with its runtime mitigation
(docs/contracts.md section 1, `mitigations`), which comes with its candidate; the expectation derives that from the
tier's features, as the controller does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.controller.fleet import Fleet
from farm.controller.jobs import VNNI_FLAGS
from farm.job.variants import MITIGATION_SUFFIX
from farm.models import default_model
from farm.report.schema import validate
from tests.integration.farmrun import farm_matrix, native_target, read_report, target

# Its farm commands take this host's turns (tests/conftest.py): each job that times has the host to itself.
pytestmark = [pytest.mark.docker, pytest.mark.farm_turns]


def test_variant_evaluates_only_the_named_variant_beside_fp32(fleet: Fleet, tmp_path: Path) -> None:
    name = native_target(fleet)
    tier = fleet.config.target(name)
    has_vnni = bool(VNNI_FLAGS & set(tier.cpu_features or fleet.host.cpu_flags))
    out = tmp_path / "report"
    result = farm_matrix(
        str(default_model().model), "--target", name, "--variant", "u8s8-qdq", "--iterations", "20", out=out
    )
    assert result.returncode == 0, result.stderr
    report = read_report(out)
    validate(report)
    entry = target(report, name)
    assert entry["status"] == "ok", entry
    expected = {"fp32", "u8s8-qdq"} | (set() if has_vnni else {"u8s8-qdq" + MITIGATION_SUFFIX})
    assert {v["name"] for v in entry["variants"]} == expected
    assert all(v["status"] == "ok" for v in entry["variants"]), entry["variants"]
    assert report["run"]["settings"]["variants"] == ["fp32", "u8s8-qdq"]
    assert entry["recommended"] in expected
