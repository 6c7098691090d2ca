"""Issue 3 on the real engine: `farm matrix` end to end, as a user runs it (the CLI in a subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from farm.backend.engine import RUN_LABEL, Engine
from farm.controller.fleet import BuildResults, Fleet
from farm.job.variants import saturation_safe
from farm.models import default_model
from farm.report.schema import validate
from tests.integration.conftest import runnable, wait_for
from tests.integration.farmrun import farm_matrix, native_target, read_report, start_matrix, target, variant
from tests.modelgen import make_saturating_classifier

# Its farm commands take this host's turns (tests/conftest.py): each job that times has the host to itself.
pytestmark = [pytest.mark.docker, pytest.mark.emulation, pytest.mark.farm_turns]


@pytest.fixture(scope="module")
def default_run(built: BuildResults, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """`farm matrix` with no argument, once for the module: the README's first command."""
    out = tmp_path_factory.mktemp("default")
    result = farm_matrix(out=out)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    yield out, result.stdout


def test_default_matrix_covers_every_target_with_labelled_accuracy(fleet: Fleet, default_run: tuple[Path, str]) -> None:
    out, table = default_run
    report = read_report(out)
    validate(report)
    assert report["data"] == {"source": "bundled", "samples": 360, "synthetic": False, "labels": True}
    assert [t["name"] for t in report["targets"]] == [
        "x86-avx2",
        "x86-avx512",
        "x86-avx512-vnni",
        "arm64",
        "gpu-s8s8",
        "x86-ort117",
    ]
    for entry in report["targets"]:
        placement = fleet.placements[entry["name"]]
        assert entry["mode"] == placement.mode
        if not placement.runnable:
            assert (entry["status"], entry["reason"]) == ("skipped", placement.reason)
            continue
        if fleet.config.target(entry["name"]).on_request:
            assert entry["status"] == "skipped" and "on request" in entry["reason"], entry
            continue
        assert entry["status"] == "ok", entry
        fp32 = variant(entry, "fp32")
        # The bundled classifier's held-out accuracy, measured with onnxruntime on the host: 349/360.
        assert fp32["accuracy"]["accuracy"] == pytest.approx(349 / 360, abs=1e-9)
        # Under QEMU timings say nothing, so emulated targets are not timed; masked ones are, and say so.
        assert fp32["timing"] == {"emulated": "none", "masked": "masked"}.get(placement.mode, "measured")
        assert all(v["accuracy"] is not None for v in entry["variants"] if v["status"] == "ok")
        assert entry["recommended"] and entry["recommendation_reason"]
        assert {v["name"] for v in entry["variants"]} >= {"fp32", "optimized", "s8s8-qdq", "u8u8-qdq"}
    assert target(report, "arm64")["mode"] == "emulated"
    assert target(report, "arm64")["runtime"]["onnxruntime"] == "1.31.1"
    assert max(len(line) for line in table.splitlines()) <= 100
    assert "emulated" in table
    for name in ("report.md", "report.html", "junit.xml"):
        assert (out / name).stat().st_size > 0


def test_every_variant_has_its_profile_and_emulated_ones_memory_only(
    fleet: Fleet, default_run: tuple[Path, str]
) -> None:
    """Issue 20: native and masked targets profile start-up and the process's memory; under QEMU the guest heap
    and the resident upper bound, labelled, and no times."""
    out, _ = default_run
    for entry in read_report(out)["targets"]:
        if entry["status"] != "ok":
            continue
        emulated = entry["mode"] == "emulated"
        for v in entry["variants"]:
            if v["status"] != "ok":
                continue
            profile = v["profile"]
            assert profile["peak_rss_mib"] > 0, (entry["name"], v["name"], profile)
            if emulated:
                assert profile["memory"] == "guest-heap" and profile["timing"] == "none", profile
                assert profile["rss_upper_bound_mib"] >= profile["peak_rss_mib"], profile
                assert not {"session_create_ms", "first_run_ms", "threads"} & set(profile), profile
            else:
                assert profile["memory"] == "process" and profile["timing"] == entry["variants"][0]["timing"]
                assert profile["session_create_ms"] > 0 and profile["first_run_ms"] > 0, profile
    arm64 = target(read_report(out), "arm64")
    assert (arm64["mode"], arm64["status"]) == ("emulated", "ok"), arm64
    assert all(v["profile"]["memory"] == "guest-heap" for v in arm64["variants"] if v["status"] == "ok")


def test_native_fp32_matches_onnxruntime_on_the_host(fleet: Fleet, default_run: tuple[Path, str]) -> None:
    out, _ = default_run
    bundled = default_model()
    with np.load(out / "outputs" / f"{native_target(fleet)}.fp32.npz") as npz:
        in_target = npz["logits"]
    session = ort.InferenceSession(str(bundled.model), providers=["CPUExecutionProvider"])
    with np.load(bundled.data) as data:
        on_host = np.stack([session.run(None, {"pixels": sample})[0] for sample in data["pixels"]])
    assert in_target.shape == on_host.shape
    assert float(np.max(np.abs(in_target - on_host))) <= 1e-5


