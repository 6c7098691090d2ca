"""farm.job.divergence on the host's real onnxruntime: where an int8 model leaves fp32, node by node, without
changing what the int8 model computes. The model breaks in quantization (tests.modelgen.make_broken_middle_cnn), the
same on every CPU, so every expectation holds on every host."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import farm.models
from farm.job import BEGAN
from farm.job.comparison import SQNR_CLIP_DB
from farm.job.data import Dataset
from farm.job.divergence import (
    THRESHOLD_DB,
    Divergence,
    compare,
    fp32_reference,
    label,
    points,
    save_points,
    saved_reference,
)
from farm.job.evaluate.drift import closest, share
from farm.job.quantize import pre_process, quantize
from farm.job.spec import Calibration
from farm.job.variants import PRE_PROCESSED, quantized_from
from tests.modelgen import BROKEN_LAYER, MIDDLE_LAYER, make_broken_middle_cnn, make_midsaturating_cnn
from tests.unit.test_job_recommend import ok
from tests.unit.test_job_recommend_rule import static

BROKEN = f"conv{BROKEN_LAYER}"
LAYERS = 6


def session(model: bytes, *, level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def bisected(tmp_path: Path, *, limit_bytes: int = 1 << 30) -> tuple[Divergence, onnx.ModelProto, onnx.ModelProto]:
    data = make_broken_middle_cnn(tmp_path / "model.onnx")
    dataset = Dataset(inputs=data.inputs, labels=None, samples=len(data.labels))
    quantize(
        "u8s8-qdq",
        data.path,
        tmp_path / "u8s8-qdq.onnx",
        dataset=dataset,
        calibration=Calibration(method="minmax", samples=len(data.labels)),
    )
    reference, variant = onnx.load(str(data.path)), onnx.load(str(tmp_path / "u8s8-qdq.onnx"))
    feeds = [{"x": data.inputs["x"][i]} for i in range(4)]
    found = compare(
        reference,
        variant,
        feeds,
        against=fp32_reference(reference, session),
        open_variant=session,
        open_group=session,
        limit_bytes=limit_bytes,
    )
    return found, reference, variant


def test_the_layer_that_quantization_breaks_is_the_first_below_threshold_and_the_worst_by_local_error(
    tmp_path: Path,
) -> None:
    found, _, _ = bisected(tmp_path)
    assert found.reproduced and found.chunks == 1
    by_node = {n.node: n for n in found.nodes}
    # A point per quantized layer, in the graph's order, named by the Conv whose int8 kernel writes it, and the logits.
    assert [n.node for n in found.nodes][:LAYERS] == [f"conv{i}" for i in range(LAYERS)], found.nodes
    assert found.nodes[-1].tensor == "logits"
    assert found.first is not None and found.first.node == BROKEN, found.nodes
    assert all(by_node[f"conv{i}"].sqnr_db >= THRESHOLD_DB for i in range(BROKEN_LAYER)), found.nodes
    # Upstream error is not charged downstream: the layers after the broken one are far off fp32 in the whole model,
    # yet each alone, fed fp32's inputs, is fine.
    worst = found.worst()
    assert worst[0].node == BROKEN and worst[0].local_db is not None and worst[0].local_db < THRESHOLD_DB, worst
    for index in range(BROKEN_LAYER + 1, LAYERS):
        after = by_node[f"conv{index}"]
        assert after.sqnr_db < THRESHOLD_DB and after.local_db is not None and after.local_db >= THRESHOLD_DB, after


def test_marking_only_quantization_points_keeps_the_int8_model_as_it_runs(tmp_path: Path) -> None:
    found, reference, variant = bisected(tmp_path)
    marked = {p.fetch for p in points(reference, variant)}
    quantized = {n.output[0] for n in variant.graph.node if n.op_type == "QuantizeLinear"}
    assert marked - {o.name for o in variant.graph.output} <= quantized
    assert found.reproduced


def test_a_memory_limit_cuts_the_marked_tensors_into_chunks_with_the_same_answer(tmp_path: Path) -> None:
    whole, _, _ = bisected(tmp_path / "whole")
    # One layer's output is 16 x 16 x 16 float32 (16 KiB): a limit of 40 KiB holds one point with its group's input.
    cut, _, _ = bisected(tmp_path / "cut", limit_bytes=40 << 10)
    assert cut.chunks > whole.chunks and cut.marked_bytes <= 40 << 10 < whole.marked_bytes
    assert cut.reproduced and cut.nodes == whole.nodes


def test_the_matrix_looks_at_the_out_of_tolerance_int8_variants_closest_to_tolerance() -> None:
    variants = [
        ok("fp32", 1.0),
        ok("optimized", None, 0.5, within=False),  # not int8: not looked at
        static(ok("s8s8-qdq", None, 0.91, within=False)),
        static(ok("u8s8-qdq", None, 0.98, within=False)),
        static(ok("u8u8-qdq", None, 0.999)),
        static(ok("u8s8-qdq-rr", None, 0.95, within=False)),
        replace(static(ok("u8s8-dynamic", None, 0.99, within=False)), status="failed"),
    ]
    assert [v.name for v in closest(variants, 2)] == ["u8s8-qdq", "u8s8-qdq-rr"]
    assert [v.name for v in closest(variants, None)] == ["u8s8-qdq", "u8s8-qdq-rr", "s8s8-qdq"]


def test_fp32_against_another_targets_fp32_names_the_node_whose_kernel_parts_them(tmp_path: Path) -> None:
    """Another target whose conv2 kernel computes differently (here: its weights scaled by 1.5) saves its fp32 values
    at every node; fp32 here, compared with them, parts first at conv2, and conv2 alone adds the error: the nodes
    after it, fed the other target's inputs, agree."""
    data = make_midsaturating_cnn(tmp_path / "model.onnx")
    here = onnx.load(str(data.path))
    there = onnx.load(str(data.path))
    conv = next(n for n in there.graph.node if n.name == f"conv{MIDDLE_LAYER}")
    weight = next(t for t in there.graph.initializer if t.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    feeds = [{"x": data.inputs["x"][i]} for i in range(3)]
    saved = save_points(there, None, feeds, tmp_path / "saved", open_variant=session, limit_bytes=1 << 30)
    assert saved.reproduced
    found = compare(
        here,
        None,
        feeds,
        against=saved_reference(tmp_path / "saved"),
        open_variant=session,
        open_group=session,
        limit_bytes=1 << 30,
    )
    # Every node's output is a point, in the graph's order, named by its node.
    assert [n.tensor for n in found.nodes] == [o for n in here.graph.node for o in n.output], found.nodes
    assert found.reproduced
    assert found.first is not None and found.first.node == f"conv{MIDDLE_LAYER}", found.nodes
    # Before it the two agree bit for bit; after it, each node alone on the other's inputs computes what it did there,
    # to the last bits: alone, onnxruntime may lay a node out otherwise (NCHWc) than in the whole graph.
    before = found.nodes[: [n.node for n in found.nodes].index(found.first.node)]
    assert before and all(n.sqnr_db == SQNR_CLIP_DB for n in before), found.nodes
    worst = found.worst()
    assert worst[0].node == f"conv{MIDDLE_LAYER}" and worst[0].local_db is not None and worst[0].local_db < 10, worst
    assert all(n.local_db is not None and n.local_db >= 100 for n in found.nodes if n.node != worst[0].node)


def test_a_variant_is_compared_with_the_pre_processed_model_it_was_quantized_from(tmp_path: Path) -> None:
    """The bundled model's MatMul and Add become one Gemm in pre-processing, and its Relu folds into that Gemm's
    requantization: against the pre-processed model (what the prepare stage keeps as pre.onnx) both layers are points
    with a local error; against the user's model only the graph output is."""
    bundled = Path(farm.models.__file__).parent
    dataset = Dataset.load(bundled / "digits.npz")
    pre_process(bundled / "digits.onnx", tmp_path / PRE_PROCESSED)
    quantize(
        "u8s8-qdq",
        tmp_path / PRE_PROCESSED,
        tmp_path / "u8s8-qdq.onnx",
        dataset=dataset,
        calibration=Calibration(method="minmax", samples=dataset.samples),
    )
    assert quantized_from(tmp_path, "u8s8-qdq+x64quantprecision") == tmp_path / PRE_PROCESSED
    variant = onnx.load(str(tmp_path / "u8s8-qdq.onnx"))
    feeds = [dataset.feed(index, ["pixels"]) for index in range(4)]

    def against(reference: onnx.ModelProto) -> Divergence:
        return compare(
            reference,
            variant,
            feeds,
            against=fp32_reference(reference, session),
            open_variant=session,
            open_group=session,
            limit_bytes=1 << 30,
        )

    pre = against(onnx.load(str(tmp_path / PRE_PROCESSED)))
    assert [(n.op, n.tensor) for n in pre.nodes] == [("Gemm", "fc1.relu"), ("Gemm", "logits")], pre.nodes
    assert all(n.node and n.local_db is not None for n in pre.nodes), pre.nodes
    assert pre.reproduced
    user = against(onnx.load(str(bundled / "digits.onnx")))
    assert [n.tensor for n in user.nodes] == ["logits"], user.nodes


def test_a_node_without_a_name_is_named_by_the_tensor_it_makes() -> None:
    # Some onnxruntime versions' pre-processing leaves the Gemm it fuses from MatMul and Add unnamed.
    assert label(onnx.helper.make_node("Gemm", ["x", "w", "b"], ["fc1.out"])) == "fc1.out"
    assert label(onnx.helper.make_node("Gemm", ["x", "w", "b"], ["fc1.out"], name="fc1")) == "fc1"


def test_the_divergences_share_counts_the_whole_job_from_its_process_start() -> None:
    # A fifth of the time since the job's process began (imports included), not since the evaluate stage began: on a
    # fast host a small model's stage took so little that the second of the default two divergences was left out.
    assert share(BEGAN + 1.5) == pytest.approx(0.3)
    assert share(BEGAN) == 0.0
    assert time.monotonic() >= BEGAN
