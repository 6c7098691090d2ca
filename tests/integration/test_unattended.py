"""Issue 10 on the real engine: a farm that runs with nobody watching keeps working, loses nothing and leaves
nothing behind: limits, confinement, Ctrl-C and --resume, a lost engine (concurrent runs on cold caches:
test_unattended_cold.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from farm.backend.engine import STAGE_LABEL, Engine, RunSpec
from farm.controller.fleet import BuildResults
from farm.report.schema import validate
from tests.conftest import ROOT
from tests.integration.conftest import image_of, wait_for, watched_containers
from tests.integration.farmrun import x86_targets

pytestmark = pytest.mark.docker

DOCKER_SOCKET = "/var/run/docker.sock"
# The targets these tests define; their images are the default ones under more tags, which go after each test.
TEST_TARGETS = ("fine", "starved", "slow", "cold", "first", "second")


@pytest.fixture(autouse=True)
def _untag_test_targets(engine: Engine) -> Iterator[None]:
    yield
    for image in engine.client.images.list():
        for tag in image.tags:
            if tag.split(":")[0] in {f"farm/{name}" for name in TEST_TARGETS}:
                with contextlib.suppress(Exception):  # another tag of the same image went first with it
                    engine.client.api.remove_image(tag)


def matrix_command(targets: Path, out: Path, *args: str) -> list[str]:
    return [
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
        *args,
    ]


def report_of(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    validate(report)
    return report


def entry(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in report["targets"] if t["name"] == name)
    return found


@pytest.mark.emulation
def test_over_memory_and_over_time_fail_alone_and_promptly(
    built: BuildResults, new_containers: Callable[[], list[str]], tmp_path: Path
) -> None:
    targets = x86_targets(
        tmp_path / "targets.toml",
        {
            "fine": {},
            # onnxruntime alone needs more than this to import. The kernel seldom kills such a job: it thrashes at its
            # limit (measured here: over 100 s at 4,000-5,000 major faults a second), and farm stops it for that.
            "starved": {"memory": "32m", "budget_s": 60},
            # Under QEMU the job takes a minute or more, far past this budget on any host.
            "slow": {"platform": "linux/arm64", "emulate_cpu": "neoverse-n1", "budget_s": 3},
        },
    )
    out = tmp_path / "out"
    result = subprocess.run(
        matrix_command(targets, out, "-t", "fine", "-t", "starved", "-t", "slow"),
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr
    report = report_of(out)
    fine, starved, slow = (entry(report, n) for n in ("fine", "starved", "slow"))
    assert fine["status"] == "ok", fine
    assert starved["status"] == "failed" and "ran out of memory" in starved["reason"], starved
    assert starved["reason"].endswith("(raise memory for this target in targets.toml)"), starved
    assert slow["status"] == "failed" and slow["reason"].startswith("exceeded its wall-clock budget of 3 s"), slow
    # Each is reported within its limit plus 10 s. The one out of memory is stopped as it loads, once it has thrashed
    # for farm/backend/thrashing.py's window (or killed by the kernel sooner), far inside its 60 s budget, as out of
    # memory, not timed out.
    assert starved["duration_s"] < 60 and "timed out" not in starved["reason"], starved
    assert 3 <= slow["duration_s"] < 3 + 10, slow["duration_s"]
    assert not new_containers()


def test_a_probe_job_has_no_network_no_writable_root_no_privilege(engine: Engine, built: BuildResults) -> None:
    probe = (
        "import os, socket\n"
        "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=3); print('network reached')\n"
        "except OSError as e:\n    print('network', e.errno)\n"
        "try:\n    open('/farm-probe', 'w'); print('root written')\n"
        "except OSError as e:\n    print('root', e.errno)\n"
        "print('uid', os.getuid())\n"
        "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
        "for key in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs'):\n"
        "    print(key, status[key].strip())\n"
    )
    result = engine.run(
        RunSpec(
            image=image_of(built, "x86-avx2"),
            command=["/opt/farm/bin/python3", "-c", probe],
            timeout_s=120,
            memory="1g",
        )
    )
    assert result.exit_code == 0, result.log_tail
    said = dict(line.split(" ", 1) for line in result.log_tail.splitlines())
    assert said["network"] == "101", said  # ENETUNREACH: the container has no interface but lo
    assert said["root"] == "30", said  # EROFS: the root file system is read-only
    assert said["uid"] != "0", said
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(said[capabilities], 16) == 0, (capabilities, said[capabilities])
    assert said["NoNewPrivs"] == "1", said


def test_ctrl_c_marks_the_report_incomplete_and_resume_runs_only_what_is_missing(
    engine: Engine, built: BuildResults, new_containers: Callable[[], list[str]], tmp_path: Path
) -> None:
    targets = x86_targets(tmp_path / "targets.toml", {"first": {}, "second": {}})
    out = tmp_path / "out"
    command = matrix_command(targets, out, "-t", "first", "-t", "second")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wait_for(engine, ["farm.target=second", f"{STAGE_LABEL}=evaluate"], process)
    os.kill(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: interrupted") and "--resume" in last and str(out / "report.json") in last, last
    assert not new_containers()
    partial = report_of(out)
    assert partial["incomplete"] and partial["incomplete"].startswith("interrupted"), partial["incomplete"]
    assert entry(partial, "first")["status"] == "ok" and entry(partial, "first")["resume_key"]
    assert entry(partial, "second")["status"] == "failed" and entry(partial, "second")["resume_key"] is None

    with watched_containers(engine) as started:
        resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert "note: --resume reused first; ran second" in resumed.stderr, resumed.stderr
    assert "INCOMPLETE" not in resumed.stdout
    report = report_of(out)
    assert report["incomplete"] is None
    first, second = entry(report, "first"), entry(report, "second")
    assert first["resumed_from"] == partial["created"] and first["variants"] == entry(partial, "first")["variants"]
    assert second["resumed_from"] is None and second["status"] == "ok"
    assert "(native, reused)" in resumed.stdout
    assert f"reused from the run of {partial['created']}" in (out / "report.md").read_text()
    # Only the missing target was evaluated again, with the int8 artifacts the interrupted run had made and kept in
    # the artifact cache: no prepare job ran.
    evaluated = {
        labels["farm.target"]
        for labels in started
        if labels.get(STAGE_LABEL) == "evaluate" and labels.get("farm.target") in ("first", "second")
    }
    assert evaluated == {"second"}, started
    assert not [labels for labels in started if labels.get(STAGE_LABEL) == "prepare"], started
    assert [s["artifacts"] for s in report["run"]["prepare"]] == ["reused"], report["run"]["prepare"]
    assert not new_containers()

    # A changed setting changes the key: nothing is reused.
    again = subprocess.run(
        [*command, "--resume", "--min-cosine", "0.98"], capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    assert again.returncode == 0, again.stderr
    assert "note: --resume reused no target; ran first, second" in again.stderr, again.stderr


class SocketProxy:
    """A Docker socket that forwards to the real one until ``cut`` closes it: the engine going away, as farm sees it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(DOCKER_SOCKET)
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        self._server.close()
        self.path.unlink(missing_ok=True)
        with self._lock:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()


