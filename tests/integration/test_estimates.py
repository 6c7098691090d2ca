"""Issue 19 on the real engine: emulated targets under farm's counting QEMU report estimated latencies for every
variant, deterministic across runs, and recommend a baseline while the estimate is not validated; without the
counting QEMU (--no-estimates here) the matrix runs as before and the target says how to get estimates.

arm64 runs under qemu-aarch64 -cpu neoverse-n1, and x86-avx2 is forced under qemu-x86_64 -cpu Haswell
(FARM_FORCE_EMULATED), so both estimates run on every x86 CPU kind, wherever x86-avx2 would otherwise run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from farm.controller.fleet import NO_COUNTING, BuildResults, Fleet
from farm.host import counting
from farm.host.probe import FORCE_EMULATED_ENV
from farm.job.estimate.costs import cost_models, trust
from farm.job.variants import BASELINES, FP32
from tests.integration.farmrun import farm_matrix, read_report, target
from tests.modelgen import make_cnn

# Beside other tests (tests/conftest.py), though its bound is tight: load does not move the counts. Eight matrices of
# its model one after another, four of them beside two busy loops, counted every arm64 variant within 0.011% of the
# others (Intel Xeon, 2 cores). Running alone did not keep it within the bound either: alone, one arm64 int8 variant
# once moved 0.34% and once 0.96%, a cause not found yet; moved() says which classes moved when it fails.
# On an AMD EPYC Zen 3 it failed in 3 of 3 suite runs (one int8 variant by 0.3-0.9%, the others exactly equal). What
# was measured there, under the counting QEMU (arm64, neoverse-n1), the 48x48 CNN's u8u8-qdq in 3 processes: the
# fewest of 3 marked runs is bimodal per process, 2107.1k or 2113.5k instructions (0.3% apart), whatever was allocated
# before; with the input copied to a page boundary and the outputs bound to onnxruntime's own memory (IO binding),
# 2088.1k or 2090.3k (0.1% apart); s8s8-qdq-pc kept within 0.015% either way. So where buffers lie moves a count,
# and the input and output copies are only part of it. Since then the job counts first, before fp32's accuracy,
# whose memory times shape (farm.job.evaluate.spread.count_first); on an AMD EPYC Zen 4 a count-only script gave
# the same counts in 4 processes, and four matrices here kept every variant within 0.023%.
pytestmark = [pytest.mark.docker, pytest.mark.emulation, pytest.mark.concurrent]

COST_MODELS = {"arm64": "neoverse-n1", "x86-avx2": "haswell"}
# The bound: the same variant in the same image counts the same within 0.1% in two runs.
DETERMINISM = 0.001


# What these tests do not look at, and each costs a session per variant under QEMU: the deployment profile and the
# divergence of variants out of tolerance.
UNLOOKED = ("--no-profile", "--divergence", "none")


def estimated_matrix(model: Path, data: Path, out: Path, *extra: str) -> dict[str, Any]:
    result = farm_matrix(
        str(model), "--data", str(data), "--samples", "2", "-t", "arm64", "-t", "x86-avx2", *UNLOOKED, *extra, out=out
    )
    assert result.returncode == 0, result.stderr
    return read_report(out)


def cache_without_bundle(fleet: Fleet, tmp_path: Path) -> Path:
    """A farm cache that links to everything of this host's (wheels, site-packages, the CPUID library) but the
    counting QEMU."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for child in fleet.config.cache_dir.iterdir():
        if child.name != counting.CACHE_FOLDER:
            (cache / child.name).symlink_to(child)
    return cache


