"""The tune contracts' schemas (farm/job/tune/schema.json, farm/controller/tune-report.schema.json) catch a
broken document: the tests that make tune.json files check them against these (tests/tuneschema.py), so the check
must be able to fail."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.tuneschema import check_tune, check_tune_report, trial_entry, tune_document, tune_report

TUNE: dict[str, Any] = tune_document(
    mode="emulated",
    timed=False,
    start="u8s8-qdq",
    fp32={"accuracy": None, "latency_ms": None, "size_bytes": 1000},
    ranking=[{"nodes": ["head"], "tensor": "logits", "sqnr_db": 12.5}],
    ranking_source="given",
    lanes=[{"variant": "u8s8-qdq", "start_trial": 0, "from_trial": None, "stopped": None}],
    trials=[trial_entry(0)],
    seconds=1.0,
)
DIFFERENCES = [{"node": "head", "targets": {"x86-avx2": {"as": "fp32", "why": "saturates"}}}]


def report(*targets: dict[str, Any]) -> dict[str, Any]:
    return tune_report(*targets, differences=copy.deepcopy(DIFFERENCES))


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