def test_a_lost_engine_stops_farm_with_one_line_and_keeps_the_partial_report(
    engine: Engine, built: BuildResults, new_containers: Callable[[], list[str]], tmp_path: Path
) -> None:
    targets = x86_targets(tmp_path / "targets.toml", {"first": {}, "second": {}})
    out = tmp_path / "out"
    proxy = SocketProxy(tmp_path / "docker.sock")
    env = {**os.environ, "DOCKER_HOST": f"unix://{proxy.path}"}
    process = subprocess.Popen(
        matrix_command(targets, out, "-t", "first", "-t", "second"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        wait_for(engine, ["farm.target=second", f"{STAGE_LABEL}=evaluate"], process)
        proxy.cut()
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 3, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "stopped answering" in errors[0] and "--resume" in errors[0], stderr
    report = report_of(out)
    assert report["incomplete"] and "stopped answering" in report["incomplete"], report["incomplete"]
    assert entry(report, "first")["status"] == "ok"
    assert entry(report, "second")["status"] == "failed" and entry(report, "second")["resume_key"] is None
    # The container farm could not remove is an orphan now; the next command, on the engine that is back, removes it.
    left = new_containers()
    assert left, "farm lost the engine before its container ended, so the container must still be there"
    swept = subprocess.run(
        [sys.executable, "-m", "farm", "targets", "--targets", str(targets)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert swept.returncode == 0, swept.stderr
    assert "removed" in swept.stderr and "farm processes which are gone" in swept.stderr, swept.stderr
    assert not new_containers()
