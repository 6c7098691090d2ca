"""farm.job end to end on the host's real onnxruntime: prepare, then evaluate, as the controller runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnxruntime.quantization import quant_pre_process

from farm.job import quantize
from farm.job.codec import encode
from farm.job.evaluate import run_evaluate
from farm.job.prepare import run_prepare
from farm.job.spec import Spec
from farm.report.schema import validate_target
from tests.modelgen import (
    CANDIDATES,
    make_dynamic_batch_cnn,
    make_if_branch_model,
    make_mlp_classifier,
    make_saturating_classifier,
    make_scalar_input_classifier,
    make_sequence_and_state_model,
    make_unloadable_model,
    write_job_spec,
)

ROOT = Path(__file__).resolve().parents[2]
VARIANT_KEYS = [
    "name", "status", "error", "size_bytes", "latency_ms", "timing", "accuracy", "within_tolerance", "quantization",
    "failure_class", "providers",
]  # fmt: skip
TARGET_KEYS = [
    "name", "platform", "mode", "cpu_model", "status", "reason", "runtime", "variants", "recommended",
    "recommendation_reason", "warnings", "exit_code", "log_tail", "duration_s", "image", "cpu_seen", "load_failure",
    "export_check", "resume_key", "resumed_from", "backend", "speed_evidence", "int8_if_needed",
]  # fmt: skip
WITH_MITIGATION = [
    "fp32", "optimized", "s8s8-qdq", "u8s8-qdq", "u8s8-qdq+x64quantprecision", "u8s8-qdq-rr",
    "u8s8-qdq-rr+x64quantprecision", "u8u8-qdq", "u8s8-dynamic", "u8s8-dynamic+x64quantprecision",
]  # fmt: skip


def job(spec: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm.job", str(spec), str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def prepared(tmp_path: Path, **spec: Any) -> Path:
    """Run prepare in-process and put its artifacts where evaluate's spec expects them; returns the input dir."""
    run_prepare(Spec.from_file(write_job_spec(tmp_path, stage="prepare", **spec)), tmp_path / "prep")
    shutil.copytree(tmp_path / "prep" / "artifacts", tmp_path / "artifacts")
    return tmp_path


def test_prepare_then_evaluate_through_the_cli(tmp_path: Path) -> None:
    data = make_mlp_classifier(tmp_path / "model.onnx")
    data.save(tmp_path)
    done = job(write_job_spec(tmp_path, stage="prepare"), tmp_path / "prep")
    assert done.returncode == 0, done.stderr
    prepare = read(tmp_path / "prep" / "prepare.json")
    assert prepare["schema"] == "farm.prepare/1"
    assert {n: v["status"] for n, v in prepare["variants"].items()} == dict.fromkeys(CANDIDATES, "ok")
    assert prepare["variants"]["u8s8-qdq-rr"]["quantization"]["reduce_range"] is True
    for name in CANDIDATES:
        assert (tmp_path / "prep" / "artifacts" / f"{name}.onnx").is_file()

    shutil.copytree(tmp_path / "prep" / "artifacts", tmp_path / "artifacts")
    done = job(write_job_spec(tmp_path, stage="evaluate"), tmp_path / "out")
    assert done.returncode == 0, done.stderr
    result = read(tmp_path / "out" / "result.json")
    validate_target(result)
    assert list(result) == TARGET_KEYS
    assert result["status"] == "ok" and result["reason"] is None
    assert result["runtime"] == {"onnxruntime": ort.__version__, "providers": ["CPUExecutionProvider"]}
    assert [v["name"] for v in result["variants"]] == WITH_MITIGATION
    for variant in result["variants"]:
        assert list(variant) == VARIANT_KEYS
        assert variant["status"] == "ok", variant
        assert variant["within_tolerance"] is True, variant
        assert variant["timing"] == "measured" and variant["size_bytes"] > 0
    fp32 = result["variants"][0]["accuracy"]
    assert fp32 == {
        "cosine": 1.0,
        "max_abs": 0.0,
        "top1_agreement": 1.0,
        "accuracy": 1.0,
        "worst_output": "logits",
        "metric": None,
        "outputs": [{"name": "logits", "counted": True, "cosine": 1.0, "max_abs": 0.0, "top1_agreement": 1.0}],
    }
    for variant in result["variants"][2:]:
        assert variant["quantization"]["nodes"] == {
            "quantizable": 2,
            "quantized": 2,
            "quantizable_in_subgraphs": 0,
            "quantized_in_subgraphs": 0,
        }
    assert result["recommended"] in WITH_MITIGATION and result["recommendation_reason"]
    # Timed on this machine, every variant within tolerance: an int8 variant to ship if int8 is needed.
    assert result["speed_evidence"] == "measured" and result["int8_if_needed"] in WITH_MITIGATION[2:]
    assert [result[k] for k in ("exit_code", "log_tail", "duration_s", "image")] == [None] * 4

    with np.load(tmp_path / "out" / "outputs" / "fp32.npz") as npz:
        logits = npz["logits"]
    session = ort.InferenceSession(str(data.path), providers=["CPUExecutionProvider"])
    assert logits.shape == (32, 1, 10)
    np.testing.assert_allclose(logits[3], session.run(None, {"x": data.inputs["x"][3]})[0], rtol=1e-6)


