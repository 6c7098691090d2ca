"""Exporter patterns fused before quantizing (farm.job.fuse), and the tune stage trying the fusion, on the host's
real onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from farm.job import tune
from farm.job.data import Dataset
from farm.job.fuse import fuse
from farm.job.quantize import quantize
from farm.job.spec import Calibration, Spec
from tests.modelgen import HARDSWISH_NODES, make_hardswish_cnn, write_job_spec


def outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def test_both_written_out_forms_of_hardswish_become_one_node_each_and_compute_the_same(tmp_path: Path) -> None:
    data = make_hardswish_cnn(tmp_path / "model.onnx")
    model = onnx.load(str(data.path))
    fused, done = fuse(model)
    assert [(f.kind, len(f.replaced)) for f in done] == [("HardSwish", HARDSWISH_NODES[i % 2]) for i in range(4)]
    assert done[0].replaced == ("hs0_add", "hs0_clip", "hs0_mul", "hs0_div")
    assert done[0].node == "hs0_div/HardSwishFusion"
    assert done[1].node == "hs1_mul/HardSwishFusion"
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("HardSwish") == 4 and not {"Clip", "Div", "Min", "Relu"} & set(ops)
    onnx.checker.check_model(fused)
    # The constants only the patterns read are gone; the model given is untouched.
    assert {t.name for t in fused.graph.initializer} & {"three", "zero", "six", "sixth"} == set()
    assert len(model.graph.node) == len(onnx.load(str(data.path)).graph.node)
    for x in data.inputs["x"][:4]:
        expected = outputs(model, x)
        np.testing.assert_allclose(outputs(fused, x), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_below_opset_14_hardswish_is_x_times_a_hardsigmoid(tmp_path: Path) -> None:
    data = make_hardswish_cnn(tmp_path / "model.onnx", opset=13, layers=2)
    fused, done = fuse(onnx.load(str(data.path)))
    assert len(done) == 2
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("HardSigmoid") == 2 and "HardSwish" not in ops
    sigmoid = next(n for n in fused.graph.node if n.op_type == "HardSigmoid")
    assert {a.name: round(a.f, 6) for a in sigmoid.attribute} == {"alpha": round(1 / 6, 6), "beta": 0.5}
    x = data.inputs["x"][0]
    expected = outputs(onnx.load(str(data.path)), x)
    np.testing.assert_allclose(outputs(fused, x), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_near_misses_are_left_as_they_are(tmp_path: Path) -> None:
    data = make_hardswish_cnn(tmp_path / "model.onnx", layers=2)
    model = onnx.load(str(data.path))
    # Block 0's clipped tensor is read twice (an extra output), block 1 adds 2.9, not 3: neither is hardswish.
    model.graph.output.append(onnx.helper.make_tensor_value_info("hs0_c", onnx.TensorProto.FLOAT, None))
    model.graph.initializer.append(numpy_helper.from_array(np.array(2.9, np.float32), "almost_three"))
    add = next(n for n in model.graph.node if n.name == "hs1_add")
    add.input[1] = "almost_three"
    fused, done = fuse(model)
    assert done == [] and [n.name for n in fused.graph.node] == [n.name for n in model.graph.node]


def test_the_fused_model_quantizes_with_fewer_points(tmp_path: Path) -> None:
    data = make_hardswish_cnn(tmp_path / "model.onnx")
    fused, _ = fuse(onnx.load(str(data.path)))
    onnx.save(fused, str(tmp_path / "fused.onnx"))
    dataset = Dataset(inputs=data.inputs, labels=None, samples=16)
    calibration = Calibration(method="minmax", samples=16)
    counts = {}
    for name in ("model", "fused"):
        quantize(
            "u8s8-qdq", tmp_path / f"{name}.onnx", tmp_path / f"{name}-q.onnx", dataset=dataset, calibration=calibration
        )
        counts[name] = [n.op_type for n in onnx.load(str(tmp_path / f"{name}-q.onnx")).graph.node].count(
            "QuantizeLinear"
        )
    # Every written-out hardswish put a QuantizeLinear on each tensor inside it; the fused one puts none there.
    assert counts["fused"] < counts["model"] - 8, counts


def test_the_tune_stage_fuses_and_keeps_it_when_it_holds_the_tolerance(tmp_path: Path) -> None:
    make_hardswish_cnn(tmp_path / "model.onnx").save(tmp_path)
    spec = write_job_spec(
        tmp_path,
        stage="tune",
        artifacts=None,
        candidates=["u8u8-qdq"],
        timing={"warmup": 0, "iterations": 0, "rounds": 1},
        target={"mode": "emulated", "cpu_model": "Haswell"},
    )
    tune.run_tune(Spec.from_file(spec), tmp_path / "out")
    state = json.loads((tmp_path / "out" / "tune.json").read_text())
    assert [f["kind"] for f in state["fusions"]] == ["HardSwish"] * 4
    (trial,) = [t for t in state["trials"] if t["step"] == "fuse"]
    assert trial["change"] == "fuse exporter patterns (4 HardSwish): fewer quantization points"
    assert trial["fused"] is True and trial["within_tolerance"] is True
    # Untimed, a fusion that stays within tolerance is kept: it only removes quantization points.
    assert trial["kept"] is True and state["best"]["fused"] is True and state["verdict"] == "tuned"
    assert len(state["best"]["quantization"]["fused"]) == 4
    tuned = onnx.load(str(tmp_path / "out" / "tuned.onnx"))
    assert [n.op_type for n in tuned.graph.node].count("HardSwish") == 4
    # The start was within tolerance, so nothing needed the kernel check; the verdict still runs it, so the report
    # says what this target's kernels do at every node.
    assert {k["node"] for k in state["kernels"]} == {f"conv{i}" for i in range(4)} | {"classifier"}


def test_a_pattern_read_inside_a_subgraph_is_kept_and_so_are_the_constants_a_subgraph_reads(tmp_path: Path) -> None:
    data = make_hardswish_cnn(tmp_path / "model.onnx", layers=2)
    model = onnx.load(str(data.path))
    # An If whose branches read block 0's clipped tensor and the constant "sixth" from the outer scope.
    cond = numpy_helper.from_array(np.array(True), "cond")
    branch = onnx.helper.make_graph(
        [onnx.helper.make_node("Mul", ["hs0_c", "sixth"], ["inner"], name="inner_mul")],
        "branch",
        [],
        [onnx.helper.make_tensor_value_info("inner", onnx.TensorProto.FLOAT, [1, 64, 32, 32])],
    )
    model.graph.initializer.append(cond)
    model.graph.node.append(
        onnx.helper.make_node("If", ["cond"], ["side"], name="side_if", then_branch=branch, else_branch=branch)
    )
    model.graph.output.append(onnx.helper.make_tensor_value_info("side", onnx.TensorProto.FLOAT, [1, 64, 32, 32]))
    fused, done = fuse(model)
    # Block 0's tensor has a reader in the subgraph, so its pattern stays; block 1's is fused, and the constant
    # "sixth" (which block 1's pattern read) stays for the subgraph.
    assert [f.node for f in done] == ["hs1_mul/HardSwishFusion"]
    assert "sixth" in {t.name for t in fused.graph.initializer}
    onnx.checker.check_model(fused)
    x = data.inputs["x"][0]
    expected = outputs(model, x)
    np.testing.assert_allclose(outputs(fused, x), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_a_hardsigmoid_of_other_slope_or_offset_is_not_hardswish(tmp_path: Path) -> None:
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("HardSigmoid", ["x"], ["g"], name="gate", alpha=1 / 6, beta=0.0),
            onnx.helper.make_node("Mul", ["x", "g"], ["y"], name="mul"),
        ],
        "gates",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    assert fuse(model)[1] == []
    gate = model.graph.node[0]
    del gate.attribute[:]
    gate.attribute.append(onnx.helper.make_attribute("alpha", 1 / 6))  # beta 0.5 by default: hardswish's
    assert [f.kind for f in fuse(model)[1]] == ["HardSwish"]
