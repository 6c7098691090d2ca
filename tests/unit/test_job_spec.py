"""farm.job.spec: a spec is checked whole before any work starts, and every error names its key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from farm.job.codec import ContractError, encode
from farm.job.spec import Spec, SpecError
from tests.modelgen import write_job_spec
from tests.unit.report_sample import quantization

TUNED_RECORD = quantization("u8s8-qdq", 1, 2)  # tune.json's best.quantization


def spec_dict(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return dict(json.loads(write_job_spec(tmp_path, **overrides).read_text()))


def test_valid_spec_resolves_paths_against_its_directory(tmp_path: Path) -> None:
    spec = Spec.from_file(write_job_spec(tmp_path, stage="prepare", rewritten="rewritten.onnx", labels=None))
    assert spec.stage == "prepare"
    assert spec.model == (tmp_path / "model.onnx").resolve()
    assert spec.source_model == (tmp_path / "rewritten.onnx").resolve()
    assert spec.labels is None
    assert spec.artifacts == (tmp_path / "artifacts").resolve()
    assert spec.target.x86_vnni is False and not spec.target.emulated and not spec.target.wants_accelerator
    assert spec.candidates[0] == "s8s8-qdq"
    assert spec.calibration.method == "minmax" and spec.timing.iterations == 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": "farm.spec/2"}, "schema is 'farm.spec/2'"),
        ({"stage": "deploy"}, "stage is 'deploy'; expected one of prepare, evaluate"),
        ({"model": None}, "model must be str, not null"),
        ({"threads": 0}, "threads must be at least 1"),
        ({"threads": True}, "threads must be int, not bool"),
        ({"candidates": ["u8s8-qdq", "s4s4"]}, "candidates holds unknown names ['s4s4']"),
        ({"candidates": ["u8s8-qdq", "u8s8-qdq"]}, "candidates names an entry twice"),
        ({"mitigations": ["magic"]}, "mitigations holds unknown names ['magic']"),
        ({"optimization_level": "max"}, "optimization_level is 'max'"),
        ({"calibration": {"method": "kl", "samples": 8}}, "calibration.method is 'kl'"),
        ({"calibration": {"method": "minmax"}}, "calibration.samples is missing"),
        ({"timing": {"warmup": -1, "iterations": 5, "rounds": 5}}, "timing.warmup must be at least 0"),
        ({"timing": {"warmup": 1, "iterations": 5}}, "timing.rounds is missing"),
        ({"timing": {"warmup": 1, "iterations": 5, "rounds": 5, "mode": "quick"}}, "timing.mode is 'quick'"),
        ({"timing": {"warmup": 1, "iterations": 5, "rounds": 5, "round_s": 0}}, "timing.round_s must be above 0"),
        ({"timing": {"warmup": 1, "iterations": 5, "rounds": 5, "min_runs": 0}}, "timing.min_runs must be at least 1"),
        ({"tolerance": {"cosine": 1.5, "top1_agreement": 0.99}}, "tolerance.cosine must lie in [-1, 1]"),
        ({"tolerance": {"cosine": 0.9, "top1_agreement": -0.1}}, "tolerance.top1_agreement must lie in [0, 1]"),
        ({"target": {"arch": "riscv64"}}, "target.arch is 'riscv64'"),
        ({"target": {"mode": "unavailable"}}, "target.mode is 'unavailable'"),
        ({"target": {"providers": []}}, "target.providers is empty"),
        ({"target": {"x86_vnni": "no"}}, "target.x86_vnni must be bool, not str 'no'"),
        ({"target": {"providers": ["CPUExecutionProvider", 3]}}, "target.providers[1] must be str, not int 3"),
        ({"outputs": []}, "outputs is empty; give null"),
        ({"outputs": ["probs", "probs"]}, "outputs names an entry twice"),
        ({"metric": {"file": "m.py"}}, "metric.function is missing"),
        ({"tune": []}, "tune must be an object or null"),
        ({"tune": {"start": "u8s8-dynamic"}}, "tune.start is 'u8s8-dynamic'"),
        ({"tuned": {"model": "t.onnx"}}, "tuned.quantization is missing"),
        ({"output": ["probs"]}, "holds unknown keys ['output']"),
        (
            {"bisect": {"variant": "optimized", "threshold_db": 30.0, "limit_bytes": 1 << 30, "samples": 8}},
            "bisect.variant 'optimized' is neither fp32 nor an int8 candidate",
        ),
        (
            {"bisect": {"variant": "fp32", "threshold_db": 30.0, "limit_bytes": 1 << 30, "samples": 8}},
            "bisect.variant fp32 needs bisect.save or bisect.against",
        ),
        (
            {
                "bisect": {
                    "variant": "u8s8-qdq+x64quantprecision",
                    "threshold_db": 30,
                    "limit_bytes": 4096,
                    "samples": 8,
                }
            },
            "bisect.limit_bytes must be at least 1048576",
        ),
        (
            {"bisect": {"variant": "u8s8-qdq", "threshold_db": 30.0, "limit_bytes": 1 << 30}},
            "bisect.samples is missing",
        ),
    ],
)
def test_bad_spec_names_the_key(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    data = spec_dict(tmp_path)
    for key, value in change.items():
        if key == "target":
            data["target"].update(value)
        else:
            data[key] = value
    with pytest.raises(SpecError) as info:
        Spec.from_dict(data, base=tmp_path)
    assert message in str(info.value)


def test_a_spec_reads_back_what_it_writes(tmp_path: Path) -> None:
    data = spec_dict(tmp_path, tune={"floor": 1.5}, tuned={"model": "tuned/t.onnx", "quantization": TUNED_RECORD})
    spec = Spec.from_dict(data, base=tmp_path)
    assert spec.tune is not None and spec.tune.floor == 1.5 and spec.tune.budget_trials is None
    assert spec.tuned is not None and spec.tuned.model == (tmp_path / "tuned" / "t.onnx").resolve()
    assert spec.inputs == (tmp_path / "inputs.npz").resolve() and spec.labels == (tmp_path / "labels.npy").resolve()
    # Written as the job read it, then read again: the same spec (the tune block keeps its own order).
    again = encode(spec)
    assert {k: v for k, v in again.items() if k != "tune"} == {
        **{k: v for k, v in data.items() if k not in ("tune", "model", "inputs", "labels", "artifacts", "tuned")},
        # A spec without a timing mode (written before adaptive timing) times fixed rounds, and says so when written.
        "timing": {**data["timing"], "mode": "fixed", "round_s": 0.25, "min_runs": 5},
        "model": str((tmp_path / "model.onnx").resolve()),
        "inputs": str((tmp_path / "inputs.npz").resolve()),
        "labels": str((tmp_path / "labels.npy").resolve()),
        "artifacts": str((tmp_path / "artifacts").resolve()),
        "tuned": {
            "model": str((tmp_path / "tuned" / "t.onnx").resolve()),
            "quantization": TUNED_RECORD,
        },
    }
    assert Spec.from_dict(json.loads(json.dumps(again)), base=Path("/elsewhere")) == spec


def test_a_spec_error_is_the_codec_s_contract_error() -> None:
    assert issubclass(SpecError, ContractError)


def test_missing_key(tmp_path: Path) -> None:
    data = spec_dict(tmp_path)
    del data["tolerance"]
    with pytest.raises(SpecError, match="tolerance is missing"):
        Spec.from_dict(data, base=tmp_path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        Spec.from_file(tmp_path / "absent.json")
    (tmp_path / "spec.json").write_text("{not json")
    with pytest.raises(SpecError, match="is not JSON"):
        Spec.from_file(tmp_path / "spec.json")
    (tmp_path / "spec.json").write_text("[]")
    with pytest.raises(SpecError, match="must be a JSON object"):
        Spec.from_file(tmp_path / "spec.json")
