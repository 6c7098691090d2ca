"""farm tune's own report (farm/controller/tune.py): the budget flag, the candidate an emulated target checks, and
where and why the tuned models of two targets differ; and `farm matrix --tuned` finding them
(farm/controller/tuned.py). Plain logic on hand-written entries; tests/integration/test_tune.py runs both on the real
engine."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from farm.controller.tune import Budget, differences, render, tuned_candidate
from farm.controller.tuned import load_tuned
from farm.errors import BadInput
from farm.job.codec import encode, json_object
from farm.model.inspect import inspect_model
from tests.modelgen import make_mlp_classifier
from tests.tuneschema import ACCURACY, MODEL, check_tune_report, trial_entry, tune_document, tune_report

SATURATES = (
    "its int8 kernel (Gemm) loses accuracy on this target: -6.2 dB against the same QDQ computed exactly, "
    "and 131.5 dB with session.x64quantprecision=1, so its int16 pair sums (VPMADDUBSW, x86 without VNNI) "
    "saturate"
)


def entry(
    name: str,
    *,
    exclude: list[str],
    changes: list[dict[str, Any]],
    kernels: list[dict[str, Any]],
    returned: list[dict[str, Any]] | None = None,
    verdict: str = "tuned",
) -> dict[str, Any]:
    """A searched target as farm tune's report lists it: its tune.json (farm.tune/1) with the controller's keys."""
    best = {
        "trial": 1, "variant": "u8s8-qdq", "exclude": exclude, "seven_bit": [], "fused": False,
        "calibration": "minmax", "per_channel": False, "reduce_range": False, "accuracy": dict(ACCURACY),
        "within_tolerance": True, "latency_ms": None, "speedup": 1.6, "changes": changes, "quantization": None,
    }  # fmt: skip
    found = tune_document(
        target=name,
        status="ok",
        verdict=verdict,
        reason="…",
        trials=[trial_entry(0), trial_entry(1)],
        best=best,
        kernels=kernels,
        returned=returned or [],
        name=name,
        resume_key="key",
    )
    check_tune_report(tune_report(found))
    return found


def found_differences(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``differences`` as farm tune's report writes them; the report they go into is checked against its schema."""
    written = [json_object(d) for d in differences(entries)]
    check_tune_report(tune_report(*entries, differences=written))
    return written


def kernel(node: str, db: float, *, precise: float | None = None, variant: str = "u8s8-qdq") -> dict[str, Any]:
    return {
        "variant": variant,
        "node": node,
        "op": "Gemm",
        "weight": "fc",
        "kernel_db": db,
        "precise_db": precise,
        "lossy": db < 30,
        "saturates": db < 30 and (precise or 0) >= 30,
    }


AVX2 = entry(
    "x86-avx2",
    exclude=["head"],
    kernels=[kernel("head", -6.2, precise=131.5), kernel("conv0", 70.0)],
    changes=[
        {
            "trial": 3,
            "kind": "fp32",
            "nodes": ["head"],
            "seven_bit": [],
            "cause": "kernel",
            "kernel_node": "head",
            "why": SATURATES,
        }
    ],
)


def test_a_node_kept_in_fp32_on_one_tier_and_int8_on_another_is_a_difference_with_both_reasons() -> None:
    arm = entry("arm64", exclude=[], changes=[], kernels=[kernel("head", 131.6), kernel("conv0", 86.0)])
    (found,) = found_differences([AVX2, arm])
    assert found == {
        "node": "head",
        "targets": {
            "x86-avx2": {"as": "fp32", "why": SATURATES},
            "arm64": {"as": "int8", "why": "its int8 kernel (Gemm) is exact on this target (131.6 dB)"},
        },
    }
    # What a target returned to int8 says why in its own words, before its kernel check does.
    back = entry(
        "arm64",
        exclude=[],
        changes=[],
        kernels=[kernel("head", 131.6)],
        returned=[{"trial": 1, "returned": ["head"], "kernel": None, "why": "within tolerance without it: exact here"}],
    )
    assert found_differences([AVX2, back])[0]["targets"]["arm64"]["why"] == "within tolerance without it: exact here"


def test_targets_that_treat_every_node_alike_or_did_not_tune_have_no_difference() -> None:
    same = entry("x86-avx512", exclude=["head"], kernels=[], changes=AVX2["best"]["changes"])
    assert found_differences([AVX2, same]) == []
    keep = entry("arm64", exclude=[], changes=[], kernels=[], verdict="keep-fp32")
    failed = {"name": "gpu", "mode": "native", "status": "failed", "reason": "image build failed"}
    assert found_differences([AVX2, keep, failed]) == []


