"""Issue 20 on the real engine: the deployment profile (memory, start-up, threads) and its gate budgets.

One `farm matrix` of a generated CNN with 6.2 MB of fp32 weights on the target this CPU times (native, else masked),
with ``threads = [1, 2]``, serves the profile, threads and gate tests; the emulated arm64 target's guest-heap
figures are checked on the bundled model's default run (tests/integration/test_matrix.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from farm.backend.engine import Engine
from farm.backend.runspec import Mount, RunSpec
from farm.controller.fleet import BuildResults, Fleet
from farm.report.schema import validate
from tests.conftest import ROOT
from tests.integration.conftest import image_of
from tests.integration.farmrun import farm_matrix, native_target, read_report, target, variant
from tests.modelgen import make_cnn

# Its farm commands take this host's turns (tests/conftest.py): each job that times has the host to itself.
pytestmark = [pytest.mark.docker, pytest.mark.emulation, pytest.mark.farm_turns]

THREADS = [1, 2]
PROFILE_KEYS = {"memory", "peak_rss_mib", "session_threads", "session_create_ms", "first_run_ms", "timing", "threads"}

# The test's own measurement, not farm's: a parent process starts a fresh Python that imports numpy and onnxruntime,
# says its resident memory, then (told to go on) creates the session as farm's timing does and runs it once; the
# parent takes the child's high-water mark from wait4's rusage (KiB on Linux).
PARENT = r"""
import json, os, subprocess, sys
child = r'''
import sys
import numpy as np, onnxruntime as ort
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
print(rss, flush=True)
sys.stdin.readline()
o = ort.SessionOptions()
o.intra_op_num_threads = 1
o.inter_op_num_threads = 1
o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
s.run(None, {"x": np.load(sys.argv[2])})
'''
p = subprocess.Popen([sys.executable, "-c", child, sys.argv[1], sys.argv[2]], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, text=True)
after_imports = int(p.stdout.readline())
p.stdin.write("go\n"); p.stdin.flush()
_, status, usage = os.wait4(p.pid, 0)
print(json.dumps({"status": status, "maxrss_kib": usage.ru_maxrss, "after_imports_kib": after_imports}))
"""


def threads_targets(path: Path) -> Path:
    """The default targets file with ``threads = [1, 2]`` in its defaults: every target times both counts."""
    text = (ROOT / "targets.toml").read_text()
    text = text.replace("[defaults]\n", f"[defaults]\nthreads = {json.dumps(THREADS)}\n", 1)
    assert tomllib.loads(text)["defaults"]["threads"] == THREADS
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def heavy(tmp_path_factory: pytest.TempPathFactory, fleet: Fleet, built: BuildResults) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("profile")
    cnn = make_cnn(folder / "cnn.onnx", samples=4, size=64, widths=(64, 128, 256, 512))
    assert cnn.path.stat().st_size > 5_000_000
    np.savez(folder / "data.npz", **cnn.inputs)  # type: ignore[arg-type]
    np.save(folder / "x.npy", cnn.inputs["x"][0])
    name = native_target(fleet)
    result = farm_matrix(
        str(cnn.path),
        "--data",
        str(folder / "data.npz"),
        "--min-top1",
        "0",
        "--targets",
        str(threads_targets(folder / "targets.toml")),
        "--target",
        name,
        "--iterations",
        "20",
        out=folder / "out",
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    report = read_report(folder / "out")
    validate(report)
    yield {"folder": folder, "report": report, "target": name, "table": result.stdout}


def test_every_ok_variant_has_its_profile_and_int8_needs_less_memory(heavy: dict[str, Any]) -> None:
    entry = target(heavy["report"], heavy["target"])
    ok = [v for v in entry["variants"] if v["status"] == "ok"]
    assert len(ok) >= 4, entry["variants"]
    timing = "masked" if entry["mode"] == "masked" else "measured"
    for v in ok:
        profile = v["profile"]
        assert set(profile) >= PROFILE_KEYS, (v["name"], profile)
        assert profile["memory"] == "process" and profile["timing"] == timing
        assert profile["session_threads"] == heavy["report"]["run"]["settings"]["threads"]
        assert profile["peak_rss_mib"] > 0 and profile["session_create_ms"] > 0 and profile["first_run_ms"] > 0
    fp32, u8s8 = variant(entry, "fp32")["profile"], variant(entry, "u8s8-qdq")["profile"]
    assert u8s8["peak_rss_mib"] < fp32["peak_rss_mib"], (u8s8, fp32)
    # The table shows the peak beside the size.
    assert "MiB" in heavy["table"]


def test_a_parent_process_measures_the_same_peak_by_its_own_code(
    heavy: dict[str, Any], engine: Engine, built: BuildResults
) -> None:
    """The fp32 session's high-water mark as the test's own parent process measures it, in the target's image,
    agrees with the report's within 20%."""
    folder: Path = heavy["folder"] / "shared"
    # The container runs as an unprivileged user: the files it reads must be readable by others.
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    for name in ("cnn.onnx", "x.npy"):
        (folder / name).write_bytes((heavy["folder"] / name).read_bytes())
        (folder / name).chmod(0o644)
    spec = RunSpec(
        image=image_of(built, heavy["target"]),
        command=["/opt/farm/bin/python3", "-c", PARENT, "/m/cnn.onnx", "/m/x.npy"],
        mounts=[Mount(source=folder, target="/m")],
        timeout_s=300.0,
        memory="2g",
    )
    result = engine.run(spec)
    assert result.exit_code == 0, result.log_tail
    answer = json.loads(result.log_tail.strip().splitlines()[-1])
    assert answer["status"] == 0, (answer, result.log_tail)
    theirs = (answer["maxrss_kib"] - answer["after_imports_kib"]) / 1024
    ours = variant(target(heavy["report"], heavy["target"]), "fp32")["profile"]["peak_rss_mib"]
    assert ours == pytest.approx(theirs, rel=0.2), (ours, theirs)