def moved(entry: dict[str, Any], again: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per variant whose count differs between two matrices: the classes that moved, by how much, and each run's
    spread: what to look at when the determinism bound fails."""
    runs = {v["name"]: v["instructions"] for v in again["variants"] if v["instructions"]}
    found = {}
    for v in entry["variants"]:
        other = runs.get(v["name"])
        if not v["instructions"] or other is None:
            continue
        classes = {k: other["per_run"].get(k, 0) - n for k, n in v["instructions"]["per_run"].items()}
        if any(classes.values()):
            found[v["name"]] = {
                "classes": {k: d for k, d in classes.items() if d},
                "spread": (v["instructions"]["spread"], other["spread"]),
            }
    return found


def totals(entry: dict[str, Any]) -> dict[str, int]:
    return {v["name"]: sum(v["instructions"]["per_run"].values()) for v in entry["variants"] if v["instructions"]}


def test_emulated_targets_estimate_every_variant_deterministically_and_claim_no_speed_untrusted(
    counting_qemu: counting.CountingQemu,
    built: BuildResults,
    fleet: Fleet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FORCE_EMULATED_ENV, "x86-avx2")
    monkeypatch.setenv("FARM_ESTIMATES", "1")
    cnn = make_cnn(tmp_path / "cnn" / "model.onnx", samples=2, size=48)
    data = tmp_path / "data.npz"
    np.savez(data, **cnn.inputs)  # type: ignore[arg-type]
    first = estimated_matrix(cnn.path, data, tmp_path / "a")
    second = estimated_matrix(cnn.path, data, tmp_path / "b")
    for name, cost_model in COST_MODELS.items():
        entry, again = target(first, name), target(second, name)
        assert entry["mode"] == "emulated" and entry["status"] == "ok", entry["reason"]
        expected = trust(cost_models()[cost_model])
        assert entry["estimate"]["cost_model"] == cost_model
        assert entry["estimate"]["trusted"] is expected.trusted
        ran = [v for v in entry["variants"] if v["status"] == "ok"]
        assert len(ran) >= 4 and all(v["timing"] == "estimated" and v["latency_ms"]["p50"] > 0 for v in ran), ran
        counts = {v["name"]: v["instructions"]["per_run"] for v in ran}
        # What the classes are for: the int8 kernels multiply in integer SIMD, fp32's in floating point.
        fp32, u8u8 = counts[FP32], counts["u8u8-qdq"]
        assert u8u8["int_simd_mul"] > 10 * max(1, fp32["int_simd_mul"]), (fp32, u8u8)
        assert fp32["fp_simd_fma"] > 10 * max(1, u8u8["fp_simd_fma"]), (fp32, u8u8)
        a, b = totals(entry), totals(again)
        assert a.keys() == b.keys() and len(a) == len(ran)
        drift = {n: abs(a[n] - b[n]) / a[n] for n in a}
        assert max(drift.values()) <= DETERMINISM, (drift, moved(entry, again))
        if not expected.trusted:
            assert entry["speed_evidence"] == "none" and entry["recommended"] in BASELINES, entry
            assert entry["recommendation_reason"].startswith(f"speed unknown on {name}")
            passing = [v["name"] for v in ran if v["within_tolerance"] and v["name"] not in BASELINES]
            assert entry["int8_if_needed"] in passing


def test_without_the_counting_qemu_the_matrix_runs_as_before_and_says_how_to_get_estimates(
    built: BuildResults, fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cache with all of farm's (wheels, site-packages, CPUID library) but the counting QEMU: a host without it.
    monkeypatch.setenv("FARM_CACHE_DIR", str(cache_without_bundle(fleet, tmp_path)))
    monkeypatch.setenv("FARM_ESTIMATES", "1")
    result = farm_matrix("-t", "arm64", "--samples", "4", *UNLOOKED, out=tmp_path / "out")
    assert result.returncode == 0, result.stderr
    entry = target(read_report(tmp_path / "out"), "arm64")
    assert entry["status"] == "ok" and entry.get("estimate") is None
    assert {v["timing"] for v in entry["variants"]} == {"none"}
    assert entry["speed_evidence"] == "none" and entry["recommended"] in BASELINES
    assert NO_COUNTING.format(target="arm64") in entry["warnings"]
    # --no-estimates asks for accuracy only: the same run, and nothing to say about it.
    again = farm_matrix("-t", "arm64", "--samples", "4", "--no-estimates", *UNLOOKED, out=tmp_path / "again")
    assert again.returncode == 0, again.stderr
    assert NO_COUNTING.format(target="arm64") not in target(read_report(tmp_path / "again"), "arm64")["warnings"]


def test_a_counting_qemu_that_cannot_start_the_job_leaves_the_accuracy_and_says_why(
    counting_qemu: counting.CountingQemu,
    built: BuildResults,
    fleet: Fleet,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A bundle that lost a library (a half-copied cache): complete by its manifest, yet its QEMU cannot load.
    cache = cache_without_bundle(fleet, tmp_path)
    broken = cache / counting.CACHE_FOLDER / counting_qemu.bundle.name
    shutil.copytree(counting_qemu.bundle, broken)
    (broken / "lib" / "libglib-2.0.so.0").unlink()
    monkeypatch.setenv("FARM_CACHE_DIR", str(cache))
    monkeypatch.setenv("FARM_ESTIMATES", "1")
    result = farm_matrix("-t", "arm64", "--samples", "4", *UNLOOKED, out=tmp_path / "out")
    assert result.returncode == 0, result.stderr
    entry = target(read_report(tmp_path / "out"), "arm64")
    assert entry["status"] == "ok" and all(v["accuracy"] for v in entry["variants"] if v["status"] == "ok")
    assert {v["timing"] for v in entry["variants"]} == {"none"}
    said = [w for w in entry["warnings"] if w.startswith("no speed estimate: the counting QEMU did not start the job")]
    assert len(said) == 1 and "libglib-2.0.so.0" in said[0], entry["warnings"]
