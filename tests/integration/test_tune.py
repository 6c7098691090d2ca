"""Issue 12 on the real engine: `farm tune` searches in the target itself and keeps only the regions that must stay
fp32, or says "keep fp32" with the best trade-off it found."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest

from farm.controller.fleet import BuildResults, Fleet
from farm.job.codec import decode
from farm.job.recommend import faster
from farm.job.types import Latency
from farm.report.schema import validate
from tests.conftest import ROOT, outside_turn
from tests.hostfloor import floor_for_second_search
from tests.integration.farmrun import farm_matrix, native_target, read_report
from tests.modelgen import (
    SATURATING_HEAD,
    SATURATING_WEIGHT,
    SENSITIVE_REGION,
    make_hardswish_cnn,
    make_if_branch_model,
    make_int8_never_pays,
    make_saturating_cnn,
    make_sensitive_cnn,
)
from tests.tuneschema import check_tune_report

# Its farm commands take this host's turns (tests/conftest.py): `farm tune` times on the timed target alone.
pytestmark = [pytest.mark.docker, pytest.mark.farm_turns]


def farm_tune(model: Path, data: Path, out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    with outside_turn():
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "farm",
                "tune",
                str(model),
                "--data",
                str(data),
                "--out",
                str(out),
                "--quiet",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=ROOT,
        )
    report = json.loads((out / "tune.json").read_text()) if (out / "tune.json").is_file() else None
    if report is not None:
        check_tune_report(report)
    return result, report


def tune_generated(
    fleet: Fleet, make: Any, tmp_path: Path, *args: str
) -> tuple[str, subprocess.CompletedProcess[str], dict[str, Any]]:
    """``make``'s model and data through `farm tune` on the native target: the target, the run, its entry."""
    data = make(tmp_path / "model.onnx")
    inputs, _ = data.save(tmp_path / "data")
    target = native_target(fleet)
    result, report = farm_tune(data.path, inputs, tmp_path / "out", "--target", target, *args)
    assert result.returncode == 0, result.stderr
    return target, result, report["targets"][0]


def tune_at_host_floor(
    model: Path, data: Path, out: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], Any, Path]:
    """`farm tune` at the default floor; where int8 does not pay that much on this host, the "keep fp32" of each timed
    target is checked against its own timings, and the search runs again at the floor those timings set
    (tests/hostfloor.py). Returns the run, its tune.json and the folder that holds them."""
    result, report = farm_tune(model, data, out, *args)
    assert result.returncode == 0, result.stderr
    floor = floor_for_second_search(report["targets"], report["floor"])
    if floor is None:
        return result, report, out
    again = out.with_name(f"{out.name}-floor")
    result, report = farm_tune(model, data, again, *args, "--floor", str(floor))
    assert result.returncode == 0, result.stderr
    return result, report, again


