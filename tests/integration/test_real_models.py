"""Issue 6 on the real engine: `farm matrix` on models shaped the way real exporters write them.

Each model is generated here (tests/modelgen.py) to reproduce one thing that went wrong on publicly released models:
a batch axis written as ``dim_value: -1``, compute inside If branches, weights in external data, several outputs
of which int8 moves one, an ``[N, T, C]`` softmax, an opset-11 CNN that per-channel quantization needs at 13, a
user's own metric, and variants whose timings differ by less than the run's noise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from farm.controller.fleet import BuildResults, Fleet
from farm.report.schema import validate
from tests.conftest import ROOT
from tests.integration.farmrun import farm_matrix, native_target, read_report, target, variant, with_candidates, words
from tests.modelgen import (
    ModelData,
    make_dynamic_batch_cnn,
    make_external_data_model,
    make_if_branch_model,
    make_mlp_classifier,
    make_sequence_and_state_model,
    relocate_external_data,
)

# Beside other tests (tests/conftest.py): statuses, accuracy and the rules that hold whatever the timings (a variant
# that quantized nothing is never recommended); the speed claim inside the noise is test_timing.py's, alone.
pytestmark = [pytest.mark.docker, pytest.mark.emulation, pytest.mark.concurrent]

STATIC = ("s8s8-qdq", "u8s8-qdq", "u8s8-qdq-rr", "u8u8-qdq", "s8s8-qdq-pc", "u8s8-qdq-pc")


def cpu_targets(fleet: Fleet) -> list[str]:
    """Every default CPU target this host runs (natively, masked or emulated): x86-avx2 and arm64 at least."""
    return [
        t.name
        for t in fleet.config.targets
        if t.image == "cpu" and fleet.placements[t.name].runnable and not t.on_request
    ]


def targets_args(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("--target", name)]


def save_data(model: ModelData, folder: Path) -> Path:
    path = folder / "data.npz"
    np.savez(path, **model.inputs)  # type: ignore[arg-type]
    return path


def run(model: Path, *args: str, out: Path) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    result = farm_matrix(str(model), "--iterations", "20", *args, out=out)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr + result.stdout
    report = read_report(out)
    validate(report)
    return report, result


# 1 and 7: a paddle-style batch axis (dim_value -1), and per-channel variants of an opset-11 CNN.


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelData]:
    folder = tmp_path_factory.mktemp("cnn")
    return folder, make_dynamic_batch_cnn(folder / "model.onnx")


def test_a_minus_one_batch_runs_on_every_cpu_target_with_data_and_per_channel_variants(
    fleet: Fleet, built: BuildResults, cnn: tuple[Path, ModelData]
) -> None:
    folder, model = cnn
    names = cpu_targets(fleet)
    report, _ = run(model.path, "--data", str(save_data(model, folder)), *targets_args(names), out=folder / "data")
    assert report["model"]["inputs"][0]["shape"] == [None, 3, 16, 16]  # -1 is dynamic, as onnxruntime reads it
    assert report["model"]["opsets"] == {"ai.onnx": 11}
    assert sum("converted from opset 11 to 13" in w for w in report["warnings"]) == 1, report["warnings"]
    for name in names:
        entry = target(report, name)
        assert entry["status"] == "ok", entry
        assert variant(entry, "fp32")["status"] == "ok"
        for per_channel in ("s8s8-qdq-pc", "u8s8-qdq-pc"):
            found = variant(entry, per_channel)
            # Made once at opset 13, and loaded by this target's own onnxruntime.
            assert found["status"] == "ok", found
            assert found["quantization"]["per_channel"] is True and found["quantization"]["opset"] == 13
            assert found["quantization"]["nodes"]["quantized"] == 2
        assert variant(entry, "s8s8-qdq")["quantization"]["opset"] == 11


def test_a_minus_one_batch_runs_on_every_cpu_target_with_shape(
    fleet: Fleet, built: BuildResults, cnn: tuple[Path, ModelData]
) -> None:
    folder, model = cnn
    names = cpu_targets(fleet)
    report, _ = run(model.path, "--shape", "x=1,3,16,16", "--samples", "4", *targets_args(names), out=folder / "shape")
    assert report["data"]["synthetic"] is True and report["data"]["samples"] == 4
    for name in names:
        entry = target(report, name)
        assert entry["status"] == "ok", entry
        assert all(v["status"] == "ok" for v in entry["variants"]), entry["variants"]


# 2: compute inside If branches.


def test_int8_variants_that_quantized_nothing_are_never_ok_nor_recommended(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    model = make_if_branch_model(tmp_path / "model.onnx")
    names = cpu_targets(fleet)
    report, result = run(
        model.path, "--data", str(save_data(model, tmp_path)), *targets_args(names), out=tmp_path / "out"
    )
    for name in names:
        entry = target(report, name)
        assert entry["status"] == "ok", entry
        skipped = [v for v in entry["variants"] if v["name"].split("+")[0] in (*STATIC, "u8s8-dynamic")]
        assert len(skipped) >= len(STATIC) + 1
        for found in skipped:
            assert found["status"] == "skipped", found
            assert found["quantization"]["nodes"]["quantized"] == 0
            assert found["error"].startswith("not quantized: all 4 quantizable nodes sit inside If/Loop/Scan")
        subgraph = variant(entry, "u8s8-dynamic-subgraph")
        assert subgraph["status"] == "ok", subgraph
        assert subgraph["quantization"]["nodes"]["quantized_in_subgraphs"] == 4
        assert entry["recommended"] not in [v["name"] for v in skipped]
    assert "not-q" in result.stdout and "not quantized: all 4 quantizable nodes" in words(result.stdout)


# 3: weights in external data.


def test_a_model_with_external_data_runs_on_every_cpu_target(fleet: Fleet, built: BuildResults, tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    # torch.onnx.export's names: model.onnx beside model.onnx.data, the name farm's own rewrite uses for big models.
    model = make_external_data_model(tmp_path / "model" / "model.onnx", location="model.onnx.data")
    assert (tmp_path / "model" / "model.onnx").stat().st_size < 1000  # the weights really are outside it
    weights = tmp_path / "model" / "model.onnx.data"
    # World-readable, as a download leaves it (onnx itself writes 0600); a hard link to it would trip onnx's
    # hard-link guard, and a write into the run must never reach it.
    weights.chmod(0o644)
    mode, content = weights.stat().st_mode, weights.read_bytes()
    names = cpu_targets(fleet)
    report, _ = run(model.path, "--data", str(save_data(model, tmp_path)), *targets_args(names), out=tmp_path / "out")
    for name in names:
        entry = target(report, name)
        assert entry["status"] == "ok", entry
        fp32 = variant(entry, "fp32")
        assert fp32["status"] == "ok" and fp32["size_bytes"] > 10_000  # model and its weights file
        assert variant(entry, "u8u8-qdq")["status"] == "ok"
    assert weights.stat().st_mode == mode and weights.read_bytes() == content  # the user's file is untouched
    assert weights.stat().st_nlink == 1


def test_external_data_outside_the_model_folder_is_refused_before_any_container(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    make_external_data_model(tmp_path / "model" / "mlp.onnx")
    (tmp_path / "model" / "weights.bin").rename(tmp_path / "weights.bin")
    relocate_external_data(tmp_path / "model" / "mlp.onnx", "../weights.bin")
    # No engine at all: an exit 2 proves the refusal came before farm asked an engine for anything.
    result = subprocess.run(
        [sys.executable, "-m", "farm", "matrix", "--quiet", str(tmp_path / "model" / "mlp.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'../weights.bin'" in lines[0] and "mlp.onnx" in lines[0], result.stderr
    assert result.stdout == ""


# 4 and 5: two outputs, one of which int8 moves; an [N, T, C] softmax.


@pytest.fixture(scope="module")
def sequence_run(
    fleet: Fleet, built: BuildResults, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, Any], str]]:
    folder = tmp_path_factory.mktemp("sequence")
    model = make_sequence_and_state_model(folder / "model.onnx")
    report, result = run(
        model.path, "--data", str(save_data(model, folder)), "--target", native_target(fleet), out=folder / "out"
    )
    yield report, result.stdout


def test_the_output_that_drifted_is_named_in_the_report_and_the_table(
    fleet: Fleet, sequence_run: tuple[dict[str, Any], str]
) -> None:
    report, table = sequence_run
    entry = target(report, native_target(fleet))
    drifted = [v for v in entry["variants"] if v["status"] == "ok" and v["within_tolerance"] is False]
    assert drifted, entry["variants"]
    for found in drifted:
        accuracy = found["accuracy"]
        assert accuracy["worst_output"] == "probs", found
        state = next(o for o in accuracy["outputs"] if o["name"] == "state")
        assert state["counted"] and state["cosine"] > 0.9999  # int8 left the state alone
    assert "drifted: probs (cosine" in table


def test_a_sequence_of_distributions_gets_per_position_top1(
    fleet: Fleet, sequence_run: tuple[dict[str, Any], str]
) -> None:
    report, _ = sequence_run
    entry = target(report, native_target(fleet))
    probs = [
        next(o for o in v["accuracy"]["outputs"] if o["name"] == "probs")
        for v in entry["variants"]
        if v["accuracy"] is not None
    ]
    assert all(p["top1_agreement"] is not None for p in probs)
    # 12 samples of 6 positions: agreement is counted per position, in steps of 1/72.
    assert any(0 < p["top1_agreement"] < 1 for p in probs), probs
    assert all(abs(p["top1_agreement"] * 72 - round(p["top1_agreement"] * 72)) < 1e-6 for p in probs), probs
    state = [
        next(o for o in v["accuracy"]["outputs"] if o["name"] == "state")
        for v in entry["variants"]
        if v["accuracy"] is not None
    ]
    assert all(s["top1_agreement"] is None for s in state)  # tanh activations are not a decision


# 6: the user's own metric.

METRIC = '''
import numpy as np

calls = 0


def agreement(fp32, outputs, labels):
    """Top-1 agreement of the logits; raises on its third call (s8s8-qdq: fp32 and optimized come first)."""
    global calls
    calls += 1
    if calls == 3:
        raise ValueError("third call")
    agree = float(np.mean(fp32["logits"].argmax(-1) == outputs["logits"].argmax(-1)))
    return {"passed": agree >= 0.9, "agreement": agree}
'''


def test_a_metric_changes_the_verdict_and_a_raising_metric_fails_that_variant_only(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    model = make_mlp_classifier(tmp_path / "model.onnx")
    (tmp_path / "metric.py").write_text(METRIC)
    # Built-in tolerance at cosine 1.0 would fail every int8 variant; the metric says which pass.
    report, table = run(
        model.path,
        "--data",
        str(save_data(model, tmp_path)),
        "--target",
        native_target(fleet),
        "--metric",
        f"{tmp_path / 'metric.py'}:agreement",
        "--min-cosine",
        "1.0",
        out=tmp_path / "out",
    )
    assert report["tolerance"]["metric"] == "metric.py:agreement"
    entry = target(report, native_target(fleet))
    assert entry["status"] == "ok"
    s8s8 = variant(entry, "s8s8-qdq")
    assert s8s8["status"] == "failed" and s8s8["error"] == "metric agreement raised ValueError: third call"
    u8u8 = variant(entry, "u8u8-qdq")
    assert u8u8["accuracy"]["cosine"] < 1.0 and u8u8["within_tolerance"] is True, u8u8
    assert u8u8["accuracy"]["metric"] == {"scores": {"agreement": 1.0}, "passed": True}
    assert "metric passed: agreement 1" in words(table.stdout)


# Issue 8, line 5: an IR 3 model lists its weights as graph inputs too, which optimizers and quantizers refuse.


def test_an_ir3_model_from_the_onnx_wheel_is_quantized_on_the_native_target(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_resnet50.onnx"
    assert onnx.load(str(light), load_external_data=False).ir_version == 3
    with_candidates(tmp_path / "targets.toml", ["u8u8-qdq"])
    report, _ = run(
        light,
        "--targets",
        str(tmp_path / "targets.toml"),
        "--target",
        native_target(fleet),
        "--samples",
        "2",
        out=tmp_path / "out",
    )
    assert any("IR 3, which lists its 269 weights as graph inputs" in w for w in report["warnings"])
    entry = target(report, native_target(fleet))
    int8 = variant(entry, "u8u8-qdq")
    assert int8["status"] == "ok" and int8["quantization"]["nodes"]["quantized"] > 50, int8
    assert int8["accuracy"] is not None and int8["latency_ms"]["p50"] > 0
    assert variant(entry, "optimized")["status"] == "ok"
    fp32 = variant(entry, "fp32")
    assert fp32["size_bytes"] < 200_000  # fp32 is the model as given (weights made by ConstantOfShape)


# Issue 8, line 3: the tracing pitfall, a dynamic batch declared but a Reshape that baked in batch 1.


def test_the_export_check_flags_the_reshape_that_baked_in_batch_1_and_passes_the_fix(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    from tests.modelgen import make_traced_batch_model

    for baked, expected in ((True, ("flagged", "flatten", "Reshape")), (False, ("passed", None, None))):
        folder = tmp_path / ("baked" if baked else "fixed")
        folder.mkdir()
        model = make_traced_batch_model(folder / "model.onnx", baked=baked)
        report, result = run(
            model.path, "--data", str(save_data(model, folder)), "--target", native_target(fleet), out=folder / "out"
        )
        check = target(report, native_target(fleet))["export_check"]
        assert (check["status"], check["node"], check["op"]) == expected, check
        if baked:
            assert "export pitfall:" in result.stdout and "'flatten'" in result.stdout
