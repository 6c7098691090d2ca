"""What farm leaves behind, on the real engine: a controller killed with SIGKILL leaves its container and run folder,
the next command removes them and says so, and `farm clean --dry-run` lists exactly what `farm clean` removes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from farm.backend.engine import RUN_LABEL, Engine
from farm.controller.fleet import BuildResults, Fleet
from farm.host.owner import OWNER_LABEL, this_process
from tests.farmcli import farm
from tests.integration.conftest import image_of, wait_for
from tests.integration.farmrun import native_target, start_matrix

pytestmark = pytest.mark.docker


def gone_owner() -> str:
    """The owner label of a process that has ended, as a killed controller's containers carry it."""
    process = subprocess.Popen(["sleep", "0.5"])
    stat = Path(f"/proc/{process.pid}/stat").read_text()
    started = stat.rsplit(")", 1)[1].split()[19]
    process.wait()
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{socket.gethostname()} {boot} {process.pid} {started}"


def test_a_killed_controller_leaves_a_container_and_a_run_folder_that_the_next_command_removes(
    engine: Engine, built: BuildResults, tmp_path: Path
) -> None:
    process = start_matrix("--target", "arm64", out=tmp_path)
    container = wait_for(engine, [RUN_LABEL], process)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    left = [c for c in engine.farm_containers() if c.id == container]
    assert left and left[0].owner is not None and f" {process.pid} " in left[0].owner
    runs = [
        p
        for p in (Path.home() / ".cache" / "farm" / "runs").iterdir()
        if (p / "owner").is_file() and f" {process.pid} " in (p / "owner").read_text()
    ]
    assert len(runs) == 1
    dry = farm("clean", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert any(
        line.startswith("would remove container ") and "the farm process that started it is gone" in line
        for line in dry.stdout.splitlines()
    ), dry.stdout
    assert f"would remove run folder {runs[0]}" in dry.stdout
    assert any(c.id == container for c in engine.farm_containers()), "a dry run removes nothing"
    result = farm("targets")
    assert result.returncode == 0, result.stderr
    assert (
        "note: removed 2 container and run folder(s) that farm processes which are gone left behind" in result.stderr
    ), result.stderr
    assert not any(c.id == container for c in engine.farm_containers())
    assert not runs[0].exists()


def test_clean_dry_run_lists_exactly_what_clean_removes_and_keeps_what_a_running_farm_uses(
    engine: Engine, fleet: Fleet, built: BuildResults, new_containers: Callable[[], list[str]], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    (cache / "wheelhouse").mkdir(parents=True)
    (cache / "wheelhouse" / "onnx-1.0-py3-none-any.whl").write_bytes(b"x" * 5000)
    (cache / "capabilities.json").write_text("{}")
    # The artifact cache in its default place (the session's own, in the environment, is not this test's to remove).
    entry = cache / "artifacts" / ("ab" * 32)
    entry.mkdir(parents=True)
    (entry / "entry.json").write_text("{}")
    dead, alive = cache / "runs" / "20261125T000000-dead00", cache / "runs" / "20261125T000000-alive0"
    for folder, owner in ((dead, gone_owner()), (alive, this_process())):
        (folder / "in").mkdir(parents=True)
        (folder / "in" / "model.onnx").write_bytes(b"y" * 3000)
        (folder / "owner").write_text(owner + "\n")
    image = image_of(built, native_target(fleet))
    orphan = engine.client.api.create_container(
        image, command=["true"], labels={RUN_LABEL: "1", OWNER_LABEL: gone_owner()}
    )["Id"]
    mine = engine.client.api.create_container(
        image, command=["true"], labels={RUN_LABEL: "1", OWNER_LABEL: this_process()}
    )["Id"]
    env = {"FARM_CACHE_DIR": str(cache), "FARM_ARTIFACT_CACHE_DIR": ""}
    name = engine.client.api.inspect_container(orphan)["Name"].lstrip("/")
    try:
        dry = farm("clean", "--cache", "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        planned = [ln.removeprefix("would remove ") for ln in dry.stdout.splitlines() if ln.startswith("would remove")]
        done = farm("clean", "--cache", env=env)
        assert done.returncode == 0, done.stderr
        removed = [ln.removeprefix("removing ") for ln in done.stdout.splitlines() if ln.startswith("removing ")]
        # The container, the run folder, 2 cache entries and the artifact cache.
        assert planned == removed and len(removed) == 5, (planned, removed)
        artifacts = f"cache {cache / 'artifacts'} (2 B): farm's cache of int8 artifacts (1 prepare stage(s))"
        assert artifacts in removed, removed
        assert any(ln.startswith(f"container {name} ") for ln in removed), removed
        assert f"run folder {dead}" in "\n".join(removed) and str(alive) not in "\n".join(removed)
        assert f"kept run folder {alive}: a running farm process uses it" in done.stdout
        assert "kept container " in done.stdout and "a running farm process" in done.stdout
        assert done.stdout.strip().splitlines()[-1].startswith("freed 8.") and "(5 item(s))" in done.stdout
        assert not dead.exists() and alive.exists() and not (cache / "wheelhouse").exists()
        ids = {c.id for c in engine.farm_containers()}
        assert orphan not in ids and mine in ids
    finally:
        engine.remove_container(mine)
        engine.remove_container(orphan)
    assert not new_containers()


def test_clean_images_dry_run_lists_every_farm_image_and_removes_none(engine: Engine, built: BuildResults) -> None:
    expected = {i.id for label in ("farm.hash", "farm.base") for i in engine.images_labelled(label)}
    result = farm("clean", "--images", "--dry-run")
    assert result.returncode == 0, result.stderr
    listed = [ln for ln in result.stdout.splitlines() if ln.startswith("would remove image ")]
    assert len(listed) == len(expected) > 0
    assert {i.id for label in ("farm.hash", "farm.base") for i in engine.images_labelled(label)} == expected
