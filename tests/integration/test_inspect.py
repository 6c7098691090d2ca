"""Issue 8 on the real engine: `farm inspect` predicts what each target's runtime makes of a model, from the runtime
in the target's own image, and `farm matrix` confirms it with the same class."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from farm.backend.engine import Engine
from farm.controller.fleet import BuildResults, Fleet, build_images
from farm.controller.progress import QuietReporter
from farm.host.owner import OWNER_LABEL, owner_pid
from tests.conftest import ROOT
from tests.integration.farmrun import farm_matrix, read_report, target, with_candidates
from tests.modelgen import make_if_branch_model

# Beside other tests (tests/conftest.py): verdicts and load failures, and only its own farm's containers.
pytestmark = [pytest.mark.docker, pytest.mark.emulation, pytest.mark.concurrent]


def farm_inspect(*args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result, report, _ = farm_inspect_pid(*args)
    return result, report


def farm_inspect_pid(*args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], int]:
    """Also the process's id: the owner label of every container it started names it."""
    command = [sys.executable, "-m", "farm", "inspect", "--json", *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) as process:
        stdout, stderr = process.communicate(timeout=900)
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result, json.loads(result.stdout), process.pid


def relu_model(path: Path, *, opset: int | None = None, ir_version: int | None = None) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "relu", [x], [y])
    kwargs: dict[str, Any] = {} if opset is None else {"opset_imports": [helper.make_opsetid("", opset)]}
    if ir_version is not None:
        kwargs["ir_version"] = ir_version
    onnx.save(helper.make_model(graph, **kwargs), path)  # with no IR given, onnx >= 1.23 writes IR 14
    return path


def verdicts(report: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {t["name"]: (t["verdict"], t["class"]) for t in report["targets"]}


def test_an_ir14_model_is_predicted_to_fail_on_every_1_31_target_and_the_matrix_confirms_the_class(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    model = relu_model(tmp_path / "ir14.onnx")
    assert onnx.load(str(model)).ir_version >= 14
    result, report = farm_inspect(str(model))
    assert result.returncode == 5, result.stderr
    built_names = {b.target for b in built.built}
    for entry in report["targets"]:
        if entry["runtime"] == "onnxruntime==1.31.1" and entry["name"] in built_names:
            assert (entry["verdict"], entry["class"], entry["max_ir_version"]) == ("fails", "ir-version", 13), entry
    run = farm_matrix(str(model), "--target", "x86-avx2", "--target", "arm64", out=tmp_path / "out")
    assert run.returncode == 5, run.stderr
    matrix = read_report(tmp_path / "out")
    for name in ("x86-avx2", "arm64"):
        failure = target(matrix, name)["load_failure"]
        assert failure["class"] == "ir-version" and failure["predicted"] is True, failure
        assert "(ir-version)" in target(matrix, name)["reason"]


def test_inspect_counts_ops_inside_if_branches(built: BuildResults, tmp_path: Path) -> None:
    model = make_if_branch_model(tmp_path / "if.onnx")
    result, report = farm_inspect(str(model.path), "--target", "x86-avx2")
    assert result.returncode == 0, result.stderr
    ops = report["model"]["ops"]
    assert ops["Conv"] == {"nodes": 2, "in_subgraphs": 2} and ops["MatMul"] == {"nodes": 2, "in_subgraphs": 2}
    assert ops["If"] == {"nodes": 1, "in_subgraphs": 0}
    assert report["model"]["dynamic_inputs"] == {"x": [0]}
    assert verdicts(report) == {"x86-avx2": ("loads", None)}


def test_opset_and_missing_kernel_failures_are_predicted_and_confirmed(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    build_images(fleet, [fleet.config.target("x86-ort117")], explicit=True, reporter=QuietReporter())
    # Opset 21 is newer than onnxruntime 1.17 knows (20), and fine for 1.31 (26).
    opset21 = relu_model(tmp_path / "opset21.onnx", opset=21, ir_version=9)
    result, report = farm_inspect(str(opset21), "--target", "x86-ort117", "--target", "x86-avx2")
    assert result.returncode == 5
    assert verdicts(report) == {"x86-ort117": ("fails", "opset"), "x86-avx2": ("loads", None)}
    run = farm_matrix(
        str(opset21), "--target", "x86-ort117", "--target", "x86-avx2", "--iterations", "5", out=tmp_path / "opset"
    )
    assert run.returncode == 5, run.stderr
    matrix = read_report(tmp_path / "opset")
    assert target(matrix, "x86-ort117")["load_failure"] == {
        "class": "opset",
        "predicted": True,
        "prediction": "the model imports ai.onnx opset 21; onnxruntime 1.17.3 supports 20 at most",
    }
    assert target(matrix, "x86-avx2")["status"] == "ok"
    # ImageDecoder (opset 20) is an ONNX op that onnxruntime has no kernel for.
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [64])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, ["h", "w", 3])
    graph = helper.make_graph([helper.make_node("ImageDecoder", ["x"], ["y"], name="decode")], "decode", [x], [y])
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9), tmp_path / "decode.onnx"
    )
    result, report = farm_inspect(str(tmp_path / "decode.onnx"), "--target", "x86-avx2")
    assert verdicts(report) == {"x86-avx2": ("fails", "missing-kernel")}
    assert report["targets"][0]["nodes"] == ["decode"]
    run = farm_matrix(str(tmp_path / "decode.onnx"), "--target", "x86-avx2", out=tmp_path / "decode")
    failure = target(read_report(tmp_path / "decode"), "x86-avx2")["load_failure"]
    assert failure["class"] == "missing-kernel" and failure["predicted"] is True, failure


