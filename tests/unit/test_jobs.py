"""The job launcher's pure parts: what a job spec says about the target's ISA, the settings a run holds, and the
container of a stage."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from farm.controller.fleet import ESTIMATED_NOTE, NO_COUNTING, no_estimate, with_estimates
from farm.controller.jobs import (
    ESTIMATE_RUNS,
    ESTIMATE_SHARE,
    IN,
    OUT,
    JobSettings,
    container,
    job_spec,
    spec_file,
)
from farm.host.probe import Placement
from farm.inputs.usermetric import MetricFile
from farm.job.codec import decode, encode
from farm.job.estimate.marks import COUNTS_FILE
from farm.job.report import Quantization
from farm.job.spec import MetricRef, Spec, TunedModel
from farm.targets.config import Target
from tests.countingfake import fake_counting
from tests.unit.report_sample import quantization

NATIVE = Placement(mode="native")
# A tuned model's record as tune.json's best.quantization writes it (docs/contracts.md section 2).
QUANTIZATION = quantization("u8s8-qdq", 1, 2)
VNNI_HOST = frozenset({"avx2", "avx512f", "avx512_vnni"})
AVX2_HOST = frozenset({"avx2", "fma"})


def spec_for(target: Target, host_flags: frozenset[str], placement: Placement = NATIVE) -> Spec:
    return job_spec(
        target, placement, "evaluate", ["u8s8-qdq"], JobSettings(), inputs=Path("/nonexistent"), host_flags=host_flags
    )


def vnni(spec: Spec) -> bool | None:
    return spec.target.x86_vnni


def test_a_tier_that_names_its_features_knows_whether_it_has_vnni() -> None:
    avx2 = Target(name="t", platform="linux/amd64", cpu_features=("avx2", "fma"))
    vnni_tier = Target(name="v", platform="linux/amd64", cpu_features=("avx512f", "avx512_vnni"))
    assert vnni(spec_for(avx2, VNNI_HOST)) is False
    assert vnni(spec_for(vnni_tier, AVX2_HOST)) is True


def test_a_bare_native_x86_target_has_what_this_cpu_has() -> None:
    bare = Target(name="here", platform="linux/amd64")
    assert vnni(spec_for(bare, VNNI_HOST)) is True
    assert vnni(spec_for(bare, AVX2_HOST)) is False
    spec = spec_for(bare, AVX2_HOST)
    assert spec.mitigations == ("x64quantprecision",)


def test_arm_targets_have_no_x86_isa() -> None:
    arm = Target(name="arm", platform="linux/arm64")
    spec = spec_for(arm, AVX2_HOST, Placement(mode="emulated", cpu_model="neoverse-n1"))
    assert vnni(spec) is None
    assert spec.mitigations == ()
    # Under QEMU timings say nothing: the emulated target spends its budget on accuracy.
    assert spec.timing.iterations == 0 and spec.timing.warmup == 0
    asked = job_spec(
        arm,
        Placement(mode="emulated", cpu_model="neoverse-n1"),
        "evaluate",
        ["u8s8-qdq"],
        JobSettings(iterations=5),
        inputs=Path("/nonexistent"),
        host_flags=AVX2_HOST,
    )
    assert asked.timing.iterations == 0  # --iterations is for meaningful timings


def test_a_masked_tier_tells_its_job_what_it_must_not_see() -> None:
    tier = Target(
        name="x86-avx512", platform="linux/amd64", cpu_features=("avx512f", "avx512bw"), cpu_excludes=("avx512_vnni",)
    )
    placement = Placement(mode="masked", mask="0x7.0.ecx:0x800", unseen=("AVX512VNNI",))
    spec = spec_for(tier, VNNI_HOST, placement)
    assert spec.target.mode == "masked" and spec.target.cpu_unseen == ("AVX512VNNI",)
    assert vnni(spec) is False and spec.mitigations == ("x64quantprecision",)
    assert spec.timing.iterations == 200  # masked timings are real executions


def test_the_spec_on_the_wire_is_the_contract_s_json_and_the_job_reads_it_back(tmp_path: Path) -> None:
    (tmp_path / "labels.npy").write_bytes(b"")
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "metric.py").write_text("def score(a, b): return 1.0\n")
    tier = Target(name="x86-avx2", platform="linux/amd64", cpu_features=("avx2", "fma"))
    spec = job_spec(
        tier,
        Placement(mode="masked", mask="m", unseen=("AVX512F",)),
        "evaluate",
        ["u8s8-qdq", "u8s8-dynamic"],
        JobSettings(threads=2, outputs=("probs",)),
        inputs=tmp_path,
        host_flags=AVX2_HOST,
        metric=MetricFile(path=tmp_path / "metric.py", function="score"),
        artifacts="artifacts",
        tuned=TunedModel(model=Path("tuned/x86-avx2.onnx"), quantization=decode(Quantization, QUANTIZATION)),
    )
    wire = encode(spec)
    expected: dict[str, Any] = {
        "schema": "farm.spec/1",
        "stage": "evaluate",
        "target": {
            "name": "x86-avx2",
            "platform": "linux/amd64",
            "arch": "x86_64",
            "mode": "masked",
            "cpu_model": None,
            "providers": ["CPUExecutionProvider"],
            "x86_vnni": False,
            "cpu_unseen": ["AVX512F"],
        },
        "model": "model/model.onnx",
        "rewritten": "rewritten.onnx",
        "inputs": "inputs.npz",
        "labels": "labels.npy",
        "artifacts": "artifacts",
        "candidates": ["u8s8-qdq", "u8s8-dynamic"],
        "calibration": {"method": "minmax", "samples": 64},
        "optimization_level": "all",
        "threads": 2,
        "timing": {"warmup": 10, "iterations": 200, "rounds": 10, "mode": "adaptive", "round_s": 0.25, "min_runs": 5},
        "tolerance": {"cosine": 0.99, "top1_agreement": 0.99},
        "mitigations": ["x64quantprecision"],
        "outputs": ["probs"],
        "metric": {"file": "metric/metric.py", "function": "score"},
        "tuned": {"model": "tuned/x86-avx2.onnx", "quantization": QUANTIZATION},
        "profile": {"threads": [2], "budget_s": 1800.0 * ESTIMATE_SHARE},
        # --divergence's default: the two closest variants out of tolerance, marked within a quarter of 4 GiB.
        "divergence": {"count": 2, "threshold_db": 30.0, "limit_bytes": 1 << 30, "samples": 8},
    }
    # The same keys and values as the contract lists them, in its order.
    assert wire == expected and list(wire) == list(expected) and list(wire["target"]) == list(expected["target"])
    # What the job reads is the same spec, its paths made absolute against the spec's folder.
    read = Spec.from_dict(json.loads(json.dumps(wire)), base=tmp_path)
    assert read == spec.resolved(tmp_path)
    assert read.model == (tmp_path / "model" / "model.onnx").resolve()
    assert read.metric == MetricRef(file=(tmp_path / "metric" / "metric.py").resolve(), function="score")
    assert read.tuned is not None and read.tuned.model == (tmp_path / "tuned" / "x86-avx2.onnx").resolve()
    bare = encode(spec_for(tier, AVX2_HOST))
    assert bare["labels"] is None and bare["artifacts"] is None and bare["metric"] is None and "tuned" not in bare


def test_the_settings_give_each_target_its_budget_unless_timeout_says_otherwise() -> None:
    slow = Target(name="slow", platform="linux/arm64", budget_s=3600.0)
    assert JobSettings().budget(slow) == 3600.0
    assert JobSettings(timeout_s=60.0).budget(slow) == 60.0
    assert JobSettings().native_iterations == 200 and JobSettings(iterations=0).native_iterations == 0


def test_a_stage_s_container_reads_its_own_spec_and_writes_to_the_output_folder(tmp_path: Path) -> None:
    tier = Target(name="x86-avx2", platform="linux/amd64", cpu_features=("avx2",))
    started = container(tier, NATIVE, "farm/x:0", "prepare", tmp_path / "in", tmp_path / "out", timeout_s=9.0)
    assert started.command[-2:] == [f"{IN}/{spec_file('prepare', 'x86-avx2')}", OUT]
    assert {(m.source, m.target, m.read_only) for m in started.mounts} == {
        (tmp_path / "in", IN, True),
        (tmp_path / "out", OUT, False),
    }
    assert started.labels["farm.stage"] == "prepare" and started.timeout_s == 9.0 and started.memory == tier.memory


def test_an_emulated_target_under_the_counting_qemu_asks_for_an_estimate_and_starts_under_it(tmp_path: Path) -> None:
    arm = Target(name="arm64", platform="linux/arm64", budget_s=100.0)
    counter = fake_counting(tmp_path)
    placement = Placement(mode="emulated", cpu_model="neoverse-n1", counting=counter)
    spec = spec_for(arm, frozenset(), placement)
    assert spec.estimate is not None and spec.estimate.cost_model == "neoverse-n1"
    assert spec.estimate.runs == ESTIMATE_RUNS and spec.estimate.budget_s == 100.0 * ESTIMATE_SHARE
    started = container(arm, placement, "farm/a:0", "evaluate", tmp_path, tmp_path, timeout_s=9.0, counted=True)
    assert started.entrypoint is not None and started.entrypoint[-1].endswith(f",out={OUT}/{COUNTS_FILE}")
    # --no-estimates, a core farm has no cost model for, or no counting QEMU: accuracy only, as before.
    quiet = job_spec(
        arm, placement, "evaluate", [], JobSettings(estimates=False), inputs=tmp_path, host_flags=VNNI_HOST
    )
    a72 = spec_for(arm, frozenset(), replace(placement, cpu_model="cortex-a72"))
    plain = spec_for(arm, frozenset(), replace(placement, counting=None))
    assert quiet.estimate is None and a72.estimate is None and plain.estimate is None
    assert container(arm, placement, "farm/a:0", "evaluate", tmp_path, tmp_path, timeout_s=9.0).entrypoint is None


def test_the_fleet_gives_the_counting_qemu_to_emulated_targets_it_can_price_and_says_why_not_otherwise(
    tmp_path: Path,
) -> None:
    arm, a72 = Target(name="arm64", platform="linux/arm64"), Target(name="a72", platform="linux/arm64")
    emulated = Placement(mode="emulated", cpu_model="neoverse-n1", reason="binfmt")
    counter = fake_counting(tmp_path)
    given = with_estimates(arm, emulated, counter)
    assert given.counting == counter and given.reason == f"binfmt; {ESTIMATED_NOTE}" and no_estimate(arm, given) is None
    assert with_estimates(arm, NATIVE, counter) == NATIVE
    assert with_estimates(arm, emulated, None) == emulated
    assert no_estimate(arm, emulated) == NO_COUNTING.format(target="arm64")
    cortex = replace(emulated, cpu_model="cortex-a72")
    assert with_estimates(a72, cortex, counter).counting is None
    assert "no cost model for cortex-a72" in (no_estimate(a72, cortex) or "")
    remote = Target(name="arm-box", platform="linux/arm64", engine="ssh://ci@arm-box")
    assert no_estimate(remote, emulated) is None and no_estimate(arm, NATIVE) is None


def test_only_the_evaluate_stage_times_adaptively_and_its_spec_and_resume_key_say_which_mode() -> None:
    """--timing reaches a timed evaluate spec (and so the --resume key, which hashes it: a resume never reuses a
    result timed the other way); the tune search always times fixed rounds, and the prepare spec and an emulated
    target's do not change with it."""
    from farm.controller.resume import resume_key

    tier = Target(name="x86-avx2", platform="linux/amd64", cpu_features=("avx2", "fma"))

    def spec(stage: Any, timing: Any) -> Spec:
        settings = JobSettings(timing=timing)
        return job_spec(tier, NATIVE, stage, ["u8s8-qdq"], settings, inputs=Path("/nonexistent"), host_flags=AVX2_HOST)

    assert JobSettings().timing == "adaptive"
    adaptive, fixed = spec("evaluate", "adaptive"), spec("evaluate", "fixed")
    assert (adaptive.timing.mode, fixed.timing.mode) == ("adaptive", "fixed")
    assert (adaptive.timing.round_s, adaptive.timing.min_runs) == (0.25, 5)
    assert replace(adaptive, timing=fixed.timing) == fixed  # nothing else differs
    keys = {resume_key({"spec": encode(s)}) for s in (adaptive, fixed)}
    assert len(keys) == 2
    for stage in ("prepare", "tune"):
        assert spec(stage, "adaptive") == spec(stage, "fixed") and spec(stage, "adaptive").timing.mode == "fixed"
    # An emulated target times nothing, so a resume with the other mode reuses it.
    arm = Target(name="arm64", platform="linux/arm64")
    emulated = Placement(mode="emulated", cpu_model="neoverse-n1")
    untimed = [
        job_spec(
            arm, emulated, "evaluate", [], JobSettings(timing=t), inputs=Path("/nonexistent"), host_flags=AVX2_HOST
        )
        for t in ("adaptive", "fixed")
    ]
    assert untimed[0] == untimed[1] and untimed[0].timing.mode == "fixed"