def test_two_thread_counts_give_two_p50s_and_the_recommendation_uses_threads(heavy: dict[str, Any]) -> None:
    report = heavy["report"]
    entry = target(report, heavy["target"])
    chosen = report["run"]["settings"]["threads"]
    assert chosen == 1
    for v in entry["variants"]:
        if v["status"] != "ok" or v["latency_ms"] is None:
            continue
        counts = {t["threads"]: t for t in v["profile"]["threads"]}
        assert sorted(counts) == THREADS, v["name"]
        assert all(t["p50_ms"] > 0 for t in counts.values())
        # Two cores: neither count is oversubscribed here unless the host has fewer.
        assert [t["oversubscribed"] for t in counts.values()] == [n > len(_cores()) for n in THREADS]
        # What the recommendation compares is the --threads count's figure.
        assert counts[chosen]["p50_ms"] == pytest.approx(v["latency_ms"]["p50"])
    assert entry["recommended"] in {v["name"] for v in entry["variants"]}


def _cores() -> set[int]:
    return os.sched_getaffinity(0)


def gate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm", "gate", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_a_memory_budget_fails_naming_target_variant_and_figures_and_old_reports_still_gate(
    heavy: dict[str, Any], tmp_path: Path
) -> None:
    folder: Path = heavy["folder"]
    report_path = folder / "out" / "report.json"
    policy = tmp_path / "gate.toml"
    policy.write_text("max_peak_rss_mib = 1\n")
    result = gate(str(report_path), "--policy", str(policy))
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 6, (result.stdout, result.stderr)
    name = heavy["target"]
    recommended = target(heavy["report"], name)["recommended"]
    peak = variant(target(heavy["report"], name), recommended)["profile"]["peak_rss_mib"]
    text = " ".join((result.stdout + result.stderr).split())
    assert re.search(rf"{re.escape(name)}\b.*{re.escape(recommended)}\b", text), text
    assert f"{peak:.1f}" in text and "max_peak_rss_mib" in text and " 1" in text, text
    # The same report as farm wrote it before profiles: it gates, the budget "not measured".
    old = json.loads(report_path.read_text())
    for entry in old["targets"]:
        for v in entry["variants"]:
            v.pop("profile", None)
    old_path = tmp_path / "old.json"
    old_path.write_text(json.dumps(old))
    result = gate(str(old_path), "--policy", str(policy))
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "not measured" in result.stdout + result.stderr
