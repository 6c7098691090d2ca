"""The saturation case, for real: MLAS's AVX2 kernels under ``qemu-x86_64 -cpu Haswell``, VNNI ones natively.

Slow by the standards of tests/unit (a few seconds, QEMU is ~1000x slower than the host), hence the mark. Skips
where QEMU is missing, unless FARM_REQUIRE_DOCKER=1 turns that into a failure.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from farm.job.evaluate import run_evaluate
from farm.job.prepare import run_prepare
from farm.job.report import TargetResult
from farm.job.spec import Spec
from farm.report.schema import validate_target
from tests.modelgen import make_saturating_classifier, write_job_spec

QEMU = Path("/usr/bin/qemu-x86_64")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.emulation


def skip_or_fail(reason: str) -> None:
    if os.environ.get("FARM_REQUIRE_DOCKER") == "1":
        pytest.fail(f"FARM_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


def host_has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def accuracy(result: TargetResult) -> dict[str, tuple[float, float | None]]:
    return {v.name: (v.accuracy.cosine, v.accuracy.top1_agreement) for v in result.variants if v.accuracy}


def test_u8s8_saturates_under_haswell_and_its_mitigations_do_not(tmp_path: Path) -> None:
    if platform.machine() != "x86_64":
        skip_or_fail(f"the Haswell case needs an x86_64 host, not {platform.machine()}")
    if not QEMU.is_file():
        skip_or_fail(f"{QEMU} is missing (install qemu-user-static)")
    make_saturating_classifier(tmp_path / "model.onnx").save(tmp_path)
    candidates = ["s8s8-qdq", "u8s8-qdq", "u8s8-qdq-rr", "u8u8-qdq", "u8s8-dynamic"]
    run_prepare(Spec.from_file(write_job_spec(tmp_path, stage="prepare", candidates=candidates)), tmp_path / "prep")
    shutil.copytree(tmp_path / "prep" / "artifacts", tmp_path / "artifacts")

    haswell = write_job_spec(
        tmp_path, name="haswell.json", target={"mode": "emulated", "cpu_model": "Haswell"}, candidates=candidates
    )
    command = [str(QEMU), "-cpu", "Haswell", sys.executable, "-m", "farm.job", str(haswell), str(tmp_path / "out")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    validate_target(data)
    figures = {v["name"]: (v["accuracy"]["cosine"], v["accuracy"]["top1_agreement"]) for v in data["variants"]}
    for saturating in ("u8s8-qdq", "s8s8-qdq", "u8s8-dynamic"):
        cosine, top1 = figures[saturating]
        assert cosine < 0.97 and top1 is not None and top1 < 0.5, (saturating, figures)
    for safe in ("u8u8-qdq", "u8s8-qdq-rr", "u8s8-qdq+x64quantprecision", "u8s8-dynamic+x64quantprecision"):
        cosine, top1 = figures[safe]
        assert cosine > 0.999 and top1 == 1.0, (safe, figures)
    # QEMU wall time is no speed evidence: the baseline, and a variant that cannot saturate if int8 is needed.
    assert data["speed_evidence"] == "none" and data["recommended"] in ("fp32", "optimized"), data
    assert data["int8_if_needed"] in ("u8u8-qdq", "u8s8-qdq-rr") or data["int8_if_needed"].endswith(
        "+x64quantprecision"
    )
    assert {v["timing"] for v in data["variants"]} == {"emulated"}

    if host_has_vnni():
        native = run_evaluate(Spec.from_file(write_job_spec(tmp_path, candidates=candidates)), tmp_path / "native")
        for name, (cosine, top1) in accuracy(native).items():
            assert cosine > 0.999 and top1 == 1.0, (name, accuracy(native))
