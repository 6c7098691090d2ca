"""farm.job.estimate: the cost models, what trust.json says, and the estimate phase of the job, with the counting
plugin's side played by a fake system call that writes what the plugin writes (the real plugin's test is
tests/integration/test_counting.py)."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest

from farm.job.estimate.costs import CLASSES, CostModel, cost_model_for, cost_models, trust
from farm.job.estimate.marks import Marks, NotCounting
from farm.job.evaluate import counted, fp32, measure, run_evaluate
from farm.job.evaluate.counted import WARMUP, _count
from farm.job.reference import Reference
from farm.job.session import open_session
from farm.job.spec import Spec
from tests.countingfake import fake_marks
from tests.modelgen import make_mlp_classifier, write_job_spec

MODEL = CostModel(name="m", arch="x86_64", qemu_cpu="X", ghz=2.0, cycles={"load": 0.5, "fp_simd_fma": 1.0})


def test_a_cost_model_prices_each_class_at_its_cycles() -> None:
    assert MODEL.seconds({"load": 4_000_000_000, "fp_simd_fma": 1_000_000_000}) == pytest.approx(1.5)
    latency = MODEL.latency([{"load": 4_000_000}, {"load": 8_000_000}])
    assert latency.rounds == (1.0, 2.0) and latency.p50 == pytest.approx(1.5)
    with pytest.raises(ValueError, match="prices no instruction class branch"):
        MODEL.seconds({"branch": 1})


def test_every_shipped_cost_model_prices_every_class_with_a_source() -> None:
    costs = json.loads(Path("farm/job/estimate/costs.json").read_text())["models"]
    assert set(costs) == {"haswell", "neoverse-n1"}
    for name, model in costs.items():
        assert set(model["cycles"]) == set(CLASSES) == set(model["sources"]), name
        assert all(value > 0 for value in model["cycles"].values()) and model["ghz"] > 0
    assert cost_model_for("x86_64", "Haswell") == cost_models()["haswell"]
    assert cost_model_for("aarch64", "neoverse-n1") == cost_models()["neoverse-n1"]
    assert cost_model_for("aarch64", "cortex-a72") is None and cost_model_for("x86_64", None) is None


def test_an_estimate_nobody_validated_is_untrusted(tmp_path: Path) -> None:
    arm = trust(cost_models()["neoverse-n1"])
    assert not arm.trusted and "real ARM engine" in arm.basis
    empty = tmp_path / "trust.json"
    empty.write_text(json.dumps({"entries": {}}))
    assert not trust(MODEL, empty).trusted


def test_outside_the_counting_qemu_the_mark_finds_no_counts(tmp_path: Path) -> None:
    with pytest.raises(NotCounting, match="does not run under farm's counting QEMU"):
        Marks(tmp_path).count(lambda: None)


def estimate_spec(tmp_path: Path, **estimate: object) -> Spec:
    make_mlp_classifier(tmp_path / "model.onnx").save(tmp_path)
    target = {"mode": "emulated", "cpu_model": "Haswell", "x86_vnni": False}
    spec = write_job_spec(
        tmp_path,
        candidates=[],
        target=target,
        timing={"warmup": 0, "iterations": 0, "rounds": 1},
        estimate={"cost_model": "haswell", "runs": 3, "budget_s": 600.0, **estimate},
    )
    (tmp_path / "out").mkdir()
    return Spec.from_file(spec)


def test_counted_runs_become_estimated_latencies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    per_run = {"fp_simd_fma": 3_000_000, "load": 1_000_000, "scalar": 2_000_000}
    fake_marks(monkeypatch, tmp_path / "out", per_run)
    result = run_evaluate(estimate_spec(tmp_path), tmp_path / "out")
    assert result.estimate is not None and result.estimate.cost_model == "haswell" and not result.estimate.trusted
    haswell = cost_models()["haswell"]
    for variant in result.variants:
        assert variant.timing == "estimated" and variant.latency_ms is not None
        assert variant.latency_ms.p50 == pytest.approx(haswell.seconds(per_run) * 1000.0, rel=1e-3)
        assert variant.instructions is not None and variant.instructions.per_run == per_run
        assert variant.instructions.runs == 3 and variant.instructions.spread == 0.0
        assert variant.accuracy is not None


def test_without_the_plugin_the_variants_keep_their_accuracy_and_say_why(tmp_path: Path) -> None:
    result = run_evaluate(estimate_spec(tmp_path), tmp_path / "out")
    assert result.status == "ok" and all(v.accuracy is not None and v.timing == "none" for v in result.variants)
    assert [w for w in result.warnings if w.startswith("no speed estimate: the counting plugin wrote no counts")]


def test_an_estimate_past_its_budget_stops_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_marks(monkeypatch, tmp_path / "out", {"scalar": 1})
    monkeypatch.setattr("farm.job.evaluate.counted.time.monotonic", iter(range(0, 10_000, 1000)).__next__)
    result = run_evaluate(estimate_spec(tmp_path, budget_s=1500.0), tmp_path / "out")
    assert [v.timing for v in result.variants] == ["estimated", "none"]
    assert any("counting stopped before optimized: the job ran past 1500 s" in w for w in result.warnings)


def test_no_garbage_collection_falls_inside_a_mark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A collection inside one mark and not another is work that is not the model's (up to 5% of fp32's runs on
    x86 Haswell, timed by what the process allocated before): the warmup may collect, the marked runs may not."""
    fake_marks(monkeypatch, tmp_path, {"scalar": 1})
    collecting: list[bool] = []

    class Session:
        def run(self, names: object, feed: object) -> None:
            collecting.append(gc.isenabled())

    runs = _count(Session(), {}, 3, Marks(tmp_path))
    assert len(runs) == 3 and collecting == [True] * WARMUP + [False] * 3
    assert gc.isenabled()


