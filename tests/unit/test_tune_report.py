"""farm tune's own report (farm/tune.py): the budget flag, the candidate an emulated target checks, and where and why
the tuned models of two targets differ. Plain logic on hand-written entries; tests/integration/test_tune.py runs it
on the real engine."""

from __future__ import annotations

from typing import Any

import pytest

from farm.errors import BadInput
from farm.tune import Budget, differences, render, tuned_candidate

SATURATES = ("its int8 kernel (Gemm) loses accuracy on this target: -6.2 dB against the same QDQ computed exactly, "
             "and 131.5 dB with session.x64quantprecision=1, so its int16 pair sums (VPMADDUBSW, x86 without VNNI) "
             "saturate")


def entry(name: str, *, exclude: list[str], changes: list[dict[str, Any]], kernels: list[dict[str, Any]],
          returned: list[dict[str, Any]] | None = None, verdict: str = "tuned") -> dict[str, Any]:
    return {
        "name": name, "mode": "native", "status": "ok", "verdict": verdict, "reason": "…", "trials": [{}, {}],
        "best": {"variant": "u8s8-qdq", "calibration": "minmax", "per_channel": False, "reduce_range": False,
                 "exclude": exclude, "seven_bit": [], "changes": changes, "speedup": 1.6,
                 "accuracy": {"cosine": 0.9999}},
        "kernels": kernels, "returned": returned or [],
    }


def kernel(node: str, db: float, *, precise: float | None = None, variant: str = "u8s8-qdq") -> dict[str, Any]:
    return {"variant": variant, "node": node, "op": "Gemm", "weight": "fc", "kernel_db": db, "precise_db": precise,
            "lossy": db < 30, "saturates": db < 30 and (precise or 0) >= 30}


AVX2 = entry("x86-avx2", exclude=["head"], kernels=[kernel("head", -6.2, precise=131.5), kernel("conv0", 70.0)],
             changes=[{"trial": 3, "kind": "fp32", "nodes": ["head"], "seven_bit": [], "cause": "kernel",
                       "kernel_node": "head", "why": SATURATES}])


def test_a_node_kept_in_fp32_on_one_tier_and_int8_on_another_is_a_difference_with_both_reasons() -> None:
    arm = entry("arm64", exclude=[], changes=[], kernels=[kernel("head", 131.6), kernel("conv0", 86.0)])
    (found,) = differences([AVX2, arm])
    assert found == {"node": "head", "targets": {
        "x86-avx2": {"as": "fp32", "why": SATURATES},
        "arm64": {"as": "int8", "why": "its int8 kernel (Gemm) is exact on this target (131.6 dB)"}}}
    # What a target returned to int8 says why in its own words, before its kernel check does.
    back = entry("arm64", exclude=[], changes=[], kernels=[kernel("head", 131.6)],
                 returned=[{"trial": 1, "returned": ["head"], "why": "within tolerance without it: exact here"}])
    assert differences([AVX2, back])[0]["targets"]["arm64"]["why"] == "within tolerance without it: exact here"


def test_targets_that_treat_every_node_alike_or_did_not_tune_have_no_difference() -> None:
    same = entry("x86-avx512", exclude=["head"], kernels=[], changes=AVX2["best"]["changes"])
    assert differences([AVX2, same]) == []
    keep = entry("arm64", exclude=[], changes=[], kernels=[], verdict="keep-fp32")
    failed = {"name": "gpu", "status": "failed", "reason": "image build failed"}
    assert differences([AVX2, keep, failed]) == []


def test_7_bit_weights_are_a_treatment_of_their_node() -> None:
    seven = entry("x86-avx512", exclude=[], kernels=[kernel("head", -3.0, precise=120.0)],
                  changes=[{"trial": 2, "kind": "7-bit", "nodes": [], "seven_bit": ["fc"], "cause": "kernel",
                            "kernel_node": "head", "why": "saturates; 7-bit weights keep its pair sums within int16"}])
    (found,) = differences([AVX2, seven])
    assert found["targets"]["x86-avx512"] == {"as": "7-bit weights",
                                              "why": "saturates; 7-bit weights keep its pair sums within int16"}


def test_the_rendered_report_names_the_tuned_variant_and_the_differences() -> None:
    arm = entry("arm64", exclude=[], changes=[], kernels=[kernel("head", 131.6)])
    arm["mode"] = "emulated"
    arm["best"]["speedup"] = None
    report = {"model": {"path": "model.onnx"}, "floor": 1.1, "warnings": [], "targets": [AVX2, arm],
              "differences": differences([AVX2, arm])}
    lines = render(report).splitlines()
    assert lines[1].startswith("x86-avx2 (native): u8s8-qdq with 1 node(s) in fp32: head (cosine 0.9999, 1.60x fp32")
    assert lines[2].startswith("arm64 (emulated): u8s8-qdq with 0 node(s) in fp32 (cosine 0.9999, not timed")
    assert lines[3] == (f"differs: head: fp32 on x86-avx2 ({SATURATES}); int8 on arm64 (its int8 kernel (Gemm) is "
                        "exact on this target (131.6 dB))")


def test_only_a_tuned_search_gives_emulated_targets_a_candidate() -> None:
    candidate = tuned_candidate(AVX2)
    assert candidate == {"target": "x86-avx2", "variant": "u8s8-qdq", "calibration": "minmax", "per_channel": False,
                         "reduce_range": False, "exclude": ["head"], "seven_bit": [],
                         "changes": AVX2["best"]["changes"]}
    assert tuned_candidate({**AVX2, "verdict": "keep-fp32"}) is None
    assert tuned_candidate({**AVX2, "status": "failed"}) is None


def test_the_budget_flag() -> None:
    assert Budget.parse(None) == Budget(trials=20)
    assert Budget.parse("40t") == Budget(trials=40) and Budget.parse("3 trials") == Budget(trials=3)
    assert Budget.parse("90s") == Budget(seconds=90.0) and Budget.parse("10m") == Budget(seconds=600.0)
    for bad in ("soon", "0t", "1.5t"):
        with pytest.raises(BadInput, match="--budget"):
            Budget.parse(bad)