def test_unloadable_model_reports_the_runtime_error_verbatim(tmp_path: Path) -> None:
    make_unloadable_model(tmp_path / "model.onnx").save(tmp_path)
    with pytest.raises(Exception) as info:  # what ORT itself says about this file
        ort.InferenceSession(str((tmp_path / "model.onnx").resolve()), providers=["CPUExecutionProvider"])
    done = job(write_job_spec(tmp_path, labels=None, artifacts=None), tmp_path / "out")
    assert done.returncode == 0, done.stderr
    result = read(tmp_path / "out" / "result.json")
    validate_target(result)
    assert result["status"] == "failed"
    assert result["reason"] == str(info.value)
    assert "Unsupported model IR version: 99" in result["reason"]
    assert [(v["name"], v["status"], v["error"]) for v in result["variants"]] == [("fp32", "failed", str(info.value))]
    assert result["recommended"] is None


def test_bad_spec_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    done = job(write_job_spec(tmp_path, threads=0), tmp_path / "out")
    assert done.returncode == 2
    assert "bad spec: threads must be at least 1" in done.stderr
    assert not (tmp_path / "out" / "result.json").exists()
    assert job(tmp_path / "spec.json", tmp_path / "out").returncode == 2  # still bad; and usage:
    assert subprocess.run([sys.executable, "-m", "farm.job"], cwd=ROOT, capture_output=True).returncode == 2


def test_pre_process_falls_back_to_skipping_symbolic_shapes(tmp_path: Path) -> None:
    make_mlp_classifier(tmp_path / "model.onnx")
    calls: list[dict[str, Any]] = []

    def flaky(source: str, destination: str, **kwargs: Any) -> None:
        calls.append(kwargs)
        if not kwargs.get("skip_symbolic_shape"):
            raise AssertionError()  # as _infer_Concat fails on some real models: no message at all
        quant_pre_process(source, destination, **kwargs)

    warnings = quantize.pre_process(tmp_path / "model.onnx", tmp_path / "pre.onnx", run=flaky)
    assert calls == [{}, {"skip_symbolic_shape": True}]
    assert (tmp_path / "pre.onnx").is_file()
    assert warnings == [
        "quant_pre_process: symbolic shape inference failed (AssertionError: no message); "
        "retried with skip_symbolic_shape=True, so quantization may miss tensors of unknown shape"
    ]