def test_tune_keeps_the_sensitive_region_in_fp32_and_stays_faster_than_fp32(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    data = make_sensitive_cnn(tmp_path / "sensitive.onnx")
    inputs, _ = data.save(tmp_path / "data")
    target = native_target(fleet)
    result, report, out = tune_at_host_floor(data.path, inputs, tmp_path / "out", "--target", target)
    assert "Traceback" not in result.stderr
    entry = report["targets"][0]
    assert entry["status"] == "ok" and entry["verdict"] == "tuned", entry.get("reason")
    # Naive int8 fails the tolerance; the tuned model keeps the amplified region in fp32 and passes it.
    assert not any(v["within_tolerance"] for v in entry["naive"].values() if v.get("accuracy")), entry["naive"]
    best = entry["best"]
    assert set(SENSITIVE_REGION) <= set(best["exclude"]), best
    assert best["within_tolerance"] and best["accuracy"]["cosine"] >= 0.99, best
    assert best["speedup"] >= report["floor"], best  # measured in the target: still faster than fp32 by the floor
    tuned = onnx.load(str(out / "tuned" / f"{target}.onnx"))
    producers = {output: node for node in tuned.graph.node for output in node.output}
    ops = [n.op_type for n in tuned.graph.node]
    assert "QuantizeLinear" in ops, "the tuned model is still int8 elsewhere"
    # The wide-range tensor between the region's two nodes is never quantized: conv2 reads it as amplify wrote it.
    amplify, conv2 = (next(n for n in tuned.graph.node if n.name == name) for name in SENSITIVE_REGION)
    assert conv2.input[0] == amplify.output[0], (conv2.input, amplify.output)
    assert not [n.name for n in tuned.graph.node if n.op_type == "QuantizeLinear" and amplify.output[0] in n.input]
    assert producers[conv2.input[0]].op_type == "Mul"
    kept = f"{target} ({fleet.placements[target].mode}): {best['variant']} with {len(best['exclude'])} node(s) in fp32"
    assert kept in result.stdout

    # farm matrix --tuned carries it: the target evaluates its own tuned model beside the naive variants, which all
    # fall out of tolerance, and it is the one to ship.
    matrix = farm_matrix(
        str(data.path),
        "--data",
        str(inputs),
        "--target",
        target,
        "--iterations",
        "50",
        "--tuned",
        str(out),
        out=tmp_path / "matrix",
    )
    assert matrix.returncode == 0, matrix.stderr
    evaluated = read_report(tmp_path / "matrix")
    validate(evaluated)
    row = next(t for t in evaluated["targets"] if t["name"] == target)
    carried = next(v for v in row["variants"] if v["name"] == "tuned")
    assert carried["status"] == "ok" and carried["within_tolerance"] is True, carried
    assert carried["quantization"]["nodes_to_exclude"] == best["exclude"]
    assert carried["quantization"]["nodes"]["quantized"] == carried["quantization"]["nodes"]["quantizable"] - 1
    assert not any(v["within_tolerance"] for v in row["variants"] if v["name"] not in ("fp32", "optimized", "tuned"))
    reason = row["recommendation_reason"]
    if row["recommended"] != "tuned":
        # Where int8 barely pays on this CPU (the search then ran at a floor below 1.1x), the matrix's own timing
        # rounds decide, and they do not show the tuned model faster than the baseline beyond noise: it says so.
        base = next(v for v in row["variants"] if v["name"] == row["recommended"])
        assert row["recommended"] in ("fp32", "optimized"), reason
        assert not faster(decode(Latency, carried["latency_ms"]), decode(Latency, base["latency_ms"])), reason
        assert "tuned" in reason and ("within noise" in reason or "int8 did not pay" in reason), reason
    # A folder that tuned another model is refused before anything runs.
    other = make_int8_never_pays(tmp_path / "other.onnx")
    refused = farm_matrix(str(other.path), "--tuned", str(out), out=tmp_path / "refused")
    assert refused.returncode == 2 and "farm tune tuned another model" in refused.stderr


def test_tune_says_keep_fp32_when_nothing_beats_fp32_by_the_floor(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    target, result, entry = tune_generated(fleet, make_int8_never_pays, tmp_path, "--budget", "8t")
    assert entry["status"] == "ok" and entry["verdict"] == "keep-fp32", entry
    assert entry["best"] is not None and entry["best"]["accuracy"] is not None  # the best trade-off, said
    assert len(entry["trials"]) <= 1 + 8
    assert not (tmp_path / "out" / "tuned" / f"{target}.onnx").exists()
    assert f"{target} ({fleet.placements[target].mode}): keep fp32" in result.stdout, result.stdout


def test_tune_on_a_model_whose_compute_sits_inside_if_branches_says_keep_fp32_and_why(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    target, result, entry = tune_generated(fleet, make_if_branch_model, tmp_path, "--budget", "4t")
    assert entry["status"] == "ok" and entry["verdict"] == "keep-fp32" and entry["best"] is None, entry
    (said,) = [line for line in result.stdout.splitlines() if line.startswith(f"{target} (")]
    mode = fleet.placements[target].mode
    assert said.startswith(f"{target} ({mode}): keep fp32 (no int8 model to compare; 1 trial(s)); "), said
    assert "all 4 quantizable nodes sit inside If/Loop/Scan bodies" in said and "u8s8-dynamic-subgraph" in said


def test_tune_resume_keeps_finished_targets_and_a_changed_setting_searches_again(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    data = make_sensitive_cnn(tmp_path / "sensitive.onnx")
    inputs, _ = data.save(tmp_path / "data")
    target = native_target(fleet)
    out = tmp_path / "out"
    first, report = farm_tune(data.path, inputs, out, "--target", target)
    assert first.returncode == 0, first.stderr
    again, resumed = farm_tune(data.path, inputs, out, "--target", target, "--resume")
    assert again.returncode == 0, again.stderr
    kept = resumed["targets"][0]
    assert kept.get("resumed") is True and kept["trials"] == report["targets"][0]["trials"]
    changed, searched = farm_tune(data.path, inputs, out, "--target", target, "--resume", "--floor", "1.2")
    assert changed.returncode == 0, changed.stderr
    assert not searched["targets"][0].get("resumed")  # the floor is part of what a search depends on


def test_the_tuned_exclusions_follow_each_tier_s_kernels(fleet: Fleet, built: BuildResults, tmp_path: Path) -> None:
    """Acceptance 2: a head that saturates only where U8S8 kernels add int16 pair sums (VPMADDUBSW) stays fp32 on
    x86-avx2 and int8 on a tier whose kernels keep 32-bit sums, and the report says why, from each tier's own kernel
    check. The contrast is x86-avx512-vnni where this CPU runs it natively, else arm64 (under QEMU): as everywhere in
    these tests, the timed (native or masked) target searches first and the emulated one checks its tuned model."""
    vnni = fleet.placements["x86-avx512-vnni"].mode == "native"
    contrast = "x86-avx512-vnni" if vnni else "arm64"
    # 8 samples: every evaluation under QEMU costs time per sample, and one top-1 flip fails the tolerance anyway.
    data = make_saturating_cnn(tmp_path / "model.onnx", samples=8)
    inputs, labels = data.save(tmp_path / "data")
    # U8S8 alone: its kernels are the ones that differ between the tiers. With every candidate the start would be
    # whichever beats fp32 by the floor on this CPU, and at the low floor of a CPU where int8 barely pays that can
    # be U8U8, whose kernels saturate nowhere.
    targets = tmp_path / "targets.toml"
    text = (ROOT / "targets.toml").read_text(encoding="utf-8")
    targets.write_text(re.sub(r"^candidates = .*$", 'candidates = ["u8s8-qdq"]', text, count=1, flags=re.M))
    result, report, _ = tune_at_host_floor(
        data.path,
        inputs,
        tmp_path / "out",
        "--labels",
        str(labels),
        "--targets",
        str(targets),
        "--target",
        "x86-avx2",
        "--target",
        contrast,
    )
    entries = {e["name"]: e for e in report["targets"]}
    avx2, other = entries["x86-avx2"], entries[contrast]
    assert avx2["status"] == other["status"] == "ok", (avx2.get("reason"), other.get("reason"))
    assert avx2["verdict"] == other["verdict"] == "tuned", (avx2["reason"], other["reason"])
    assert SATURATING_HEAD in avx2["best"]["exclude"] and SATURATING_HEAD not in other["best"]["exclude"]
    assert avx2["best"]["accuracy"]["cosine"] >= 0.99 and other["best"]["accuracy"]["cosine"] >= 0.99

    def head_kernel(entry: dict[str, Any]) -> dict[str, Any]:
        return next(
            k for k in entry["kernels"] if k["node"] == SATURATING_HEAD and k["variant"] == entry["best"]["variant"]
        )

    # Each tier measured the head's kernel itself: it saturates on AVX2 (exact once it keeps 32-bit sums), and is
    # exact on the contrast.
    assert head_kernel(avx2)["saturates"] is True and head_kernel(other)["lossy"] is False
    # On AVX2, 7-bit weights for the head alone were tried first, and fall out of tolerance on this head's weights.
    seven = [t for t in avx2["trials"] if t["added_seven_bit"] == [SATURATING_WEIGHT]]
    assert seven and not any(t["within_tolerance"] for t in seven), seven
    (change,) = avx2["best"]["changes"]
    assert change["nodes"] == [SATURATING_HEAD] and change["cause"] == "kernel"
    assert "saturate" in change["why"] and "7-bit weights for it" in change["why"]

    (difference,) = report["differences"]
    assert difference["node"] == SATURATING_HEAD
    saturating = difference["targets"]["x86-avx2"]
    assert saturating["as"] == "fp32" and "VPMADDUBSW" in saturating["why"]
    assert difference["targets"][contrast]["as"] == "int8"
    assert "exact on this target" in difference["targets"][contrast]["why"]
    # One line, the targets in the order they searched (the timed one first: x86-avx2 here unless this CPU has VNNI).
    (said,) = [line for line in result.stdout.splitlines() if line.startswith(f"differs: {SATURATING_HEAD}: ")]
    assert "fp32 on x86-avx2 (" in said and f"int8 on {contrast} (" in said, said


def test_written_out_hardswish_is_fused_in_the_target_and_the_tuned_model_keeps_it(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    data = make_hardswish_cnn(tmp_path / "model.onnx")
    inputs, _ = data.save(tmp_path / "data")
    target = native_target(fleet)
    _, report, out = tune_at_host_floor(data.path, inputs, tmp_path / "out", "--target", target)
    entry = report["targets"][0]
    assert entry["status"] == "ok" and [f["kind"] for f in entry["fusions"]] == ["HardSwish"] * 4
    fusions = [t for t in entry["trials"] if t["step"] == "fuse"]
    assert fusions and all(t["fused"] and t["accuracy"]["cosine"] > 0.99 for t in fusions), fusions
    # Kept or not (timed, it is kept when it runs faster beyond noise), the tuned model is what the search says.
    assert entry["verdict"] == "tuned", entry["reason"]
    tuned = onnx.load(str(out / "tuned" / f"{target}.onnx"))
    ops = [n.op_type for n in tuned.graph.node]
    if entry["best"]["fused"]:
        assert ops.count("HardSwish") == 4 and "Clip" not in ops
        assert len(entry["best"]["quantization"]["fused"]) == 4
    else:
        # Unfused, the pattern stays written out, and the QDQ quantizer folds its Clips into the ranges of the
        # quantized tensors around them (ORT removes a Clip or Relu whose range the quantization already keeps).
        assert "HardSwish" not in ops and "Mul" in ops and "Clip" not in ops
        assert "fused" not in entry["best"]["quantization"]  # the record names fusions only where there are some
