"""Issue 22 on the real engine: `farm bisect` names the layer where an int8 variant leaves fp32, or one target's
int8 model leaves another's, measured in the targets; its memory stays within the target's limit; bad input is one
line and exit 2.

Two models break in the middle: one in quantization (tests.modelgen.make_broken_middle_cnn: conv2's weights round to
zero in a per-tensor int8 model), the same on every target; one in x86-avx2's kernels
(tests.modelgen.make_midsaturating_cnn), which x86-avx2 runs wherever this host runs it (natively, masked or under
QEMU Haswell). So the expectations hold on every host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from farm.controller.fleet import BuildResults, Fleet
from farm.job.comparison import SQNR_CLIP_DB
from farm.job.divergence import THRESHOLD_DB, tensor_bytes
from farm.report.schema import validate
from tests.farmcli import assert_one_clean_line, farm
from tests.integration.farmrun import farm_matrix, native_target, read_report, target, words, x86_targets
from tests.modelgen import (
    BROKEN_LAYER,
    CANCELLING_NODE,
    MIDDLE_LAYER,
    make_broken_middle_cnn,
    make_cancelling_norm,
    make_midsaturating_cnn,
    make_wide_activation_model,
)

# Beside other tests (tests/conftest.py): bisect times nothing, and its figures are accuracy's.
pytestmark = [pytest.mark.docker, pytest.mark.emulation, pytest.mark.concurrent]

BROKEN = f"conv{BROKEN_LAYER}"
MIDDLE = f"conv{MIDDLE_LAYER}"


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("broken")
    data = make_broken_middle_cnn(folder / "model.onnx", samples=4)
    np.savez(folder / "data.npz", **data.inputs)  # type: ignore[arg-type]
    return data.path, folder / "data.npz"


def bisect(model: Path, data: Path, target: str, variant: str, out: Path, *args: str) -> tuple[str, dict[str, Any]]:
    result = farm(
        "bisect", str(model), "--data", str(data), "--target", target, "--variant", variant, "--json", str(out), *args
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout, json.loads(out.read_text())


def test_bisect_names_the_layer_that_quantization_breaks_and_reproduces_the_variant(
    fleet: Fleet, built: BuildResults, broken: tuple[Path, Path], tmp_path: Path
) -> None:
    name = native_target(fleet)
    text, found = bisect(*broken, name, "u8s8-qdq", tmp_path / "bisect.json")
    assert found["schema"] == "farm.bisect/1" and found["target"] == name and found["status"] == "done", found
    # Marking only quantization points left the int8 model as it runs: the final outputs are the variant's own.
    assert found["reproduced"] is True
    nodes = found["nodes"]
    assert [n["node"] for n in nodes][: BROKEN_LAYER + 1] == [f"conv{i}" for i in range(BROKEN_LAYER + 1)], nodes
    assert all(n["sqnr_db"] >= THRESHOLD_DB for n in nodes[:BROKEN_LAYER]), nodes
    assert found["first"]["node"] == BROKEN and found["worst"][0]["node"] == BROKEN, found
    # The layers after it are far off fp32 in the whole model, yet fine on fp32's inputs: not charged with conv2's.
    after = [n for n in nodes if n["node"].startswith("conv") and int(n["node"][4:]) > BROKEN_LAYER]
    assert after and all(n["sqnr_db"] < THRESHOLD_DB <= n["local_db"] for n in after), after
    assert f"first below {THRESHOLD_DB:g} dB: {BROKEN} (Conv, r{BROKEN_LAYER})" in words(text)


def test_the_layer_that_saturates_on_avx2_is_named_there_and_against_arm64_where_the_variant_holds(
    built: BuildResults, tmp_path: Path
) -> None:
    """The issue's acceptance: x86-avx2's U8S8 kernels saturate in conv2 (VPMADDUBSW), wherever x86-avx2 runs here
    (natively on an AVX2-only CPU, masked, or under QEMU Haswell): bisect names it against fp32 there, and against
    the same int8 model on arm64, whose kernels keep 32-bit sums and hold fp32's figures throughout."""
    data = make_midsaturating_cnn(tmp_path / "model.onnx")
    np.savez(tmp_path / "data.npz", **data.inputs)  # type: ignore[arg-type]
    model, inputs = data.path, tmp_path / "data.npz"
    _, arm64 = bisect(model, inputs, "arm64", "u8s8-qdq", tmp_path / "arm64.json")
    assert arm64["first"] is None and arm64["reproduced"], arm64
    assert arm64["nodes"][-1]["tensor"] == "logits" and arm64["nodes"][-1]["cosine"] >= 0.99, arm64["nodes"]
    _, avx2 = bisect(model, inputs, "x86-avx2", "u8s8-qdq", tmp_path / "avx2.json")
    _, parted = bisect(model, inputs, "x86-avx2", "u8s8-qdq", tmp_path / "against.json", "--against", "arm64")
    assert parted["against"] == "arm64"
    for found in (avx2, parted):
        assert found["status"] == "done" and found["reproduced"], found
        assert found["first"]["node"] == MIDDLE and found["worst"][0]["node"] == MIDDLE, found
        before = [n for n in found["nodes"] if n["node"] in {f"conv{i}" for i in range(MIDDLE_LAYER)}]
        assert len(before) == MIDDLE_LAYER and all(n["sqnr_db"] >= THRESHOLD_DB for n in before), found["nodes"]