def test_u8s8_saturates_on_avx2_and_the_recommendation_avoids_it(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    model = make_saturating_classifier(tmp_path / "model.onnx", samples=32)
    np.savez(tmp_path / "data.npz", **model.inputs)  # type: ignore[arg-type]  # numpy's stub: **arrays vs allow_pickle
    assert model.labels is not None
    np.save(tmp_path / "labels.npy", model.labels)
    # The other side of the comparison: VNNI where this CPU has it, else arm64, whose int8 kernels do not saturate.
    other = "x86-avx512-vnni" if runnable(fleet, "x86-avx512-vnni") else "arm64"
    result = farm_matrix(
        str(tmp_path / "model.onnx"),
        "--data",
        str(tmp_path / "data.npz"),
        "--labels",
        str(tmp_path / "labels.npy"),
        "--target",
        "x86-avx2",
        "--target",
        other,
        "--iterations",
        "20",
        out=tmp_path / "out",
    )
    assert result.returncode == 0, result.stderr
    report = read_report(tmp_path / "out")
    avx2, contrast = target(report, "x86-avx2"), target(report, other)
    assert variant(avx2, "u8s8-qdq")["within_tolerance"] is False, variant(avx2, "u8s8-qdq")
    assert variant(contrast, "u8s8-qdq")["within_tolerance"] is True, variant(contrast, "u8s8-qdq")
    assert variant(avx2, "u8s8-qdq")["accuracy"]["cosine"] < variant(contrast, "u8s8-qdq")["accuracy"]["cosine"]
    # The mitigation runs the same model again, only on the non-VNNI tier.
    assert variant(avx2, "u8s8-qdq+x64quantprecision")["within_tolerance"] is True
    assert not any(v["name"].endswith("+x64quantprecision") for v in contrast["variants"])
    # The same u8s8 model passes with x64quantprecision: farm attributes the loss to the kernels, not quantization.
    assert any(w.startswith("u8s8-qdq saturates on this tier") for w in avx2["warnings"]), avx2["warnings"]
    assert not any("saturates" in w for w in contrast["warnings"])
    assert saturation_safe(avx2["recommended"]) or avx2["recommended"] in ("fp32", "optimized"), avx2
    assert avx2["recommended"] not in ("u8s8-qdq", "u8s8-dynamic", "s8s8-qdq"), avx2


# Alone: it finds its farm's container by label among all the engine's.
@pytest.mark.alone
def test_a_target_killed_from_outside_fails_alone(
    engine: Engine, new_containers: Callable[[], list[str]], built: BuildResults, tmp_path: Path
) -> None:
    process = start_matrix("--target", "x86-avx2", "--target", "arm64", out=tmp_path)
    # arm64 is emulated, so it is evaluated last, after x86-avx2 has its results.
    container = wait_for(engine, ["farm.target=arm64"], process)
    engine.client.containers.get(container).kill()
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 5, stderr
    assert "Traceback" not in stderr
    report = read_report(tmp_path)
    validate(report)
    arm = target(report, "arm64")
    assert arm["status"] == "failed"
    assert "killed" in arm["reason"] and arm["exit_code"] == 137, arm
    assert target(report, "x86-avx2")["status"] == "ok"
    assert "arm64" in stdout and "FAILED" in stdout
    assert not new_containers()


# Alone: it finds its farm's container by label among all the engine's.
@pytest.mark.alone
def test_ctrl_c_leaves_no_container_behind(
    engine: Engine, new_containers: Callable[[], list[str]], built: BuildResults, tmp_path: Path
) -> None:
    process = start_matrix("--target", "arm64", out=tmp_path)
    wait_for(engine, [RUN_LABEL], process)
    os.kill(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted")
    assert not new_containers()


# Alone, as the CLI's: it finds its farm's container by label among all the engine's.
@pytest.mark.alone
def test_ctrl_c_in_the_python_api_raises_keyboard_interrupt_after_the_same_cleanup(
    engine: Engine, new_containers: Callable[[], list[str]], built: BuildResults, tmp_path: Path
) -> None:
    # As in a script or a notebook, Ctrl-C raises KeyboardInterrupt: a process that pytest-xdist's worker starts
    # inherits SIGINT ignored, and a library leaves the handlers to its caller.
    code = (
        "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "import farm.api as f\ntry:\n    f.matrix(targets=['arm64'])\n"
        "except KeyboardInterrupt:\n    print('KeyboardInterrupt')\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    wait_for(engine, [RUN_LABEL], process)
    os.kill(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0 and stdout == "KeyboardInterrupt\n", (stdout, stderr)
    assert not new_containers()
