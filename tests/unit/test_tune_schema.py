"""The tune contracts' schemas (farm/job/tune/schema.json, farm/tune-report.schema.json) catch a broken document:
the tests that make tune.json files check them against these (tests/tuneschema.py), so the check must be able to
fail."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.tuneschema import check_tune, check_tune_report

ACCURACY = {"cosine": 0.9999, "max_abs": 0.01, "top1_agreement": 1.0, "accuracy": None}
TRIAL = {
    "index": 0, "change": "start from u8s8-qdq", "lane": 0, "step": "start", "point": None, "added": [],
    "added_seven_bit": [], "returned": [], "exclude": [], "seven_bit": [], "fused": False, "variant": "u8s8-qdq",
    "calibration": "minmax", "per_channel": False, "reduce_range": False, "nodes": None, "accuracy": ACCURACY,
    "latency_ms": None, "speedup": None, "within_tolerance": True, "kept": True, "note": None, "why": None,
    "error": None, "seconds": 0.5,
}  # fmt: skip
TUNE: dict[str, Any] = {
    "schema": "farm.tune/1", "status": "running", "error": None, "target": "x86-avx2", "mode": "emulated",
    "timed": False, "floor": 1.1, "tolerance": {"cosine": 0.99, "top1_agreement": 0.99},
    "budget": {"seconds": None, "trials": 20}, "start": "u8s8-qdq", "candidate": None,
    "fp32": {"accuracy": None, "latency_ms": None, "size_bytes": 1000}, "naive": {},
    "ranking": [{"nodes": ["head"], "tensor": "logits", "sqnr_db": 12.5}], "ranking_source": "given", "fusions": [],
    "kernels": [], "lanes": [{"variant": "u8s8-qdq", "start_trial": 0, "from_trial": None, "stopped": None}],
    "trials": [TRIAL], "stopped": None, "verdict": None, "reason": None, "best": None, "excluded": [],
    "seven_bit": [], "returned": [], "tuned_model": None, "warnings": [], "seconds": 1.0,
}  # fmt: skip
MODEL = {"path": "model.onnx", "sha256": "0" * 64, "ir_version": 8, "opsets": {"": 17}, "inputs": [], "outputs": []}


def report(*targets: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": "farm.tune-report/1", "created": "2026-01-01T00:00:00Z", "model": MODEL, "floor": 1.1,
        "budget": {"budget_s": None, "budget_trials": 20}, "warnings": [], "targets": list(targets),
        "differences": [{"node": "head", "targets": {"x86-avx2": {"as": "fp32", "why": "saturates"}}}],
    }  # fmt: skip


def searched() -> dict[str, Any]:
    return {**copy.deepcopy(TUNE), "name": "x86-avx2", "status": "failed", "reason": "interrupted", "resume_key": "k"}


def skipped() -> dict[str, Any]:
    return {"name": "gpu", "mode": "unavailable", "status": "skipped", "reason": "needs an NVIDIA GPU"}


def test_a_whole_tune_json_and_tune_report_pass() -> None:
    check_tune(TUNE)
    check_tune_report(report(searched(), skipped()))


def broken(path: tuple[str | int, ...], key: str, value: object = None, *, drop: str | None = None) -> Any:
    document = copy.deepcopy(TUNE)
    where: Any = document
    for part in path:
        where = where[part]
    if drop is not None:
        where[key] = where.pop(drop)
    else:
        where[key] = value
    return document


@pytest.mark.parametrize(
    ("document", "where"),
    [
        (broken((), "verdcit", drop="verdict"), r"\$: "),  # a misspelled top-level key
        (broken(("trials", 0), "within", drop="within_tolerance"), r"\$\.trials\[0\]"),
        (broken(("trials", 0), "step", "guess"), r"\$\.trials\[0\]\.step"),
        (broken(("ranking", 0), "sqnr", 1.0), r"\$\.ranking\[0\]"),
        (broken((), "schema", "farm.tune/2"), r"\$\.schema"),
        (broken(("fp32",), "size_bytes", "1000"), r"\$\.fp32"),
    ],
)
def test_a_broken_tune_json_fails_and_says_where(document: Any, where: str) -> None:
    with pytest.raises(AssertionError, match=where):
        check_tune(document)


def test_a_broken_tune_report_fails_and_says_where() -> None:
    misspelt = searched()
    misspelt["model_flie"] = misspelt.pop("reason")
    with pytest.raises(AssertionError, match=r"\$\.targets\[0\]"):
        check_tune_report(report(misspelt))
    with pytest.raises(AssertionError, match=r"\$\.targets\[0\]"):
        check_tune_report(report({**skipped(), "verdict": "tuned"}))
    bad_trial = searched()
    bad_trial["trials"][0]["kept"] = "yes"
    with pytest.raises(AssertionError, match=r"\$\.targets\[0\]\.trials\[0\]\.kept"):
        check_tune_report(report(bad_trial))
    wrong = report(searched())
    wrong["differences"][0]["targets"]["x86-avx2"]["as"] = "fp16"
    with pytest.raises(AssertionError, match=r"\$\.differences\[0\]"):
        check_tune_report(wrong)
    with pytest.raises(AssertionError, match=r"\$: "):
        check_tune_report({**report(), "diferences": []})
