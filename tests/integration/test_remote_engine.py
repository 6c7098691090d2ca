"""Issue 11 on real engines: targets that run on another Docker engine, reached only through its API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.context
import pytest
import yaml

from farm.backend.engine import Engine
from farm.controller.fleet import BuildResults, Fleet
from farm.host.probe import HostInfo, place
from farm.report.schema import validate
from farm.targets.config import load_config
from tests.conftest import ROOT, own_containers
from tests.integration.farmrun import x86_targets
from tests.integration.second_engine import SecondEngine, second_engine

# Beside other tests (tests/conftest.py): where things ran, on its own second engine; this engine's other
# containers are not its concern (own_containers).
pytestmark = [pytest.mark.docker, pytest.mark.concurrent]

# The CPU the second engine's machine reports: the other x86 tier than the controller's, so placement must differ.
HASWELL = frozenset({"fpu", "sse", "sse2", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"})
CASCADE_LAKE = HASWELL | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx512_vnni"}


@pytest.fixture(scope="module")
def remote(fleet: Fleet, built: BuildResults, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecondEngine]:
    if fleet.host.arch != "x86_64":
        pytest.skip(f"the second engine's tests fake an x86 CPU; this controller is {fleet.host.arch}")
    vnni_here = "avx512_vnni" in fleet.host.cpu_flags
    model, flags = ("Fake Haswell", HASWELL) if vnni_here else ("Fake Cascade Lake", CASCADE_LAKE)
    # A short folder: a unix socket's path must fit in 108 bytes.
    root = Path(tmp_path_factory.mktemp("e2", numbered=True))
    with second_engine(root, cpu_model=model, cpu_flags=flags) as started:
        yield started
    # Gone with its bridge, data root and socket: nothing of it stays on this machine.
    assert not Path(started.address.removeprefix("unix://")).exists()


def remote_targets(path: Path, remote: SecondEngine, tables: dict[str, dict[str, Any]]) -> Path:
    return x86_targets(
        path,
        {
            name: {**table, "engine": remote.address} if name.startswith("remote") else table
            for name, table in tables.items()
        },
    )


def test_a_target_on_a_second_engine_runs_there_through_the_api_only(
    remote: SecondEngine, engine: Engine, tmp_path: Path
) -> None:
    targets = remote_targets(tmp_path / "targets.toml", remote, {"remote-x86": {}})
    out = tmp_path / "out"
    # --keep leaves the containers (and their volumes), so that what ran where, and with which mounts, can be read.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "farm",
            "matrix",
            "--quiet",
            "--targets",
            str(targets),
            "--out",
            str(out),
            "--iterations",
            "20",
            "--keep",
            # The prepare job must run there, not come from the session's artifact cache.
            "--no-cache",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    try:
        assert result.returncode == 0, result.stderr
        report = json.loads((out / "report.json").read_text())
        validate(report)
        entry = report["targets"][0]
        assert entry["status"] == "ok", entry
        assert entry["backend"] == {
            "kind": "docker",
            "where": remote.address,
            "cpu_model": remote.cpu_model,
            "image": "shipped",
        }, entry["backend"]
        assert remote.engine.image(entry["image"]) is not None
        ran_there = remote.engine.client.api.containers(all=True, filters={"label": "farm.target=remote-x86"})
        assert {c["Labels"].get("farm.stage") for c in ran_there} >= {"prepare", "evaluate"}, ran_there
        assert not engine.client.api.containers(all=True, filters={"label": "farm.target=remote-x86"})
        for container in ran_there:
            mounts = remote.engine.client.api.inspect_container(container["Id"])["Mounts"]
            assert mounts and all(m["Type"] == "volume" for m in mounts), mounts
    finally:
        for container in remote.engine.farm_containers():
            remote.engine.remove_container(container.id)
        for volume, _ in remote.engine.farm_volumes():
            remote.engine.remove_volume(volume)
        subprocess.run(
            [sys.executable, "-m", "farm", "clean", "--targets", str(targets)],
            capture_output=True,
            cwd=ROOT,
            check=False,
        )
    # Without --keep, a run leaves nothing on that engine: no job or stager container, no volume.
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "farm",
            "matrix",
            "--quiet",
            "--targets",
            str(targets),
            "--out",
            str(tmp_path / "again"),
            "--iterations",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert again.returncode == 0, again.stderr
    assert not remote.engine.farm_containers() and not remote.engine.farm_volumes()


def test_the_remote_machine_decides_the_placement(remote: SecondEngine, fleet: Fleet, tmp_path: Path) -> None:
    tiers = {
        "avx2": {"cpu_features": ["avx2", "fma"], "cpu_excludes": ["avx512f", "avx_vnni", "avx512_vnni"]},
        "vnni": {"cpu_features": ["avx512f", "avx512bw", "avx512_vnni"]},
    }
    tables = {f"{where}-{tier}": table for where in ("local", "remote") for tier, table in tiers.items()}
    targets = remote_targets(tmp_path / "targets.toml", remote, tables)
    result = subprocess.run(
        [sys.executable, "-m", "farm", "targets", "--json", "--targets", str(targets)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    config = load_config(targets, env={})
    there = HostInfo(arch="x86_64", cpu_flags=remote.cpu_flags)
    differ = []
    for tier in tiers:
        local, far = rows[f"local-{tier}"], rows[f"remote-{tier}"]
        assert local["mode"] == place(config.target(f"local-{tier}"), fleet.host).mode, local
        assert far["mode"] == place(config.target(f"remote-{tier}"), there).mode, far
        assert far["backend"] == remote.address and far["reachable"], far
        if far["mode"] != "native":
            assert far["reason"].startswith(f"on {remote.address} ({remote.cpu_model})"), far
        differ += [tier] if local["mode"] != far["mode"] else []
    assert differ, rows  # one of the two tiers is native here and not there, or the other way round


def test_an_unreachable_backend_is_unavailable_and_the_others_run(built: BuildResults, tmp_path: Path) -> None:
    targets = x86_targets(tmp_path / "targets.toml", {"here": {}, "gone": {"engine": "tcp://127.0.0.1:9"}})
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "farm",
            "matrix",
            "--quiet",
            "--targets",
            str(targets),
            "--out",
            str(out),
            "--iterations",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((out / "report.json").read_text())
    entries = {t["name"]: t for t in report["targets"]}
    assert entries["here"]["status"] == "ok"
    gone = entries["gone"]
    assert gone["status"] == "skipped" and gone["mode"] == "unavailable", gone
    assert gone["reason"].startswith(
        "its backend is unreachable: cannot reach the Docker engine at tcp://127.0.0.1:9"
    ), gone["reason"]


def test_a_remote_engine_lost_mid_run_fails_only_its_own_targets(
    fleet: Fleet, built: BuildResults, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """The machine behind a second engine goes away while its first target's job runs there: that target and the
    next one on it fail, saying so; the target on the controller's engine, which runs between them, is unaffected."""
    if fleet.host.arch != "x86_64":
        pytest.skip(f"the second engine's tests fake an x86 CPU; this controller is {fleet.host.arch}")
    # An engine of its own (the module's one serves the other tests), stopped below; a short folder for its socket.
    root = Path(tmp_path_factory.mktemp("e3", numbered=True))
    with second_engine(root, cpu_model="Fake Haswell", cpu_flags=HASWELL, instance=1) as lost:
        away = {"engine": lost.address}
        # Native targets run in the file's order: one there, then one here, then the second one there.
        targets = x86_targets(tmp_path / "targets.toml", {"far-a": away, "here": {}, "far-b": away})
        out = tmp_path / "out"
        log = (tmp_path / "matrix.log").open("w+")
        matrix = subprocess.Popen(
            # Enough timed runs that far-a's job is still running when its machine goes (400 ended within the 2 s
            # below on a fast Xeon: ~10 variants x 20000 runs of the bundled model take seconds on any CPU), every
            # one of them (fixed rounds: adaptive ones would stop at a quarter second each).
            [*MATRIX, "--targets", str(targets), "--out", str(out), "--iterations", "20000", "--timing", "fixed"],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        try:
            _wait_for_job(lost, "far-a", matrix)
            # The machine goes down: its engine stops, and with it the job's container.
            os.kill(int((root / "dockerd.pid").read_text()), signal.SIGTERM)
            code = matrix.wait(timeout=900)
        finally:
            if matrix.poll() is None:
                matrix.kill()
                matrix.wait()
        log.seek(0)
        output = log.read()
    assert "Traceback" not in output, output
    assert code == 5, output  # a target failed; not 3, which says the controller's own engine is gone
    report = json.loads((out / "report.json").read_text())
    validate(report)
    assert report.get("incomplete") is None, report["incomplete"]
    entries = {t["name"]: t for t in report["targets"]}
    assert entries["here"]["status"] == "ok", entries["here"]
    # The job that ran there as the engine stopped failed (its container's end or the engine's, whichever the
    # client heard first); the next target there finds the engine gone, and says which one.
    assert entries["far-a"]["status"] == "failed" and entries["far-a"]["reason"], entries["far-a"]
    far_b = entries["far-b"]
    assert far_b["status"] == "failed" and "lost its backend: " in far_b["reason"], far_b
    assert lost.address in far_b["reason"], far_b["reason"]


MATRIX = [sys.executable, "-m", "farm", "matrix", "--quiet"]


def _wait_for_job(engine: SecondEngine, target: str, matrix: subprocess.Popen[str]) -> None:
    """Until the target's evaluate job runs on ``engine`` (after its image is shipped there and prepared)."""
    deadline = time.monotonic() + 600
    labels = [f"farm.target={target}", "farm.stage=evaluate"]
    while time.monotonic() < deadline:
        assert matrix.poll() is None, "farm matrix ended before its job ran on the second engine"
        running = engine.engine.client.api.containers(filters={"label": labels, "status": "running"})
        if running:
            time.sleep(1)  # inside the job now, past the container's start
            return
        time.sleep(0.5)
    raise AssertionError(f"{target}'s job did not start on {engine.address} in 600 s")


def test_doctor_shows_each_backend_and_whether_it_is_reachable(remote: SecondEngine, tmp_path: Path) -> None:
    targets = remote_targets(
        tmp_path / "targets.toml", remote, {"remote-a": {}, "remote-b": {}, "gone": {"engine": "tcp://127.0.0.1:9"}}
    )
    result = subprocess.run(
        [sys.executable, "-m", "farm", "doctor", "--targets", str(targets)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("backend")]
    assert len(lines) == 2, result.stdout
    assert "ok" in lines[0].split() and f"{remote.address} (remote-a, remote-b): x86_64, {remote.cpu_model}" in lines[0]
    assert "WARN" in lines[1].split() and "tcp://127.0.0.1:9 (gone): unreachable" in lines[1], lines


def test_a_dry_run_writes_what_each_backend_would_create_and_runs_nothing(
    engine: Engine, built: BuildResults, tmp_path: Path
) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    defaults = tomllib.loads((ROOT / "targets.toml").read_text())
    cluster = {
        "engine": "kubernetes",
        "registry": "registry.example.com/farm",
        "namespace": "farm-ci",
        "kube_context": "no-such-context",
    }
    targets = x86_targets(
        tmp_path / "targets.toml",
        {
            "here": {},
            "cluster-avx2": {
                **cluster,
                "cpu_features": ["avx2", "fma"],
                "cpu_excludes": defaults["targets"]["x86-avx2"]["cpu_excludes"],
            },
        },
    )
    before = {c.id for c in own_containers(engine)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "farm",
            "matrix",
            "--quiet",
            "--targets",
            str(targets),
            "--out",
            str(tmp_path / "out"),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "cluster-avx2: its backend is unreachable now" in result.stderr, result.stderr
    folder = tmp_path / "out" / "dry-run"
    assert sorted(p.name for p in folder.iterdir()) == [
        "cluster-avx2-evaluate.yaml",
        "cluster-avx2-prepare.yaml",
        "here-evaluate.yaml",
        "here-prepare.yaml",
    ]
    for path in folder.glob("cluster-*.yaml"):
        for manifest in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(manifest, "1.37.0", strict=True)
            if manifest["kind"] == "Job":
                pod = manifest["spec"]["template"]["spec"]
                assert pod["nodeSelector"]["feature.node.kubernetes.io/cpu-cpuid.AVX2"] == "true", pod
                assert manifest["metadata"]["namespace"] == "farm-ci"
    local = yaml.safe_load((folder / "here-evaluate.yaml").read_text())
    assert (local["network_mode"], local["read_only"], local["cap_drop"]) == ("none", True, ["ALL"]), local
    assert not {c.id for c in own_containers(engine)} - before  # nothing ran
    assert not (tmp_path / "out" / "report.json").exists()


def test_an_engine_over_tls_or_a_docker_context_is_reached_and_a_wrong_certificate_is_not(
    remote: SecondEngine, tmp_path: Path
) -> None:
    context = f"farm-test-{tmp_path.name}"
    docker.context.ContextAPI.create_context(context, host=remote.address)
    try:
        wrong = tmp_path / "other-ca.pem"
        wrong.write_text(remote.tls_cert.read_text())
        targets = x86_targets(
            tmp_path / "targets.toml",
            {
                "over-tls": {
                    "engine": remote.tls_address,
                    "tls_ca": str(remote.tls_ca),
                    "tls_cert": str(remote.tls_cert),
                    "tls_key": str(remote.tls_key),
                },
                "by-context": {"engine": context},
                # Its own client certificate stands in for the CA: the server's certificate does not verify against it.
                "bad-ca": {
                    "engine": remote.tls_address,
                    "tls_ca": str(wrong),
                    "tls_cert": str(remote.tls_cert),
                    "tls_key": str(remote.tls_key),
                },
                "no-context": {"engine": "no-such-farm-context"},
            },
        )
        result = subprocess.run(
            [sys.executable, "-m", "farm", "targets", "--json", "--targets", str(targets)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
    finally:
        docker.context.ContextAPI.remove_context(context)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    for name in ("over-tls", "by-context"):
        assert rows[name]["reachable"] and rows[name]["mode"] == "native", rows[name]
    assert not rows["bad-ca"]["reachable"], rows["bad-ca"]
    assert rows["bad-ca"]["reason"].startswith(
        f"its backend is unreachable: cannot reach the Docker engine at {remote.tls_address}"
    ), rows["bad-ca"]
    assert not rows["no-context"]["reachable"]
    assert "there is no Docker context named 'no-such-farm-context'" in rows["no-context"]["reason"], rows


def test_an_image_the_controller_lacks_is_built_on_the_remote_engine_from_the_same_content(
    remote: SecondEngine, engine: Engine, tmp_path: Path
) -> None:
    defaults = tomllib.loads((ROOT / "targets.toml").read_text())["defaults"]
    # An extra package gives content no image has, here or there: the remote engine must build it itself. Not the
    # six of test_unattended_cold.py, whose image this engine may hold meanwhile (it runs beside this module).
    targets = remote_targets(
        tmp_path / "targets.toml", remote, {"remote-own": {"packages": [*defaults["packages"], "six==1.16.0"]}}
    )
    result = subprocess.run(
        [sys.executable, "-m", "farm", "build", "--quiet", "--targets", str(targets)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    row = next(line.split() for line in result.stdout.splitlines() if line.startswith("remote-own"))
    tag = row[1]
    assert row[4] == "built", result.stdout  # target, image, size, MiB, how
    assert remote.engine.image(tag) is not None
    assert engine.image(tag) is None  # built there, not here and shipped
    rows = subprocess.run(
        [sys.executable, "-m", "farm", "targets", "--json", "--targets", str(targets)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert json.loads(rows.stdout)[0]["built"] is True
