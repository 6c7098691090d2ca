"""Issue 21, "no work done twice", on the real engine: a second `farm matrix` of the same model and data runs no
prepare job, says so in its log and report, and gives the same figures; other data, another calibration or a target
of another runtime quantize again. The module's runs share an artifact cache of their own (not the session's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from farm.backend.engine import STAGE_LABEL, Engine
from farm.controller.fleet import BuildResults, Fleet, build_images
from farm.controller.progress import QuietReporter
from farm.report.schema import validate
from tests.conftest import missing
from tests.integration.conftest import watched_containers
from tests.integration.farmrun import farm_matrix, native_target, read_report, target
from tests.modelgen import ModelData, make_mlp_classifier

# Beside other tests (tests/conftest.py): what it compares leaves latencies out (SAME), and its cache is its own.
pytestmark = [pytest.mark.docker, pytest.mark.concurrent]

# Figures that do not depend on when the variant ran (its latency does).
SAME = ("name", "status", "error", "size_bytes", "accuracy", "within_tolerance", "quantization")


class Runs:
    """The module's model, data and artifact cache, and a matrix of them on one target."""

    def __init__(self, folder: Path, fleet: Fleet) -> None:
        self.folder, self.fleet = folder, fleet
        self.cache = folder / "cache"
        self.model: ModelData = make_mlp_classifier(folder / "mlp.onnx", samples=16)
        self.data, self.labels = self.model.save(folder / "data")
        self.count = 0

    def matrix(self, *args: str, data: Path | None = None, name: str | None = None) -> tuple[dict[str, Any], str]:
        self.count += 1
        out = self.folder / f"run-{self.count}"
        given = ("--data", str(data or self.data), "--labels", str(self.labels))
        chosen = name or native_target(self.fleet)
        result = farm_matrix(
            str(self.model.path),
            *given,
            "--target",
            chosen,
            "--iterations",
            "20",
            "--no-profile",
            *args,
            out=out,
            env={"FARM_ARTIFACT_CACHE_DIR": str(self.cache)},
        )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        report = read_report(out)
        validate(report)
        assert target(report, chosen)["status"] == "ok", target(report, chosen)
        return report, result.stderr


@pytest.fixture(scope="module")
def runs(fleet: Fleet, built: BuildResults, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    yield Runs(tmp_path_factory.mktemp("artifact-cache"), fleet)


@pytest.fixture(scope="module")
def first(runs: Runs) -> tuple[dict[str, Any], str]:
    """The first matrix of the module's model and data: it makes the artifacts and keeps them."""
    return runs.matrix()


def stage(report: dict[str, Any]) -> dict[str, Any]:
    (only,) = report["run"]["prepare"]
    found: dict[str, Any] = only
    return found


def figures(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [{key: v.get(key) for key in SAME} for v in target(report, name)["variants"]]


def test_a_second_matrix_quantizes_nothing_says_so_and_gives_the_same_figures(
    runs: Runs, first: tuple[dict[str, Any], str], engine: Engine
) -> None:
    report, log = first
    name = native_target(runs.fleet)
    made = stage(report)
    key = made["key"]
    assert (made["artifacts"], made["maker"], made["targets"], made["cached"]) == ("made", name, [name], True)
    assert f"prepare int8 artifacts in {name}: quantize (key {key[:12]})" in log, log
    assert (runs.cache / key / "entry.json").is_file()

    with watched_containers(engine, own=True) as started:
        again, log = runs.matrix()
    stages = [labels.get(STAGE_LABEL) for labels in started if labels.get("farm.target") == name]
    assert stages == ["evaluate"], started  # no prepare container
    reused = stage(again)
    assert (reused["artifacts"], reused["key"], reused["maker"], reused["cached"]) == ("reused", key, name, True)
    assert f"prepare int8 artifacts in {name}: reused from the artifact cache (key {key[:12]}" in log, log
    assert f"int8 artifacts: reused from the artifact cache (made in {name}) for {name}, key {key[:12]}" in " ".join(
        (runs.folder / f"run-{runs.count}" / "report.md").read_text().split()
    )
    # The same artifacts give the same variants the same figures; prepare's findings come with them.
    assert figures(again, name) == figures(report, name)
    assert any(v["quantization"] for v in target(again, name)["variants"])
    assert again["warnings"] == report["warnings"]


def test_other_data_or_another_calibration_quantizes_again(runs: Runs, first: tuple[dict[str, Any], str]) -> None:
    key = stage(first[0])["key"]
    inputs = {k: v.copy() for k, v in np.load(runs.data).items()}
    inputs["x"][0] *= 1.5  # one sample changed
    other = runs.folder / "other-data.npz"
    np.savez(other, **inputs)
    report, log = runs.matrix(data=other)
    changed = stage(report)
    assert changed["artifacts"] == "made" and changed["key"] != key, changed
    assert "reused from the artifact cache" not in log

    report, _ = runs.matrix("--calibration", "entropy")
    entropy = stage(report)
    assert entropy["artifacts"] == "made" and entropy["key"] not in (key, changed["key"]), entropy
    # Each is kept beside the first: the same calibration again is a hit.
    report, _ = runs.matrix("--calibration", "entropy")
    assert stage(report)["artifacts"] == "reused" and stage(report)["key"] == entropy["key"]


def test_a_target_of_another_runtime_quantizes_with_its_own(
    runs: Runs, first: tuple[dict[str, Any], str], fleet: Fleet
) -> None:
    """x86-ort117 (onnxruntime 1.17) cannot read what 1.31's quantizer writes: its own image makes its artifacts."""
    older = fleet.config.target("x86-ort117")
    if not fleet.placements[older.name].runnable:
        missing(f"target {older.name} cannot run here: {fleet.placements[older.name].reason}")
    build_images(fleet, [older], explicit=True, reporter=QuietReporter())
    report, log = runs.matrix(name=older.name)
    own = stage(report)
    assert own["artifacts"] == "made" and own["maker"] == older.name, own
    assert own["key"] != stage(first[0])["key"] and "onnxruntime==1.17.3" in own["toolchain"], own
    assert "reused from the artifact cache" not in log
    assert target(report, older.name)["runtime"]["onnxruntime"].startswith("1.17")