def test_prepare_quantizes_the_model_as_given_when_pre_processing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("no shapes today")

    monkeypatch.setattr(quantize, "quant_pre_process", broken)
    make_mlp_classifier(tmp_path / "model.onnx").save(tmp_path)
    state = run_prepare(Spec.from_file(write_job_spec(tmp_path, stage="prepare")), tmp_path / "prep")
    # The same cause twice is said once (it used to be printed twice, the second time cut off).
    assert state["warnings"] == [
        "quant_pre_process failed with and without symbolic shape inference (RuntimeError: no shapes today); "
        "quantizing the model without pre-processing"
    ]
    assert {v["status"] for v in state["variants"].values()} == {"ok"}
    assert read(tmp_path / "prep" / "artifacts" / "prepare.json") == state


def test_one_broken_variant_does_not_stop_the_others(tmp_path: Path) -> None:
    make_mlp_classifier(tmp_path / "model.onnx").save(tmp_path)
    prepared(tmp_path, candidates=["u8u8-qdq", "s8s8-qdq"])
    (tmp_path / "artifacts" / "u8u8-qdq.onnx").write_bytes(b"not a model")
    result = run_evaluate(Spec.from_file(write_job_spec(tmp_path, candidates=CANDIDATES[:4])), tmp_path / "out")
    status = {v.name: (v.status, v.error) for v in result.variants}
    assert status["s8s8-qdq"] == ("ok", None)
    assert status["u8u8-qdq"][0] == "failed" and "INVALID_PROTOBUF" in str(status["u8u8-qdq"][1])
    # u8s8-qdq was never asked of prepare: its model (and so its mitigation's) is missing.
    assert status["u8s8-qdq"] == ("failed", "artifacts/u8s8-qdq.onnx is missing (prepare did not make it)")
    assert status["u8s8-qdq+x64quantprecision"][0] == "failed"
    assert result.status == "ok"
    assert read(tmp_path / "out" / "result.json") == encode(result)


def test_a_variant_that_failed_in_prepare_carries_the_quantizer_error(tmp_path: Path) -> None:
    make_mlp_classifier(tmp_path / "model.onnx").save(tmp_path)
    prepared(tmp_path, candidates=["u8u8-qdq"])
    state = read(tmp_path / "artifacts" / "prepare.json")
    state["variants"]["u8u8-qdq"] = {"status": "failed", "error": "ValueError: bad calibration", "quantization": None}
    (tmp_path / "artifacts" / "prepare.json").write_text(json.dumps(state))
    (tmp_path / "artifacts" / "u8u8-qdq.onnx").unlink()
    result = run_evaluate(Spec.from_file(write_job_spec(tmp_path, candidates=["u8u8-qdq"])), tmp_path / "out")
    assert result.variants[-1].error == "quantization failed in prepare: ValueError: bad calibration"


def test_scalar_inputs_reach_the_runtime_and_the_calibrator_as_0d_arrays(tmp_path: Path) -> None:
    make_scalar_input_classifier(tmp_path / "model.onnx").save(tmp_path)
    prepared(tmp_path, candidates=["u8u8-qdq"])
    result = run_evaluate(Spec.from_file(write_job_spec(tmp_path, candidates=["u8u8-qdq"])), tmp_path / "out")
    assert [(v.name, v.status) for v in result.variants] == [("fp32", "ok"), ("optimized", "ok"), ("u8u8-qdq", "ok")]


def test_emulated_target_labels_its_timings_and_skips_mitigations_with_vnni(tmp_path: Path) -> None:
    make_saturating_classifier(tmp_path / "model.onnx").save(tmp_path)
    # u8u8 passes on any host; u8s8 saturates where this test runs without VNNI, so it only checks the names.
    prepared(tmp_path, candidates=["u8s8-qdq", "u8u8-qdq"])
    target = {"mode": "emulated", "cpu_model": "Icelake-Server", "x86_vnni": True}
    spec = write_job_spec(tmp_path, candidates=["u8s8-qdq", "u8u8-qdq"], target=target)
    result = run_evaluate(Spec.from_file(spec), tmp_path / "out")
    assert [v.name for v in result.variants] == ["fp32", "optimized", "u8s8-qdq", "u8u8-qdq"]
    assert {v.timing for v in result.variants} == {"emulated"}
    assert result.recommendation_reason is not None
    assert result.recommendation_reason.startswith(f"speed unknown on {result.name} (QEMU wall time is no speed")
    assert result.speed_evidence == "none" and result.recommended in ("fp32", "optimized")