def test_7_bit_weights_are_a_treatment_of_their_node() -> None:
    seven = entry(
        "x86-avx512",
        exclude=[],
        kernels=[kernel("head", -3.0, precise=120.0)],
        changes=[
            {
                "trial": 2,
                "kind": "7-bit",
                "nodes": [],
                "seven_bit": ["fc"],
                "cause": "kernel",
                "kernel_node": "head",
                "why": "saturates; 7-bit weights keep its pair sums within int16",
            }
        ],
    )
    (found,) = found_differences([AVX2, seven])
    assert found["targets"]["x86-avx512"] == {
        "as": "7-bit weights",
        "why": "saturates; 7-bit weights keep its pair sums within int16",
    }


def test_the_rendered_report_names_the_tuned_variant_and_the_differences() -> None:
    arm = entry("arm64", exclude=[], changes=[], kernels=[kernel("head", 131.6)])
    arm["mode"] = "emulated"
    arm["best"]["speedup"] = None
    report = {
        "model": {"path": "model.onnx"},
        "floor": 1.1,
        "warnings": [],
        "targets": [AVX2, arm],
        "differences": found_differences([AVX2, arm]),
    }
    lines = render(report).splitlines()
    assert lines[1].startswith("x86-avx2 (native): u8s8-qdq with 1 node(s) in fp32: head (cosine 0.9999, 1.60x fp32")
    assert lines[2].startswith("arm64 (emulated): u8s8-qdq with 0 node(s) in fp32 (cosine 0.9999, not timed")
    assert lines[3] == (
        f"differs: head: fp32 on x86-avx2 ({SATURATES}); int8 on arm64 (its int8 kernel (Gemm) is "
        "exact on this target (131.6 dB))"
    )


def test_a_target_with_no_int8_model_to_compare_says_so_not_nan() -> None:
    """A search whose every trial quantized nothing (all compute inside If bodies) has no best model: the line says
    that, and a timed target is never called emulated."""
    nothing = entry("x86-avx2", exclude=[], changes=[], kernels=[], verdict="keep-fp32")
    nothing.update(best=None, reason="no trial produced a model to compare (…)")
    untimed = entry("x86-avx512", exclude=[], changes=[], kernels=[], verdict="keep-fp32")
    untimed["mode"] = "masked"
    untimed["best"]["speedup"] = None
    lines = render(
        {
            "model": {"path": "model.onnx"},
            "floor": 1.1,
            "warnings": [],
            "targets": [nothing, untimed],
            "differences": [],
        }
    ).splitlines()
    assert lines[1] == (
        "x86-avx2 (native): keep fp32 (no int8 model to compare; 2 trial(s)); no trial produced a model to compare (…)"
    )
    assert lines[2].startswith("x86-avx512 (masked): keep fp32 (cosine 0.9999, not timed; 2 trial(s))")


def test_one_change_that_gives_several_nodes_7_bit_weights_treats_each_of_them() -> None:
    """The kernel step's group trial: one change, 7-bit weights for every saturating node; each node is treated."""
    group = entry(
        "x86-avx2",
        exclude=[],
        kernels=[kernel("conv0", 8.0, precise=90.0), kernel("head", -6.2, precise=131.5)],
        changes=[
            {
                "trial": 1,
                "kind": "7-bit",
                "nodes": [],
                "seven_bit": ["w0", "fc"],
                "cause": "kernel",
                "kernel_node": "head",
                "why": "they saturate",
            }
        ],
    )
    group["kernels"][0]["weight"] = "w0"
    vnni = entry("x86-avx512-vnni", exclude=[], changes=[], kernels=[kernel("conv0", 70.0), kernel("head", 131.6)])
    found = {d["node"]: d["targets"] for d in found_differences([group, vnni])}
    assert set(found) == {"conv0", "head"}
    assert found["conv0"]["x86-avx2"] == {"as": "7-bit weights", "why": "they saturate"}
    assert found["conv0"]["x86-avx512-vnni"]["as"] == "int8"


def test_only_a_tuned_search_gives_emulated_targets_a_candidate() -> None:
    candidate = tuned_candidate(AVX2)
    assert candidate is not None and json_object(candidate) == {
        "target": "x86-avx2",
        "variant": "u8s8-qdq",
        "calibration": "minmax",
        "per_channel": False,
        "reduce_range": False,
        "exclude": ["head"],
        "seven_bit": [],
        "fused": False,
        # Every key of a change is written, those its search left out too.
        "changes": [{**AVX2["best"]["changes"][0], "tensor": None, "tensors": [], "sqnr_db": None}],
    }
    assert tuned_candidate({**AVX2, "verdict": "keep-fp32"}) is None
    assert tuned_candidate({**AVX2, "status": "failed"}) is None


