"""Issue 7 on the real engine: x86 ISA tiers by CPUID masking, and what a host without cpuid_fault does instead.

Masking needs an x86 CPU with the cpuid_fault flag and more ISA than the tier; those tests skip elsewhere with that
hardware reason. Everything around them runs everywhere: a masked run whose mask cannot take must fail, never report
this CPU's own kernels under the tier's name.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from farm.backend import runner
from farm.backend.engine import Engine, Mount
from farm.controller.fleet import BuildResults, Fleet
from farm.host.masking import CPUID_FAULT
from farm.host.probe import Placement
from farm.report.schema import validate
from farm.targets.cpuflags import cleared_features, mask_rules, unseen
from tests.conftest import ROOT
from tests.integration.conftest import image_of
from tests.integration.farmrun import farm_matrix, native_target, read_report, target, variant, words
from tests.modelgen import make_cnn, make_mlp_classifier, make_saturating_classifier, write_job_spec

# Beside other tests (tests/conftest.py): kernels, accuracy and labels; no figure that timings change is asserted.
pytestmark = [pytest.mark.docker, pytest.mark.concurrent]


def test_a_masked_run_whose_mask_cannot_take_fails_with_the_reason(
    engine: Engine, fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    if fleet.host.arch != "x86_64":
        pytest.skip(f"CPUID masking is x86 only; this host is {fleet.host.arch}")
    if CPUID_FAULT in fleet.host.cpu_flags:
        pytest.skip("this CPU has cpuid_fault, so masks take here (test_masked_tiers_take_their_kernels covers it)")
    tier = fleet.config.target("x86-avx2")
    cleared = cleared_features(tier.cpu_excludes)
    placement = Placement(mode="masked", mask=mask_rules(cleared), unseen=unseen(cleared))
    inputs, out = tmp_path / "in", tmp_path / "out"
    make_mlp_classifier(inputs / "model.onnx").save(inputs)
    write_job_spec(
        inputs, artifacts=None, candidates=[], target={"mode": "masked", "cpu_unseen": list(placement.unseen)}
    )
    for path in (tmp_path, inputs, *inputs.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    result = engine.run(
        runner.run_spec(
            tier,
            placement,
            image_of(built, "x86-avx2"),
            ["-m", "farm.job", "/farm/in/spec.json", "/farm/out"],
            mounts=[
                Mount(source=inputs, target="/farm/in", read_only=True),
                Mount(source=out, target="/farm/out", read_only=False),
            ],
            cache_dir=fleet.config.cache_dir,
        )
    )
    assert result.exit_code == 0, result.log_tail
    written = json.loads((out / "result.json").read_text())
    assert written["status"] == "failed" and written["variants"] == [], written
    assert written["reason"].startswith("the CPUID mask did not take (failed: arch_prctl(ARCH_SET_CPUID) refused")
    assert "onnxruntime would run this CPU's own kernels" in written["reason"]
    assert "AVX2" in written["cpu_seen"]  # what the process saw: this CPU, unmasked


def test_masked_tiers_take_their_kernels(fleet: Fleet, built: BuildResults, tmp_path: Path) -> None:
    flags = fleet.host.cpu_flags
    if not {CPUID_FAULT, "avx512_vnni"} <= flags:
        pytest.skip(
            "needs an x86 CPU with AVX-512 VNNI and the cpuid_fault flag (an Intel Xeon since Cascade "
            f"Lake); this one has {'no cpuid_fault' if CPUID_FAULT not in flags else 'no AVX-512 VNNI'}"
        )
    model = make_saturating_classifier(tmp_path / "model.onnx", samples=32)
    np.savez(tmp_path / "data.npz", **model.inputs)  # type: ignore[arg-type]
    tiers = ["x86-avx2", "x86-avx512", "x86-avx512-vnni"]
    result = farm_matrix(
        str(model.path),
        "--data",
        str(tmp_path / "data.npz"),
        "--iterations",
        "20",
        *(arg for name in tiers for arg in ("--target", name)),
        out=tmp_path / "out",
    )
    assert result.returncode == 0, result.stderr
    report = read_report(tmp_path / "out")
    validate(report)
    avx2, avx512, vnni = (target(report, name) for name in tiers)
    # On a CPU with AMX, MLAS would take AMX kernels, so the VNNI tier is masked too.
    vnni_mode = "masked" if "amx_int8" in flags else "native"
    assert (avx2["mode"], avx512["mode"], vnni["mode"]) == ("masked", "masked", vnni_mode)
    # What each runtime saw: the proof that the masks took.
    assert "AVX2" in avx2["cpu_seen"] and "AVX512F" not in avx2["cpu_seen"]
    assert "AVX512F" in avx512["cpu_seen"] and "AVX512VNNI" not in avx512["cpu_seen"]
    assert "AVX512VNNI" in vnni["cpu_seen"]
    # U8S8 saturates (VPMADDUBSW) on both masked tiers, not on VNNI (VPDPBUSD), and U8U8 nowhere.
    for entry in (avx2, avx512):
        assert variant(entry, "u8s8-qdq")["within_tolerance"] is False, variant(entry, "u8s8-qdq")
        assert variant(entry, "u8u8-qdq")["within_tolerance"] is True
        assert variant(entry, "fp32")["timing"] == "masked"
    assert variant(vnni, "u8s8-qdq")["within_tolerance"] is True
    assert variant(vnni, "fp32")["timing"] == ("masked" if vnni_mode == "masked" else "measured")
    assert "masked: this host's CPU running the tier's kernels" in words(result.stdout)


@pytest.mark.emulation
def test_a_target_past_its_budget_fails_alone_and_says_so(fleet: Fleet, built: BuildResults, tmp_path: Path) -> None:
    targets = (ROOT / "targets.toml").read_text()
    targets += '\n[targets.arm64-hurried]\nplatform = "linux/arm64"\nemulate_cpu = "neoverse-n1"\nbudget_s = 3\n'
    (tmp_path / "targets.toml").write_text(targets)
    model = make_cnn(tmp_path / "cnn.onnx", samples=4)
    np.savez(tmp_path / "data.npz", **model.inputs)  # type: ignore[arg-type]
    native = native_target(fleet)
    result = farm_matrix(
        str(model.path),
        "--data",
        str(tmp_path / "data.npz"),
        "--targets",
        str(tmp_path / "targets.toml"),
        "--target",
        native,
        "--target",
        "arm64-hurried",
        "--iterations",
        "5",
        out=tmp_path / "out",
    )
    assert result.returncode == 5, result.stderr
    report = read_report(tmp_path / "out")
    validate(report)
    hurried = target(report, "arm64-hurried")
    assert hurried["status"] == "failed", hurried
    assert hurried["reason"].startswith("exceeded its wall-clock budget of 3 s and was stopped"), hurried["reason"]
    assert "budget_s in targets.toml" in hurried["reason"]
    assert target(report, native)["status"] == "ok"
