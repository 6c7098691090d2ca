"""The start mode the backend's runner applies from a placement alone: the mask library it builds and mounts for a
masked tier, nothing for a native one; no caller assembles either."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.backend import runner
from farm.backend.runspec import RunResult
from farm.host.counting import BUNDLE_IN_CONTAINER, RESERVED_VA
from farm.host.masking import LIBRARY_NAME, MASK_ENV
from farm.host.probe import Placement
from farm.targets.config import Target
from tests.countingfake import fake_counting

NATIVE = Placement(mode="native")
TIER = Target(name="x86-avx2", platform="linux/amd64", cpu_features=("avx2",), cpu_excludes=("avx512f",))
MASKED = Placement(mode="masked", mask="0x7.0.ecx:0x800", unseen=("AVX512VNNI",))


def test_a_masked_tier_gets_the_library_the_runner_builds_in_farm_s_cache(tmp_path: Path) -> None:
    from farm.host import masking

    if masking.compiler() is None:
        pytest.skip("no C compiler to build the mask library with (farm doctor --fix installs gcc)")
    started = runner.run_spec(TIER, MASKED, "farm/x:0", ["-V"], cache_dir=tmp_path)
    library = next(m for m in started.mounts if m.target == runner.MASK_LIBRARY_IN_CONTAINER)
    assert library.source.is_file() and library.source.is_relative_to(tmp_path) and library.read_only
    assert started.environment["LD_PRELOAD"] == runner.MASK_LIBRARY_IN_CONTAINER
    assert started.environment[MASK_ENV] == MASKED.mask
    assert started.entrypoint is None and started.command == [runner.PYTHON, "-V"]


def test_a_plan_names_the_mask_library_without_building_it() -> None:
    planned = runner.run_spec(TIER, MASKED, "farm/x:0", ["-V"], plan_only=True)
    library = next(m for m in planned.mounts if m.target == runner.MASK_LIBRARY_IN_CONTAINER)
    assert library.source == Path(LIBRARY_NAME) and library.read_only
    assert planned.environment[MASK_ENV] == MASKED.mask
    # Neither a plan nor the cache folder: a caller's bug, not a host problem.
    with pytest.raises(ValueError, match="cache folder"):
        runner.run_spec(TIER, MASKED, "farm/x:0", ["-V"])


def test_native_and_emulated_targets_need_no_library(tmp_path: Path) -> None:
    native = runner.run_spec(TIER, NATIVE, "farm/x:0", ["-V"], cache_dir=tmp_path)
    assert native.entrypoint is None and "LD_PRELOAD" not in native.environment and not native.mounts
    arm = Target(name="arm64", platform="linux/arm64")
    emulated = runner.run_spec(
        arm, Placement(mode="emulated", cpu_model="neoverse-n1"), "farm/a:0", ["-V"], cache_dir=tmp_path
    )
    assert emulated.environment["QEMU_CPU"] == "neoverse-n1" and "LD_PRELOAD" not in emulated.environment
    assert not (tmp_path / "cpuid").exists()  # nothing was built for a container that does not mask


def test_a_mask_library_that_cannot_be_built_is_an_environment_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from farm.errors import EnvironmentProblem
    from farm.host import masking

    monkeypatch.setattr(masking, "compiler", lambda: None)
    # The launcher (farm/controller/jobs.py) reports it as this target's failure ("could not be masked"); the
    # others still run.
    with pytest.raises(EnvironmentProblem, match="C compiler"):
        runner.run_spec(TIER, MASKED, "farm/x:0", ["-V"], cache_dir=tmp_path)


def test_an_emulated_arm_target_under_the_counting_qemu_runs_it_as_entrypoint_with_the_bundle_read_only(
    tmp_path: Path,
) -> None:
    arm = Target(name="arm64", platform="linux/arm64")
    placement = Placement(mode="emulated", cpu_model="neoverse-n1")
    spec = runner.run_spec(
        arm, placement, "farm/a:0", ["job.py"], counting=fake_counting(tmp_path), counts_file="/farm/out/c.jsonl"
    )
    bundle = next(m for m in spec.mounts if m.target == BUNDLE_IN_CONTAINER)
    assert bundle.source == tmp_path and bundle.read_only
    assert spec.entrypoint == [
        f"{BUNDLE_IN_CONTAINER}/ld-linux-x86-64.so.2",
        "--library-path",
        f"{BUNDLE_IN_CONTAINER}/lib",
        f"{BUNDLE_IN_CONTAINER}/qemu-aarch64",
        "-R",
        RESERVED_VA,
        "-cpu",
        "neoverse-n1",
        "-plugin",
        f"{BUNDLE_IN_CONTAINER}/libinsncount.so,out=/farm/out/c.jsonl",
    ]
    assert spec.command == [runner.PYTHON, "job.py"] and spec.platform == "linux/arm64"
    assert spec.environment["OPENBLAS_NUM_THREADS"] == "1" and spec.environment["OMP_NUM_THREADS"] == "1"
    assert spec.environment["PYTHONHASHSEED"] == "0"
    # without it, the same placement is binfmt's as before: no entrypoint, no bundle
    plain = runner.run_spec(arm, placement, "farm/a:0", ["job.py"])
    assert plain.entrypoint is None and not plain.mounts and plain.environment["QEMU_CPU"] == "neoverse-n1"


def test_an_x86_tier_under_the_counting_qemu_replaces_the_static_qemu(tmp_path: Path) -> None:
    from farm.host.probe import Qemu

    static = Placement(mode="emulated", cpu_model="Haswell", qemu=Qemu(path="/bin/sh", version=(10, 0, 2)))
    spec = runner.run_spec(TIER, static, "farm/x:0", ["-V"], counting=fake_counting(tmp_path), counts_file="/o/c")
    assert spec.entrypoint is not None and spec.entrypoint[3:8] == [
        f"{BUNDLE_IN_CONTAINER}/qemu-x86_64",
        "-R",
        RESERVED_VA,
        "-cpu",
        "Haswell",
    ]
    assert all(m.target != runner.QEMU_IN_CONTAINER for m in spec.mounts)
    assert runner.run_spec(TIER, static, "farm/x:0", ["-V"]).entrypoint == [runner.QEMU_IN_CONTAINER, "-cpu", "Haswell"]


def test_the_counting_qemu_runs_emulated_placements_with_a_counts_file_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="emulated placements only"):
        runner.run_spec(TIER, NATIVE, "farm/x:0", ["-V"], counting=fake_counting(tmp_path), counts_file="/o/c")
    arm = Target(name="arm64", platform="linux/arm64")
    with pytest.raises(ValueError, match="counts file None"):
        runner.run_spec(
            arm, Placement(mode="emulated", cpu_model="neoverse-n1"), "a", [], counting=fake_counting(tmp_path)
        )


def test_an_oom_kill_inside_a_container_whose_main_process_exited_0_is_not_its_failure() -> None:
    """A profile process killed at the memory limit is its own loss (the job says so); the container's main process
    killed for memory is the target's."""
    ended = RunResult(exit_code=0, log_tail="", oom_killed=True, timed_out=False, duration_s=1.0)
    assert ended.failure is None
    killed = RunResult(exit_code=137, log_tail="", oom_killed=True, timed_out=False, duration_s=1.0)
    assert killed.failure is not None and killed.failure.startswith("ran out of memory")