def test_the_budget_flag() -> None:
    assert Budget.parse(None) == Budget(trials=20)
    assert Budget.parse("40t") == Budget(trials=40) and Budget.parse("3 trials") == Budget(trials=3)
    assert Budget.parse("90s") == Budget(seconds=90.0) and Budget.parse("10m") == Budget(seconds=600.0)
    for bad in ("soon", "0t", "1.5t"):
        with pytest.raises(BadInput, match="--budget"):
            Budget.parse(bad)


def test_tuned_models_are_found_per_target_and_a_bad_folder_is_one_clear_error(tmp_path: Path) -> None:
    data = make_mlp_classifier(tmp_path / "model.onnx")
    info = inspect_model(data.path)
    out = tmp_path / "farm-tune"
    (out / "tuned").mkdir(parents=True)
    shutil.copyfile(data.path, out / "tuned" / "x86-avx2.onnx")
    quantization = {
        "kind": "static", "format": "QDQ", "activation_type": "uint8", "weight_type": "int8", "reduce_range": False,
        "per_channel": False, "subgraphs": False, "calibration": {"method": "minmax", "samples": 8}, "opset": 17,
        "nodes": None, "nodes_to_exclude": ["fc2"],
    }  # fmt: skip
    tuned = entry("x86-avx2", exclude=["fc2"], changes=[], kernels=[])
    tuned["best"]["quantization"] = quantization
    tuned["model_file"] = "/gone/farm-tune/tuned/x86-avx2.onnx"
    keep = entry("arm64", exclude=[], changes=[], kernels=[], verdict="keep-fp32")
    keep["reason"] = "int8 did not pay"
    skipped = {"name": "gpu-s8s8", "mode": "unavailable", "status": "skipped", "reason": "needs an NVIDIA GPU"}
    report = tune_report(tuned, keep, skipped, model={**MODEL, "path": str(data.path), "sha256": info.sha256})
    check_tune_report(report)
    (out / "tune.json").write_text(json.dumps(report))
    found = load_tuned(out, info)
    # The folder moved since farm tune wrote it: the model is found under tuned/ beside tune.json.
    assert set(found.models) == {"x86-avx2"} and encode(found.models["x86-avx2"].quantization) == quantization
    assert encode(found.spec("x86-avx2")) == {"model": "tuned/x86-avx2.onnx", "quantization": quantization}
    assert found.spec("arm64") is None
    assert found.warnings(["x86-avx2", "arm64", "gpu-s8s8", "x86-avx512"]) == [
        f"--tuned {out}: no tuned model for arm64 (farm tune said keep fp32: int8 did not pay)",
        f"--tuned {out}: no tuned model for gpu-s8s8 (its search skipped: needs an NVIDIA GPU)",
        f"--tuned {out}: no tuned model for x86-avx512 (farm tune did not search this target)",
    ]
    staged = tmp_path / "in"
    staged.mkdir()
    found.stage(staged)
    assert (staged / "tuned" / "x86-avx2.onnx").read_bytes() == data.path.read_bytes()

    other = make_mlp_classifier(tmp_path / "other.onnx", seed=3)
    bad = {
        f"--tuned {tmp_path}: there is no tune.json there": (tmp_path, info),
        f"--tuned {tmp_path / 'gone'}: does not exist": (tmp_path / "gone", info),
        "farm tune tuned another model": (out, inspect_model(other.path)),
    }
    for message, (path, model) in bad.items():
        with pytest.raises(BadInput, match=re.escape(message)):
            load_tuned(path, model)
    # A tuned model gone from the folder leaves that target without one, and says so; the others still run.
    (out / "tuned" / "x86-avx2.onnx").unlink()
    gone = load_tuned(out / "tune.json", info)
    assert gone.models == {}
    assert gone.none["x86-avx2"] == f"{out / 'tuned' / 'x86-avx2.onnx'} is missing; run farm tune again"
    (out / "tune.json").write_text(json.dumps({**report, "targets": [{"name": "x86-avx2", "status": "ok"}]}))
    with pytest.raises(BadInput, match=re.escape("is not a whole farm tune report (targets[0].mode is missing)")):
        load_tuned(out, info)
    (out / "tune.json").write_text("{")
    with pytest.raises(BadInput, match="cannot be read as JSON"):
        load_tuned(out, info)
