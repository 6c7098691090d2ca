"""The job launcher's pure parts: what a job spec says about the target's ISA, the settings a run holds, and the
container of a stage."""

from __future__ import annotations

from pathlib import Path

from farm.config import Target
from farm.host import Placement
from farm.jobs import IN, OUT, JobSettings, container, job_spec, spec_file

NATIVE = Placement(mode="native")
VNNI_HOST = frozenset({"avx2", "avx512f", "avx512_vnni"})
AVX2_HOST = frozenset({"avx2", "fma"})


def spec_for(target: Target, host_flags: frozenset[str], placement: Placement = NATIVE) -> dict[str, object]:
    return job_spec(
        target, placement, "evaluate", ["u8s8-qdq"], JobSettings(), inputs=Path("/nonexistent"), host_flags=host_flags
    )


def vnni(spec: dict[str, object]) -> object:
    target = spec["target"]
    assert isinstance(target, dict)
    return target["x86_vnni"]


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
    assert spec["mitigations"] == ["x64quantprecision"]


def test_arm_targets_have_no_x86_isa() -> None:
    arm = Target(name="arm", platform="linux/arm64")
    spec = spec_for(arm, AVX2_HOST, Placement(mode="emulated", cpu_model="neoverse-n1"))
    assert vnni(spec) is None
    assert spec["mitigations"] == []
    # Under QEMU timings say nothing: the emulated target spends its budget on accuracy.
    timing = spec["timing"]
    assert isinstance(timing, dict) and timing["iterations"] == 0 and timing["warmup"] == 0
    asked = job_spec(
        arm,
        Placement(mode="emulated", cpu_model="neoverse-n1"),
        "evaluate",
        ["u8s8-qdq"],
        JobSettings(iterations=5),
        inputs=Path("/nonexistent"),
        host_flags=AVX2_HOST,
    )
    assert asked["timing"]["iterations"] == 0  # --iterations is for meaningful timings


def test_a_masked_tier_tells_its_job_what_it_must_not_see() -> None:
    tier = Target(
        name="x86-avx512", platform="linux/amd64", cpu_features=("avx512f", "avx512bw"), cpu_excludes=("avx512_vnni",)
    )
    placement = Placement(mode="masked", mask="0x7.0.ecx:0x800", unseen=("AVX512VNNI",))
    spec = spec_for(tier, VNNI_HOST, placement)
    assert spec["target"]["mode"] == "masked" and spec["target"]["cpu_unseen"] == ["AVX512VNNI"]  # type: ignore[index]
    assert vnni(spec) is False and spec["mitigations"] == ["x64quantprecision"]
    assert spec["timing"]["iterations"] == 200  # type: ignore[index]  # masked timings are real executions


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