def test_a_second_inspect_asks_no_runtime_again(engine: Engine, built: BuildResults, tmp_path: Path) -> None:
    model = relu_model(tmp_path / "m.onnx", opset=17, ir_version=8)
    farm_inspect(str(model), "--target", "x86-avx2", "--target", "arm64")
    time.sleep(2)  # the engine's event times are whole seconds: nothing from before may fall in the window
    started = int(time.time())
    result, report, pid = farm_inspect_pid(str(model), "--target", "x86-avx2", "--target", "arm64")
    ended = int(time.time()) + 1
    assert result.returncode == 0 and verdicts(report) == {"x86-avx2": ("loads", None), "arm64": ("loads", None)}
    events = engine.client.events(
        since=started, until=ended, decode=True, filters={"type": "container", "event": "create"}
    )
    # Its own: the other test process's farm runs create containers meanwhile.
    created = [e for e in events if owner_pid(e["Actor"]["Attributes"].get(OWNER_LABEL, "")) == pid]
    assert created == [], created


# Issue 8, line 4: `farm optimize`, with and without constant folding.


def conv_bn_model(path: Path) -> Path:
    """Conv + BatchNormalization + a constant subgraph to fold: what fusion and folding are for."""
    import numpy as np
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    arrays = {
        "w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
        "scale": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "bias": rng.standard_normal(8).astype(np.float32),
        "mean": rng.standard_normal(8).astype(np.float32) * 0.1,
        "var": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "two": np.array(2.0, np.float32),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"], name="bn"),
            helper.make_node("Mul", ["two", "two"], ["four"], name="constant_math"),
            helper.make_node("Mul", ["b", "four"], ["y"], name="scale_out"),
        ],
        "conv_bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        initializer=[numpy_helper.from_array(a, n) for n, a in arrays.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7), path)
    return path


def test_farm_optimize_matches_the_input_and_loads_in_every_cpu_target(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    source = conv_bn_model(tmp_path / "conv_bn.onnx")
    cpu = [
        t.name
        for t in fleet.config.targets
        if t.image == "cpu" and fleet.placements[t.name].runnable and not t.on_request
    ]
    with_candidates(tmp_path / "targets.toml", [])
    for fold in (True, False):
        out = tmp_path / f"out-{fold}.onnx"
        result = subprocess.run(
            [sys.executable, "-m", "farm", "optimize", str(source), str(out), *([] if fold else ["--no-fold"])],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr
        assert "matches the input" in result.stdout and "synthetic" in result.stderr, result
        difference = float(result.stdout.split("max abs difference ")[1].split(",")[0])
        assert difference <= 1e-5
        written = onnx.load(str(out))
        ops = [n.op_type for n in written.graph.node]
        assert "BatchNormalization" not in ops  # fused into the Conv by onnxoptimizer
        # Without folding the constant 2 * 2 stays a node; folding computes it (and onnxruntime's basic level
        # then fuses the constant Mul into the Conv too).
        names = [n.name for n in written.graph.node]
        assert ("constant_math" not in names and len(ops) < 3) if fold else ("constant_math" in names), ops
        assert written.ir_version == 7
        _, report = farm_inspect(str(out), *(arg for name in cpu for arg in ("--target", name)))
        assert {v[0] for v in verdicts(report).values()} == {"loads"}, report
        run = farm_matrix(
            str(out),
            "--targets",
            str(tmp_path / "targets.toml"),
            "--samples",
            "2",
            *(arg for name in cpu for arg in ("--target", name)),
            out=tmp_path / f"matrix-{fold}",
        )
        assert run.returncode == 0, run.stderr
        matrix = read_report(tmp_path / f"matrix-{fold}")
        assert all(target(matrix, name)["status"] == "ok" for name in cpu)
