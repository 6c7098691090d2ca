"""An emulated target's variants and the prepare stage's quantizing, shared out among workers (farm.job.pool), run
in-process on this host without an engine: the same result as one after another, in the same order, and a worker
that dies costs its variant only. The target is only labelled emulated here (the job does not check that QEMU runs
it), which is all that decides whether its variants spread."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from farm.job.capacity import WORKERS_ENV
from farm.job.evaluate import run_evaluate
from farm.job.evaluate.measure import VariantMeasure
from farm.job.pool import run_pool
from farm.job.prepare import run_prepare
from farm.job.quantize import quantize
from farm.job.report import TargetResult, Variant
from farm.job.spec import Spec
from farm.job.variants import MITIGATION_SUFFIX
from tests.countingfake import fake_marks
from tests.modelgen import make_mlp_classifier, write_job_spec

EMULATED = {"mode": "emulated", "cpu_model": "Haswell"}
# Emulated targets are not timed (docs/contracts.md section 2).
UNTIMED = {"warmup": 0, "iterations": 0, "rounds": 1}
PROFILE = {"threads": [1], "budget_s": 600.0}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("spread")
    make_mlp_classifier(folder / "model.onnx").save(folder)
    run_prepare(Spec.from_file(write_job_spec(folder, stage="prepare")), folder / "prep")
    shutil.copytree(folder / "prep" / "artifacts", folder / "artifacts")
    return folder


def evaluate(folder: Path, out: str, workers: int, monkeypatch: pytest.MonkeyPatch, **spec: Any) -> TargetResult:
    monkeypatch.setenv(WORKERS_ENV, str(workers))
    path = write_job_spec(folder, name=f"{out}.json", target=EMULATED, timing=UNTIMED, **spec)
    return run_evaluate(Spec.from_file(path), folder / out)


def figures(result: TargetResult) -> list[tuple[Any, ...]]:
    """What a variant's evaluation decides, without the profile (a process's memory is never the same twice)."""
    return [(v.name, v.status, v.error, v.accuracy, v.size_bytes, v.quantization, v.providers) for v in result.variants]


def test_workers_give_the_serial_result_in_the_serial_order(prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serial = evaluate(prepared, "serial", 1, monkeypatch, profile=PROFILE)
    spread = evaluate(prepared, "spread", 3, monkeypatch, profile=PROFILE)
    assert serial.status == spread.status == "ok"
    names = [v.name for v in spread.variants]
    # fp32, optimized, each candidate followed by its mitigation (x86 without VNNI): as one process ran them.
    assert names[:2] == ["fp32", "optimized"]
    assert names.index("u8s8-qdq" + MITIGATION_SUFFIX) == names.index("u8s8-qdq") + 1
    assert figures(spread) == figures(serial)
    assert all(v.status == "ok" for v in spread.variants)
    # The job asked for every ok variant's profile itself (the workers never touch the server's pipes).
    assert all(v.profile is not None and v.profile.memory == "guest-heap" for v in spread.variants)
    assert (spread.recommended, spread.int8_if_needed) == (serial.recommended, serial.int8_if_needed)
    written = json.loads((prepared / "spread" / "result.json").read_text())
    assert [v["name"] for v in written["variants"]] == names


STRICT = """
import numpy as np


def strict(fp32, outputs, labels):
    exact = all(np.array_equal(fp32[name], outputs[name]) for name in fp32)
    return {"passed": exact, "exact": float(exact)}
