"""The report model and its schema: valid reports round-trip exactly, invalid ones are refused with a JSON path."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from farm.errors import BadInput
from farm.job.codec import decode, encode
from farm.report import (
    InvalidReport,
    Report,
    TargetResult,
    Variant,
    load_report,
    report_json,
    validate,
    validate_target,
)
from farm.report import schema as report_schema
from tests.unit.report_sample import GPU_REASON, sample_report_dict


def test_sample_report_is_valid() -> None:
    validate(sample_report_dict())
    validate(sample_report_dict(synthetic=True))


def test_schema_file_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(report_schema.load_schema())


def test_round_trip_is_exact() -> None:
    document = sample_report_dict()
    report = decode(Report, document)
    assert encode(report) == document
    # Key order too, so that a report rewritten by farm diffs cleanly against the original.
    assert report_json(report) == json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    assert load_report(report_json(report)) == report


def test_model_is_typed_and_frozen() -> None:
    report = decode(Report, sample_report_dict())
    avx2 = report.targets[0]
    assert isinstance(avx2.variants, tuple)
    assert avx2.runtime is not None and avx2.runtime.providers == ("CPUExecutionProvider",)
    assert report.model.inputs[0].shape == ("batch", 1, 28, 28)
    with pytest.raises(AttributeError):
        avx2.name = "other"  # type: ignore[misc]


def test_variant_outcome() -> None:
    avx2 = decode(Report, sample_report_dict()).targets[0]
    outcomes = {v.name: v.outcome for v in avx2.variants}
    assert outcomes["u8s8-qdq"] == "out-of-tolerance"
    assert outcomes["u8u8-qdq"] == "ok"
    assert outcomes["u8s8-dynamic"] == "failed"
    assert outcomes["u8s8-dynamic+x64quantprecision"] == "skipped"
    assert avx2.variant("u8u8-qdq") is not None
    assert avx2.variant("nope") is None


def test_a_target_with_only_what_it_needs_matches_the_contract() -> None:
    target = TargetResult(
        name="gpu-s8s8", platform="linux/amd64", mode="unavailable", status="skipped", reason=GPU_REASON
    )
    validate_target(encode(target))
    assert encode(target) == sample_report_dict()["targets"][3]


def test_a_failed_target_keeps_its_partial_variants() -> None:
    fp32 = Variant(name="fp32", status="ok", timing="emulated")
    target = TargetResult(
        name="arm64",
        platform="linux/arm64",
        mode="emulated",
        status="failed",
        reason="killed by SIGSEGV",
        exit_code=139,
        log_tail="Segmentation fault\n",
        variants=(fp32,),
        cpu_model="cortex-a72",
    )
    validate_target(encode(target))
    assert (target.status, target.exit_code, target.variants) == ("failed", 139, (fp32,))
    assert decode(TargetResult, encode(target)) == target


def _drop_model_sha(d: dict[str, Any]) -> None:
    del d["model"]["sha256"]


def _drop_targets(d: dict[str, Any]) -> None:
    del d["targets"]


def _bad_mode(d: dict[str, Any]) -> None:
    d["targets"][1]["mode"] = "fast"


def _bad_timing(d: dict[str, Any]) -> None:
    d["targets"][0]["variants"][2]["timing"] = "wallclock"


def _bad_status(d: dict[str, Any]) -> None:
    d["targets"][3]["status"] = "error"


def _extra_top_key(d: dict[str, Any]) -> None:
    d["extra"] = 1


def _extra_variant_key(d: dict[str, Any]) -> None:
    d["targets"][0]["variants"][0]["latency_ms"]["mean"] = 1.0


def _null_name(d: dict[str, Any]) -> None:
    d["targets"][2]["name"] = None


def _wrong_schema(d: dict[str, Any]) -> None:
    d["schema"] = "farm.report/3"


def _missing_variant_key(d: dict[str, Any]) -> None:
    del d["targets"][1]["variants"][3]["within_tolerance"]


@pytest.mark.parametrize(
    ("break_it", "path", "words"),
    [
        (_drop_model_sha, "$.model", "'sha256' is a required property"),
        (_drop_targets, "$", "'targets' is a required property"),
        (_bad_mode, "$.targets[1].mode", "'fast' is not one of"),
        (_bad_timing, "$.targets[0].variants[2].timing", "'wallclock' is not one of"),
        (_bad_status, "$.targets[3].status", "'error' is not one of"),
        (_extra_top_key, "$", "'extra' was unexpected"),
        (_extra_variant_key, "$.targets[0].variants[0].latency_ms", "'mean' was unexpected"),
        (_null_name, "$.targets[2].name", "None is not of type 'string'"),
        (_wrong_schema, "$.schema", "'farm.report/3' is not one of ['farm.report/1', 'farm.report/2']"),
        (_missing_variant_key, "$.targets[1].variants[3]", "'within_tolerance' is a required property"),
    ],
)
def test_invalid_reports_are_refused_with_their_path(
    break_it: Callable[[dict[str, Any]], None], path: str, words: str
) -> None:
    pytest.importorskip("jsonschema")
    document = sample_report_dict()
    break_it(document)
    with pytest.raises(InvalidReport) as caught:
        validate(document)
    assert caught.value.path == path
    assert words in caught.value.problem
    assert isinstance(caught.value, BadInput)
    assert f"at {path}:" in str(caught.value)


def test_nullable_fields_accept_null() -> None:
    document = sample_report_dict()
    variant = document["targets"][1]["variants"][0]
    variant.update(latency_ms=None, accuracy=None, size_bytes=None, within_tolerance=None, timing="none")
    document["targets"][1].update(runtime=None, cpu_model=None, exit_code=None, duration_s=None, image=None)
    document["model"]["inputs"][0]["shape"] = None
    validate(document)
    assert encode(decode(Report, document)) == document


def test_validate_target_checks_one_result_json() -> None:
    pytest.importorskip("jsonschema")
    target = sample_report_dict()["targets"][0]
    validate_target(target)
    broken = copy.deepcopy(target)
    broken["variants"][0]["status"] = "crashed"
    with pytest.raises(InvalidReport, match=r"target result failed because at \$\.variants\[0\]\.status"):
        validate_target(broken)


def test_without_jsonschema_only_the_top_level_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_schema, "_jsonschema", lambda: None)
    document = sample_report_dict()
    document["targets"][0]["mode"] = "fast"  # beyond what the fallback looks at
    validate(document)
    del document["tolerance"]
    with pytest.raises(InvalidReport, match="'tolerance' is a required property"):
        validate(document)
    with pytest.raises(InvalidReport, match=r"at \$\.schema"):
        validate({**sample_report_dict(), "schema": "something/else"})
    with pytest.raises(InvalidReport, match="expected an object"):
        validate([])


def test_load_report_refuses_text_that_is_not_json() -> None:
    with pytest.raises(InvalidReport, match="not JSON"):
        load_report("{not json")


def test_huge_offending_values_are_shortened_in_the_message() -> None:
    pytest.importorskip("jsonschema")
    document = sample_report_dict()
    document["targets"] = {"x" * 2000: 1}
    with pytest.raises(InvalidReport) as caught:
        validate(document)
    assert len(caught.value.problem) <= 300


def test_a_report_written_before_per_output_figures_and_masking_still_reads() -> None:
    document = sample_report_dict()
    document["tolerance"] = {"cosine": 0.99, "top1_agreement": 0.99}
    for entry in document["targets"]:
        entry.pop("cpu_seen")
        for found in entry["variants"]:
            found.pop("quantization")
            if found["latency_ms"]:
                found["latency_ms"] = {k: found["latency_ms"][k] for k in ("p50", "p90", "p99")}
            if found["accuracy"]:
                kept = ("cosine", "max_abs", "top1_agreement", "accuracy")
                found["accuracy"] = {k: found["accuracy"][k] for k in kept}
    validate(document)
    report = decode(Report, document)
    first = report.targets[0].variants[0]
    assert first.latency_ms is not None and first.latency_ms.rounds == () and first.quantization is None
    assert report.targets[0].cpu_seen is None and report.tolerance.metric is None
