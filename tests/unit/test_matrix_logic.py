"""The controller's pure decisions: exit-code precedence and what a job spec says about the target's ISA."""

from __future__ import annotations

from pathlib import Path

from farm.config import Target
from farm.host import Placement
from farm.matrix import MatrixOptions, _exit_code, job_spec

NATIVE = Placement(mode="native")
VNNI_HOST = frozenset({"avx2", "avx512f", "avx512_vnni"})
AVX2_HOST = frozenset({"avx2", "fma"})


def test_exit_code_prefers_host_problems_then_builds_then_targets() -> None:
    assert _exit_code([]) == 0
    assert _exit_code([5]) == 5
    assert _exit_code([5, 4]) == 4
    assert _exit_code([5, 4, 3]) == 3


def spec_for(target: Target, host_flags: frozenset[str], placement: Placement = NATIVE) -> dict[str, object]:
    return job_spec(
        target, placement, "evaluate", ["u8s8-qdq"], MatrixOptions(), inputs=Path("/nonexistent"), host_flags=host_flags
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
        MatrixOptions(iterations=5),
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
