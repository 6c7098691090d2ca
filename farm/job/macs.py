"""Where a model's multiply-accumulates are: the share of them in Conv nodes, which decides whether static QDQ goes
before dynamic quantization in ``int8_if_needed`` (farm.job.recommend). Dynamic quantization adds a
DynamicQuantizeLinear and a ConvInteger at every Conv, so it costs most where Conv does most of the work.

Counted from the fp32 model's shapes, as onnx's shape inference finds them with the graph inputs fixed to the
shapes of the samples the job runs; per sample, so the batch cancels out of the share. The nodes of every If branch
and loop body count once, as if each ran once: a rough share, which is all a threshold of one half needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
from onnx import ModelProto, NodeProto

from farm.job.graph import all_graphs
from farm.job.types import QUANTIZABLE_OPS

Shapes = Mapping[str, tuple[int, ...]]


def conv_share(path: Path, inputs: Mapping[str, Sequence[int]]) -> float | None:
    """The share of the model's multiply-accumulates in Conv nodes, or None when a quantizable node's work cannot
    be sized (a shape shape inference could not find, an op like Attention whose count is not modelled) or the
    model has none."""
    model = onnx.load(str(path), load_external_data=False)
    return share_of(model, inputs)


def share_of(model: ModelProto, inputs: Mapping[str, Sequence[int]]) -> float | None:
    """``conv_share`` of a loaded model (the weights' data need not be loaded: their dims are enough)."""
    fixed = ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name in inputs and value.type.HasField("tensor_type"):
            shape = value.type.tensor_type.shape
            shape.ClearField("dim")
            for size in inputs[value.name]:
                shape.dim.add().dim_value = int(size)
    inferred = onnx.shape_inference.infer_shapes(fixed)
    shapes = _shapes(inferred)
    conv = other = 0
    for graph, _ in all_graphs(inferred.graph):
        for node in graph.node:
            if node.op_type not in QUANTIZABLE_OPS:
                continue
            macs = node_macs(node, shapes)
            if macs is None:
                return None
            if node.op_type == "Conv":
                conv += macs
            else:
                other += macs
    total = conv + other
    return None if total == 0 else conv / total


def node_macs(node: NodeProto, shapes: Shapes) -> int | None:
    """The multiply-accumulates of one Conv, ConvTranspose, MatMul, Gemm, LSTM or GRU node; None when unknown."""

    def shape(index: int, of: Sequence[str]) -> tuple[int, ...] | None:
        return shapes.get(of[index]) if index < len(of) and of[index] else None

    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        # Each output (Conv) or input (ConvTranspose) element takes in_channels/group x kernel weights.
        data = shape(0, node.output) if op == "Conv" else shape(0, node.input)
        weight = shape(1, node.input)
        return None if data is None or weight is None else math.prod(data) * math.prod(weight[1:])
    if op in ("MatMul", "Gemm"):
        a, y = shape(0, node.input), shape(0, node.output)
        if a is None or y is None or not a:
            return None
        trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
        inner = a[0] if op == "Gemm" and trans_a else a[-1]
        return math.prod(y) * inner
    if op in ("LSTM", "GRU"):
        x, w, r = shape(0, node.input), shape(1, node.input), shape(2, node.input)
        if x is None or w is None or r is None or len(x) < 2:
            return None
        steps = x[0] * x[1]  # sequence x batch, in either layout
        return steps * (math.prod(w) + math.prod(r))
    return None


def _shapes(model: ModelProto) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape the inferred model knows in full (fixed dims only), the weights' included."""
    known: dict[str, tuple[int, ...]] = {}
    for graph, _ in all_graphs(model.graph):
        for value in (*graph.input, *graph.value_info, *graph.output):
            tensor = value.type.tensor_type if value.type.HasField("tensor_type") else None
            if tensor is None or not tensor.HasField("shape"):
                continue
            dims = tensor.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                known[value.name] = tuple(int(d.dim_value) for d in dims)
        for initializer in graph.initializer:
            known[initializer.name] = tuple(int(d) for d in initializer.dims)
    return known