"""


def test_the_metric_and_the_tuned_variant_are_measured_in_workers_as_in_one_process(
    prepared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (prepared / "metric").mkdir(exist_ok=True)
    (prepared / "metric" / "check.py").write_text(STRICT)
    (prepared / "tuned").mkdir(exist_ok=True)
    shutil.copy(prepared / "artifacts" / "u8s8-qdq.onnx", prepared / "tuned" / "t.onnx")
    record = json.loads((prepared / "artifacts" / "prepare.json").read_text())["variants"]["u8s8-qdq"]["quantization"]
    extra: dict[str, Any] = {
        "metric": {"file": "metric/check.py", "function": "strict"},
        "tuned": {"model": "tuned/t.onnx", "quantization": record},
    }
    serial = evaluate(prepared, "metric-serial", 1, monkeypatch, **extra)
    spread = evaluate(prepared, "metric-spread", 2, monkeypatch, **extra)
    assert figures(spread) == figures(serial)
    assert [v.name for v in spread.variants][-1] == "tuned"
    tuned = spread.variant("tuned")
    assert tuned is not None and tuned.accuracy is not None and tuned.accuracy.metric is not None
    assert tuned.within_tolerance is False  # the metric's verdict, as in one process


def test_a_worker_that_dies_costs_its_variant_only(prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    measured, job = VariantMeasure.variant, os.getpid()

    def crashes_on_u8u8(self: VariantMeasure, name: str, path: Path, config: dict[str, str] | None = None) -> Variant:
        if name == "u8u8-qdq" and os.getpid() != job:
            os._exit(139)  # as a QEMU segfault ends a worker: no answer, no cleanup
        return measured(self, name, path, config)

    monkeypatch.setattr(VariantMeasure, "variant", crashes_on_u8u8)
    result = evaluate(prepared, "crash", 2, monkeypatch)
    assert result.status == "ok"
    lost = result.variant("u8u8-qdq")
    assert lost is not None and lost.status == "failed" and lost.quantization is not None
    assert lost.error == ("the worker process running it exited (139) before it answered; the other variants went on")
    others = [v for v in result.variants if v.name != "u8u8-qdq"]
    assert all(v.status == "ok" for v in others)
    monkeypatch.setattr(VariantMeasure, "variant", measured)
    serial = evaluate(prepared, "serial-order", 1, monkeypatch)
    assert [v.name for v in result.variants] == [v.name for v in serial.variants]


def test_prepare_in_workers_writes_what_one_process_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_mlp_classifier(tmp_path / "model.onnx").save(tmp_path)
    spec = Spec.from_file(write_job_spec(tmp_path, stage="prepare"))
    monkeypatch.setenv(WORKERS_ENV, "1")
    serial = run_prepare(spec, tmp_path / "serial")
    monkeypatch.setenv(WORKERS_ENV, "3")
    spread = run_prepare(spec, tmp_path / "spread")
    assert spread == serial
    assert list(spread["variants"]) == list(spec.candidates)
    assert json.loads((tmp_path / "spread" / "artifacts" / "prepare.json").read_text()) == serial
    for name in spec.candidates:
        assert (tmp_path / "spread" / "artifacts" / f"{name}.onnx").read_bytes() == (
            tmp_path / "serial" / "artifacts" / f"{name}.onnx"
        ).read_bytes()
    assert not (tmp_path / "spread" / "quantizing").exists()


def test_a_prepare_worker_that_dies_costs_its_variant_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = os.getpid()

    def crashes_on_u8s8_qdq(name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if name == "u8s8-qdq" and os.getpid() != job:
            os.kill(os.getpid(), 9)
        return quantize(name, *args, **kwargs)

    monkeypatch.setattr("farm.job.prepare.quantize", crashes_on_u8s8_qdq)
    monkeypatch.setenv(WORKERS_ENV, "2")
    make_mlp_classifier(tmp_path / "model.onnx").save(tmp_path)
    spec = Spec.from_file(write_job_spec(tmp_path, stage="prepare"))
    state = run_prepare(spec, tmp_path / "prep")
    assert list(state["variants"]) == list(spec.candidates)
    lost = state["variants"]["u8s8-qdq"]
    assert lost["status"] == "failed" and "was killed (SIGKILL) before it answered" in lost["error"]
    assert not (tmp_path / "prep" / "artifacts" / "u8s8-qdq.onnx").exists()
    assert all(v["status"] == "ok" for n, v in state["variants"].items() if n != "u8s8-qdq")


def test_with_an_estimate_the_job_counts_every_variant_before_its_workers_start(
    prepared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = prepared / "estimated"
    out.mkdir()
    per_run = {"int_simd_mul": 1000, "load": 500, "scalar": 700}
    fake_marks(monkeypatch, out, per_run)
    counted_before: list[int] = []

    def pool_after_counting(*args: Any, **kwargs: Any) -> None:
        # The job's memory is the same in every run only before the workers' answers: counting is done by now.
        counted_before.append(len((out / "counts.jsonl").read_text().splitlines()))
        run_pool(*args, **kwargs)

    monkeypatch.setattr("farm.job.evaluate.spread.run_pool", pool_after_counting)
    result = evaluate(
        prepared, "estimated", 3, monkeypatch, estimate={"cost_model": "haswell", "runs": 2, "budget_s": 600.0}
    )
    assert result.status == "ok", result.warnings
    ok = [v for v in result.variants if v.status == "ok"]
    assert len(ok) > 2 and all(v.timing == "estimated" and v.instructions is not None for v in ok), [
        (v.name, v.timing) for v in ok
    ]
    # fp32 and every variant that runs in a worker counted in the job before the pool started.
    assert counted_before == [2 * len(ok)], counted_before
    assert not [w for w in result.warnings if "could not be counted" in w], result.warnings
