"""Issue 21, item 1 on the real engine: `farm matrix --timing adaptive` against `--timing fixed` on a generated CNN on
the native target. Both reports say their mode; every variant has a latency; fp32 runs every round; the decisions do
not change: the same recommendation, or the fixed run itself called the two within noise (docs/contracts.md
section 2, "Adaptive timing")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from farm.controller.fleet import BuildResults, Fleet
from farm.controller.jobs import TIMING_ROUNDS
from farm.job.codec import decode
from farm.job.recommend import faster
from farm.job.timing import OUT_OF_TOLERANCE_ROUNDS
from farm.job.types import Latency
from farm.report.schema import validate
from tests.integration.farmrun import farm_matrix, native_target, read_report, target, variant, with_candidates
from tests.modelgen import make_cnn

# Its farm commands take this host's turns (tests/conftest.py): each job that times has the host to itself.
pytestmark = [pytest.mark.docker, pytest.mark.farm_turns]


def latency(entry: dict[str, Any], name: str) -> Latency:
    return decode(Latency, variant(entry, name)["latency_ms"])


@pytest.fixture(scope="module")
def reports(fleet: Fleet, built: BuildResults, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The same model and data on the native target, timed each way."""
    folder = tmp_path_factory.mktemp("timing")
    # Small enough for a quick test, with every variant (int8 ones quantize Conv, where their speed differs).
    cnn = make_cnn(folder / "cnn.onnx", samples=4, size=96)
    np.savez(folder / "data.npz", **cnn.inputs)  # type: ignore[arg-type]
    found = {}
    for mode in ("adaptive", "fixed"):
        out = folder / mode
        # Random logits are near-tied, so top-1 flips on noise: cosine alone makes the verdict.
        args = [str(cnn.path), "--data", str(folder / "data.npz"), "--min-top1", "0", "--no-profile"]
        result = farm_matrix(*args, "--target", native_target(fleet), "--timing", mode, out=out)
        assert result.returncode == 0, result.stderr
        found[mode] = read_report(out)
        validate(found[mode])
    return found


def test_each_report_says_its_timing_and_every_variant_is_timed(
    fleet: Fleet, reports: dict[str, dict[str, Any]]
) -> None:
    name = native_target(fleet)
    for mode, report in reports.items():
        assert report["run"]["settings"]["timing_mode"] == mode
        entry = target(report, name)
        assert entry["status"] == "ok", entry
        ran = [v for v in entry["variants"] if v["status"] == "ok"]
        assert len(ran) > 2, entry["variants"]
        assert all(v["latency_ms"] is not None for v in ran), [v["name"] for v in ran if v["latency_ms"] is None]
        for baseline in ("fp32", "optimized"):
            assert len(latency(entry, baseline).rounds) >= TIMING_ROUNDS
            assert latency(entry, baseline).stopped is None
        for found in ran:
            timed = decode(Latency, found["latency_ms"])
            if mode == "fixed":
                assert len(timed.rounds) == TIMING_ROUNDS and timed.stopped is None, found
            elif found["within_tolerance"] is False:
                assert (timed.stopped, len(timed.rounds)) == ("out-of-tolerance", OUT_OF_TOLERANCE_ROUNDS), found
            elif timed.stopped is None:
                assert len(timed.rounds) == TIMING_ROUNDS, found
            else:
                assert timed.stopped == "decided" and len(timed.rounds) < TIMING_ROUNDS, found


def test_the_adaptive_recommendation_is_the_fixed_one_or_within_noise_of_it(
    fleet: Fleet, reports: dict[str, dict[str, Any]]
) -> None:
    name = native_target(fleet)
    adaptive, fixed = (target(reports[mode], name) for mode in ("adaptive", "fixed"))
    chosen, before = adaptive["recommended"], fixed["recommended"]
    assert chosen is not None and before is not None
    if chosen != before:
        a, b = latency(fixed, chosen), latency(fixed, before)
        assert not faster(a, b) and not faster(b, a), (
            f"adaptive recommends {chosen}, fixed {before}, which the fixed run called faster beyond noise: "
            f"{fixed['recommendation_reason']}"
        )


# Issue 8, line 8: speed claims inside the noise.


def test_variants_within_noise_are_not_called_fastest(fleet: Fleet, built: BuildResults, tmp_path: Path) -> None:
    # fp32 and optimized of a model that ORT cannot optimize further are the same graph: any difference in their
    # timings is noise, whatever the host.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "relu.onnx"
    )
    with_candidates(tmp_path / "targets.toml", [])
    result = farm_matrix(
        str(tmp_path / "relu.onnx"),
        "--iterations",
        "20",
        "--targets",
        str(tmp_path / "targets.toml"),
        "--target",
        native_target(fleet),
        out=tmp_path / "out",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    report = read_report(tmp_path / "out")
    entry = target(report, native_target(fleet))
    assert [v["name"] for v in entry["variants"]] == ["fp32", "optimized"]
    for found in entry["variants"]:
        latency = found["latency_ms"]
        assert len(latency["rounds"]) == TIMING_ROUNDS and latency["interleaved"] is True
    reason = entry["recommendation_reason"]
    assert "within noise" in reason and "fastest" not in reason and "faster beyond noise" not in reason, reason