def test_no_timing_runs_leave_latency_null(tmp_path: Path) -> None:
    make_mlp_classifier(tmp_path / "model.onnx").save(tmp_path)
    spec = write_job_spec(tmp_path, candidates=[], timing={"warmup": 0, "iterations": 0, "rounds": 1})
    result = run_evaluate(Spec.from_file(spec), tmp_path / "out")
    assert [(v.latency_ms, v.timing) for v in result.variants] == [(None, "none"), (None, "none")]


def test_bad_labels_fail_the_target_with_the_reason(tmp_path: Path) -> None:
    make_mlp_classifier(tmp_path / "model.onnx").save(tmp_path)
    np.save(tmp_path / "labels.npy", np.zeros(3, dtype=np.int64))
    result = run_evaluate(Spec.from_file(write_job_spec(tmp_path)), tmp_path / "out")
    assert result.status == "failed"
    assert result.reason == "labels.npy must be an int array of shape (32,), not int64 of shape (3,)"


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this host has CUDA")
def test_gpu_target_that_falls_back_to_cpu_fails(tmp_path: Path) -> None:
    make_mlp_classifier(tmp_path / "model.onnx").save(tmp_path)
    target = {"name": "gpu-s8s8", "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"], "x86_vnni": None}
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        result = run_evaluate(Spec.from_file(write_job_spec(tmp_path, target=target)), tmp_path / "out")
    assert result.status == "failed"
    assert result.reason is not None
    assert result.reason.startswith("fell back to CPU: CUDAExecutionProvider was requested but the session uses")


def test_a_crash_mid_variant_leaves_a_file_that_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from farm.job import session
    from farm.job.evaluate import measure

    make_mlp_classifier(tmp_path / "model.onnx").save(tmp_path)
    prepared(tmp_path, candidates=["u8u8-qdq"])
    real_open = session.open_session

    def dies_on_u8u8(path: Path, **kwargs: Any) -> Any:
        if path.name == "u8u8-qdq.onnx":
            raise KeyboardInterrupt  # stands in for a kill: nothing in the job may swallow it
        return real_open(path, **kwargs)

    monkeypatch.setattr(measure, "open_session", dies_on_u8u8)
    with pytest.raises(KeyboardInterrupt):
        run_evaluate(Spec.from_file(write_job_spec(tmp_path, candidates=["u8u8-qdq"])), tmp_path / "out")
    result = read(tmp_path / "out" / "result.json")
    validate_target(result)
    assert result["status"] == "failed"
    assert result["reason"] == "the job ended before it finished, while running u8u8-qdq"
    assert [(v["name"], v["status"]) for v in result["variants"]] == [
        ("fp32", "ok"),
        ("optimized", "ok"),
        ("u8u8-qdq", "failed"),
    ]
    assert "ended while running this variant" in result["variants"][-1]["error"]