def test_bad_bisect_input_is_one_line_and_exit_2(fleet: Fleet, broken: tuple[Path, Path]) -> None:
    model, data = broken
    timed = native_target(fleet)
    unknown = farm("bisect", str(model), "--data", str(data), "--target", timed, "--variant", "u8s8-qdq-xx")
    assert_one_clean_line(unknown, 2, "--variant u8s8-qdq-xx", "u8s8-qdq")
    missing = farm("bisect", str(model), "--target", timed)
    assert_one_clean_line(missing, 2, "--variant, or --against")
    alone = farm("bisect", str(model), "--target", timed, "--variant", "fp32")
    assert_one_clean_line(alone, 2, "--variant fp32 needs --against")
    nowhere = farm("bisect", str(model), "--target", "x86-avx3", "--variant", "u8s8-qdq")
    assert_one_clean_line(nowhere, 2, "x86-avx3")
    itself = farm("bisect", str(model), "--target", timed, "--against", timed, "--variant", "u8s8-qdq")
    assert_one_clean_line(itself, 2, f"--against {timed} is the --target itself")


def test_a_model_too_large_to_mark_at_once_bisects_within_a_256_mb_limit(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    wide = make_wide_activation_model(tmp_path / "wide.onnx")
    np.savez(tmp_path / "wide.npz", **wide.inputs)  # type: ignore[arg-type]
    # Each of its 160 quantization points is a 2 MiB float32 tensor in fp32 and a 512 KiB uint8 one in the int8
    # model: marked at once, one sample's values alone are over the limit.
    sizes = tensor_bytes(onnx.load(str(wide.path)), {"x": wide.inputs["x"][0]})
    at_once = sum(sizes[f"r{index}"] * 5 // 4 for index in range(160))
    assert at_once > 256 << 20, at_once
    # Two bare targets of this CPU with one candidate: one with the default 4 GiB, which quantizes (its calibration
    # holds every tensor of both samples) and marks everything at once, and one with 256 MiB, which reuses those
    # artifacts from farm's artifact cache.
    one = {"candidates": ["u8s8-qdq"]}
    targets = x86_targets(tmp_path / "targets.toml", {"roomy": one, "small": {**one, "memory": "256m"}})
    both = {}
    for name in ("roomy", "small"):
        _, both[name] = bisect(
            wide.path, tmp_path / "wide.npz", name, "u8s8-qdq", tmp_path / f"{name}.json", "--targets", str(targets)
        )
    roomy, small = both["roomy"], both["small"]
    assert roomy["status"] == small["status"] == "done", (roomy.get("error"), small.get("error"))
    # The roomy one marks many points at once (its limit, a quarter of 4 GiB, holds half of them by the chunks' cost),
    # and takes more than 256 MiB doing so.
    assert roomy["chunks"] < small["chunks"] and roomy["marked_bytes"] > 64 << 20, roomy
    # Within a quarter of 256 MiB (the rest is the sessions' and the interpreter's), and the container was not killed.
    assert small["limit_bytes"] == 64 << 20 and small["chunks"] > 4 and small["marked_bytes"] <= 64 << 20, small
    assert small["peak_rss_bytes"] < 256 << 20 < roomy["peak_rss_bytes"], (small, roomy)
    assert small["reproduced"] and roomy["reproduced"]
    assert small["nodes"] == roomy["nodes"]


def test_the_matrix_names_where_the_variants_closest_to_tolerance_drift(
    fleet: Fleet, built: BuildResults, broken: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = broken
    name = native_target(fleet)
    result = farm_matrix(str(model), "--data", str(data), "-t", name, "--no-profile", out=tmp_path / "out")
    assert result.returncode == 0, result.stderr
    report = read_report(tmp_path / "out")
    validate(report)
    entry = target(report, name)
    drifted = [v for v in entry["variants"] if v["status"] == "ok" and v["within_tolerance"] is False]
    assert len(drifted) > 2, [(v["name"], v["within_tolerance"]) for v in entry["variants"]]
    looked = [v for v in drifted if v.get("divergence")]
    # The default two, the closest to tolerance by cosine, each worst by local error at the broken layer. The closest
    # are the 7-bit weights' (u8s8-qdq-rr), which also cost every layer before it a few dB: conv1's 29 dB, below the
    # threshold, may come first.
    closest = sorted(drifted, key=lambda v: (-v["accuracy"]["cosine"], v["name"]))[:2]
    assert {v["name"] for v in looked} == {v["name"] for v in closest}, (looked, closest)
    for variant in looked:
        found = variant["divergence"]
        assert found["worst"][0]["node"] == BROKEN and found["reproduced"], found
        assert found["first_node"] in {f"conv{i}" for i in range(BROKEN_LAYER + 1)}, found
    # Within a fifth of the target's evaluation.
    assert sum(v["divergence"]["seconds"] for v in looked) <= 0.2 * entry["duration_s"], entry["duration_s"]
    assert f"leaves fp32 at {looked[0]['divergence']['first_node']} (Conv" in words(result.stdout)
    assert f"worst alone: {BROKEN} " in words(result.stdout)
    none = farm_matrix(
        str(model), "--data", str(data), "-t", name, "--no-profile", "--divergence", "none", out=tmp_path / "none"
    )
    assert none.returncode == 0, none.stderr
    assert not any(v.get("divergence") for v in target(read_report(tmp_path / "none"), name)["variants"])
    bad = farm("matrix", str(model), "-t", name, "--divergence", "some")
    assert_one_clean_line(bad, 2, "--divergence some")


def test_where_one_targets_fp32_parts_from_anothers_in_bisect_and_in_the_matrix(
    built: BuildResults, tmp_path: Path
) -> None:
    """x86-avx2's reductions sum in 8 SIMD lanes and arm64's in 4, so a model that subtracts two equal norms outputs
    only their last bits, which differ (tests.modelgen.make_cancelling_norm). The matrix's cross-check warns and
    names the node where they part; farm bisect --against without --variant shows every node: bit for bit the same
    before the reductions, and alone, on x86-avx2's inputs, arm64's elementwise nodes compute x86-avx2's values."""
    data = make_cancelling_norm(tmp_path / "model.onnx")
    np.savez(tmp_path / "data.npz", **data.inputs)  # type: ignore[arg-type]
    result = farm_matrix(
        str(data.path), "--data", str(tmp_path / "data.npz"), "-t", "x86-avx2", "-t", "arm64", out=tmp_path / "out"
    )
    assert result.returncode == 0, result.stderr
    warned = [w for w in read_report(tmp_path / "out")["warnings"] if "fp32 on arm64 disagrees" in w]
    assert len(warned) == 1 and f"they part first at {CANCELLING_NODE} (Sub, residue)" in warned[0], warned
    assert "alone, on the same inputs, the nodes that differ most are" in warned[0]
    parted = farm(
        "bisect", str(data.path), "--data", str(tmp_path / "data.npz"), "--target", "arm64", "--against", "x86-avx2",
        "--json", str(tmp_path / "fp32.json"),
    )  # fmt: skip
    assert parted.returncode == 0, parted.stderr + parted.stdout
    assert "fp32 on arm64 (emulated) against fp32 on x86-avx2" in parted.stdout
    found = json.loads((tmp_path / "fp32.json").read_text())
    assert found["variant"] == "fp32" and found["status"] == "done" and found["reproduced"], found
    nodes = {n["node"]: n for n in found["nodes"]}
    assert list(nodes) == [n.name for n in onnx.load(str(data.path)).graph.node], nodes
    assert found["first"]["node"] == CANCELLING_NODE, found
    # The reductions differ; alone, the elementwise nodes compute the other target's values exactly.
    assert {n["op"] for n in found["worst"]} <= {"LayerNormalization", "ReduceMean"}, found["worst"]
    elementwise = [n for n in nodes.values() if n["op"] in {"Sub", "Mul", "Add", "Sqrt", "Div"}]
    assert elementwise and all(n["local_db"] == SQNR_CLIP_DB for n in elementwise), elementwise