def test_an_estimate_counts_fresh_sessions_never_the_profiled_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sessions that measured accuracy were opened with onnxruntime's profiler; counted, fp32's varied by 0.8%
    between two matrices on x86 Haswell. Each variant is counted in a session opened anew, unprofiled."""
    fake_marks(monkeypatch, tmp_path / "out", {"scalar": 1})
    profiled: list[int] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        session = open_session(*args, **kwargs)
        if kwargs.get("profile"):
            profiled.append(id(session))
            opened.append(session)  # alive to the end, so that no later session takes its id
        return session

    opened: list[Any] = []
    monkeypatch.setattr(measure, "open_session", recording)
    monkeypatch.setattr(fp32, "open_session", recording)
    seen: list[int] = []
    count = counted._count

    def counting(session: Any, *rest: Any) -> Any:
        seen.append(id(session))
        return count(session, *rest)

    monkeypatch.setattr(counted, "_count", counting)
    result = run_evaluate(estimate_spec(tmp_path), tmp_path / "out")
    assert len(seen) == len(result.variants) and all(v.timing == "estimated" for v in result.variants)
    assert profiled and not set(seen) & set(profiled)


def test_every_variant_is_counted_first_before_fp32s_accuracy_and_in_one_process_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted after fp32's accuracy, one int8 variant moved 0.3-0.9% between two matrices on an AMD EPYC Zen 3; after
    the variants' runs (FARM_JOB_WORKERS=1: in the job itself), their sessions would sit in memory the runs shaped, as
    fp32's did after the workers (3.2% between two matrices). So every count comes first; while one runs, the file
    says which variant is under way."""
    monkeypatch.setenv("FARM_JOB_WORKERS", "1")
    fake_marks(monkeypatch, tmp_path / "out", {"scalar": 1})
    events: list[str] = []
    count, run, reference = counted._count, measure.VariantMeasure.variant, Reference.run

    def counting(session: Any, *rest: Any) -> Any:
        written = json.loads((tmp_path / "out" / "result.json").read_text())
        events.append("count " + written["variants"][-1]["name"])
        return count(session, *rest)

    def running(self: measure.VariantMeasure, name: str, *rest: Any, **kwargs: Any) -> Any:
        events.append("run")
        return run(self, name, *rest, **kwargs)

    def fp32_accuracy(*args: Any) -> Any:
        events.append("fp32")
        return reference(*args)

    monkeypatch.setattr(counted, "_count", counting)
    monkeypatch.setattr(measure.VariantMeasure, "variant", running)
    monkeypatch.setattr(Reference, "run", fp32_accuracy)
    result = run_evaluate(estimate_spec(tmp_path), tmp_path / "out")
    assert all(v.timing == "estimated" for v in result.variants)
    names = [v.name for v in result.variants]
    assert events == [f"count {n}" for n in names] + ["fp32"] + ["run"] * (len(names) - 1), events