def test_the_job_ships_alone(tmp_path: Path) -> None:
    """Only farm/__init__.py and farm/job/ go into the images: importing the job must pull in no other farm module."""
    (tmp_path / "farm").mkdir()
    shutil.copy(ROOT / "farm" / "__init__.py", tmp_path / "farm")
    shutil.copytree(ROOT / "farm" / "job", tmp_path / "farm" / "job", ignore=shutil.ignore_patterns("__pycache__"))
    probe = (
        "import json, sys, farm.job.__main__, farm.job.evaluate, farm.job.prepare; "
        "print(json.dumps(sorted(m for m in sys.modules if m.partition('.')[0] in ('farm', 'tests', 'docker'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    modules = json.loads(done.stdout)
    assert "farm.job.evaluate" in modules and "farm.job.quantize" in modules
    assert all(m in ("farm", "farm.job") or m.startswith("farm.job.") for m in modules), modules


def test_cuda_libraries_from_the_nvidia_wheels_are_preloaded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from farm.job import session

    calls: list[None] = []
    monkeypatch.setattr(session, "_cuda_preloaded", False)
    monkeypatch.setattr(ort, "preload_dlls", lambda: calls.append(None), raising=False)
    session.preload_cuda(("CPUExecutionProvider",))
    assert calls == []
    session.preload_cuda(("CUDAExecutionProvider", "CPUExecutionProvider"))
    session.preload_cuda(("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert calls == [None]


# Issue 6: real-model shapes, on the host's onnxruntime (the same code runs in every target's image).

ALL_CANDIDATES = [*CANDIDATES, "s8s8-qdq-pc", "u8s8-qdq-pc", "u8s8-dynamic-subgraph"]


def evaluated(tmp_path: Path, **spec: Any) -> Any:
    prepared(tmp_path, **spec)
    return run_evaluate(Spec.from_file(write_job_spec(tmp_path, **spec)), tmp_path / "out")


def test_compute_inside_if_branches_is_not_called_quantized(tmp_path: Path) -> None:
    make_if_branch_model(tmp_path / "model.onnx").save(tmp_path)
    result = evaluated(tmp_path, labels=None, candidates=["u8s8-qdq", "u8s8-dynamic", "u8s8-dynamic-subgraph"])
    by_name = {v.name: v for v in result.variants}
    for name in ("u8s8-qdq", "u8s8-qdq+x64quantprecision", "u8s8-dynamic"):
        variant = by_name[name]
        assert variant.status == "skipped" and variant.quantization.nodes.quantized == 0, variant
        assert variant.error.startswith("not quantized: all 4 quantizable nodes sit inside If/Loop/Scan bodies")
        assert "u8s8-dynamic-subgraph quantizes inside them" in variant.error
    subgraph = by_name["u8s8-dynamic-subgraph"]
    assert subgraph.status == "ok" and subgraph.quantization.subgraphs is True
    assert encode(subgraph.quantization.nodes) == {
        "quantizable": 4,
        "quantized": 4,
        "quantizable_in_subgraphs": 4,
        "quantized_in_subgraphs": 4,
    }
    assert result.recommended not in ("u8s8-qdq", "u8s8-qdq+x64quantprecision", "u8s8-dynamic")
    validate_target(read(tmp_path / "out" / "result.json"))


def test_per_channel_variants_of_an_opset_11_model_are_made_at_opset_13(tmp_path: Path) -> None:
    make_dynamic_batch_cnn(tmp_path / "model.onnx").save(tmp_path)
    state = run_prepare(
        Spec.from_file(write_job_spec(tmp_path, stage="prepare", candidates=ALL_CANDIDATES[:7])), tmp_path / "prep"
    )
    assert any("converted from opset 11 to 13" in w for w in state["warnings"]), state["warnings"]
    assert sum("converted from opset" in w for w in state["warnings"]) == 1  # once, for both variants
    for name in ("s8s8-qdq-pc", "u8s8-qdq-pc"):
        record = state["variants"][name]
        assert record["status"] == "ok", record
        assert record["quantization"]["per_channel"] is True and record["quantization"]["opset"] == 13
        ort.InferenceSession(str(tmp_path / "prep" / "artifacts" / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    assert state["variants"]["s8s8-qdq"]["quantization"]["opset"] == 11


def test_each_output_is_judged_and_the_drifting_one_is_named(tmp_path: Path) -> None:
    make_sequence_and_state_model(tmp_path / "model.onnx").save(tmp_path)
    result = evaluated(tmp_path, labels=None, candidates=["u8s8-qdq"])
    variant = next(v for v in result.variants if v.name == "u8s8-qdq")
    assert variant.within_tolerance is False and variant.accuracy.worst_output == "probs"
    probs, state = variant.accuracy.outputs
    assert (probs.name, state.name) == ("probs", "state")
    assert probs.top1_agreement is not None and probs.top1_agreement < 0.99  # per position, over [1, T, C]
    assert state.top1_agreement is None and state.cosine > 0.9999


def test_outputs_chosen_by_name_make_the_verdict(tmp_path: Path) -> None:
    make_sequence_and_state_model(tmp_path / "model.onnx").save(tmp_path)
    result = evaluated(tmp_path, labels=None, candidates=["u8s8-qdq"], outputs=["state"])
    variant = next(v for v in result.variants if v.name == "u8s8-qdq")
    assert variant.within_tolerance is True and variant.accuracy.worst_output == "state"
    assert [o.counted for o in variant.accuracy.outputs] == [False, True]


METRIC = '''
import numpy as np

calls = 0


def strict(fp32, outputs, labels):
    """Passes only bit-exact outputs: every int8 variant fails, however close its cosine."""
    exact = all(np.array_equal(fp32[name], outputs[name]) for name in fp32)
    return {"passed": exact, "exact": float(exact)}


def flaky(fp32, outputs, labels):
    """Raises on its third call (s8s8-qdq, after fp32 and optimized) and passes everything else."""
    global calls
    calls += 1
    if calls == 3:
        raise ValueError("third call")
    agree = float(np.mean(fp32["logits"].argmax(-1) == outputs["logits"].argmax(-1)))
    return {"passed": True, "top1": agree}
'''


def test_a_metric_decides_the_verdict_and_its_failure_stays_with_one_variant(tmp_path: Path) -> None:
    make_mlp_classifier(tmp_path / "model.onnx").save(tmp_path)
    (tmp_path / "metric").mkdir()
    (tmp_path / "metric" / "check.py").write_text(METRIC)
    strict = evaluated(
        tmp_path, candidates=["s8s8-qdq", "u8u8-qdq"], metric={"file": "metric/check.py", "function": "strict"}
    )
    by_name = {v.name: v for v in strict.variants}
    assert by_name["fp32"].within_tolerance is True
    assert by_name["u8u8-qdq"].accuracy.cosine > 0.99  # the built-in figures would pass it ...
    assert by_name["u8u8-qdq"].within_tolerance is False  # ... the metric does not
    assert encode(by_name["u8u8-qdq"].accuracy.metric) == {"scores": {"exact": 0.0}, "passed": False}
    assert strict.recommended in ("fp32", "optimized")

    flaky = run_evaluate(
        Spec.from_file(
            write_job_spec(
                tmp_path,
                candidates=["s8s8-qdq", "u8u8-qdq"],
                metric={"file": "metric/check.py", "function": "flaky"},
                tolerance={"cosine": 1.0, "top1_agreement": 1.0},
            )
        ),
        tmp_path / "out2",
    )
    by_name = {v.name: v for v in flaky.variants}
    assert flaky.status == "ok"
    assert by_name["s8s8-qdq"].status == "failed"
    assert by_name["s8s8-qdq"].error == "metric flaky raised ValueError: third call"
    assert by_name["u8u8-qdq"].status == "ok" and by_name["u8u8-qdq"].within_tolerance is True
    assert by_name["u8u8-qdq"].accuracy.cosine < 1.0  # cosine 1.0 was required; the metric said pass
    validate_target(read(tmp_path / "out2" / "result.json"))


def test_variants_are_timed_in_alternating_rounds(tmp_path: Path) -> None:
    make_mlp_classifier(tmp_path / "model.onnx").save(tmp_path)
    result = evaluated(tmp_path, candidates=["u8u8-qdq"], timing={"warmup": 1, "iterations": 20, "rounds": 4})
    for variant in result.variants:
        assert variant.latency_ms is not None and variant.latency_ms.interleaved is True
        assert len(variant.latency_ms.rounds) == 4
        rounds = variant.latency_ms.rounds
        assert variant.latency_ms.spread == pytest.approx(max(rounds) - min(rounds), abs=1e-4)


def test_a_metric_file_with_dataclasses_loads_and_cannot_change_the_reference(tmp_path: Path) -> None:
    from farm.job import usermetric

    (tmp_path / "metric.py").write_text(
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n"
        "import numpy as np\n\n"
        "@dataclass\nclass Threshold:\n    value: float\n\n"
        "def check(fp32, outputs, labels):\n"
        "    reference = fp32.pop('y')  # a careless metric: it empties the dict it was given\n"
        "    reference *= 0\n"
        "    return {'passed': True, 'agree': np.mean(outputs['y'] == 1.0)}\n"
    )
    metric = usermetric.load(tmp_path / "metric.py", "check")
    reference = {"y": np.ones((2, 3), np.float32)}
    for _ in range(2):
        score = usermetric.score(metric, "check", reference, {"y": np.ones((2, 3), np.float32)}, None)
        assert score.passed and score.scores == {"agree": 1.0}  # a 0-d numpy result is a number
    assert np.array_equal(reference["y"], np.ones((2, 3), np.float32))


class _Session:
    """Stands in for an InferenceSession in the timing loop: records the order of runs, fails when told to."""

    def __init__(self, name: str, calls: list[str], fail_after: int | None = None) -> None:
        self.name, self.calls, self.fail_after = name, calls, fail_after

    def run(self, _: Any, feed: Any) -> None:
        if self.fail_after is not None and sum(c == self.name for c in self.calls) >= self.fail_after:
            raise RuntimeError(f"{self.name} broke")
        self.calls.append(self.name)


def test_timing_rounds_alternate_and_one_broken_session_keeps_the_others() -> None:
    from farm.job.timing import time_rounds

    calls: list[str] = []
    sessions = [_Session("a", calls), _Session("b", calls), _Session("c", calls, fail_after=3)]
    results = time_rounds(sessions, [{}], warmup=1, iterations=4, rounds=2)
    # Warm-up once each, then round 1 (two runs each), then round 2, which starts one session later (b, c, a); c broke
    # after its third run.
    assert calls == ["a", "b", "c", "a", "a", "b", "b", "c", "c", "b", "b", "a", "a"]
    assert isinstance(results[2], RuntimeError)
    for latency in results[:2]:
        assert not isinstance(latency, Exception)
        assert len(latency.rounds) == 2 and latency.interleaved


def test_the_export_check_names_a_reshape_that_baked_in_batch_1(tmp_path: Path) -> None:
    from tests.modelgen import make_traced_batch_model

    make_traced_batch_model(tmp_path / "model.onnx").save(tmp_path)
    result = evaluated(tmp_path, labels=None, candidates=[])
    check = result.export_check
    assert check is not None and check.status == "flagged", check
    assert (check.node, check.op) == ("flatten", "Reshape"), check
    assert "fails at" not in check.detail and "the batch of 2 fails" in check.detail
    assert any(w.startswith("export pitfall:") and "'flatten'" in w for w in result.warnings)
    fixed = tmp_path / "fixed"
    make_traced_batch_model(fixed / "model.onnx", baked=False).save(fixed)
    passed = evaluated(fixed, labels=None, candidates=[]).export_check
    assert passed is not None and passed.status == "passed"


def test_each_variant_records_which_provider_ran_its_nodes_and_an_idle_accelerator_fails_the_target(
    tmp_path: Path,
) -> None:
    make_mlp_classifier(tmp_path / "model.onnx").save(tmp_path)
    result = evaluated(tmp_path, candidates=["u8u8-qdq"])
    for variant in result.variants:
        assert variant.providers and set(variant.providers) == {"CPUExecutionProvider"}, variant
    if "AzureExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no second provider to stand for an accelerator")
    # The Azure provider registers with every session and runs no local node: an accelerator in name only.
    idle = run_evaluate(
        Spec.from_file(
            write_job_spec(
                tmp_path, candidates=[], target={"providers": ["AzureExecutionProvider", "CPUExecutionProvider"]}
            )
        ),
        tmp_path / "idle",
    )
    assert idle.status == "failed", idle
    # The session lists the provider, so only the count of nodes it ran shows that it ran none.
    assert idle.reason == (
        "AzureExecutionProvider ran none of the model's 2 nodes (CPUExecutionProvider 2): every "
        "node fell back, so nothing here would measure the accelerator"
    )
