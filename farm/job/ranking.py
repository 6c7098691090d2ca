"""The SQNR ranking of a QDQ model's quantization points, and the region of float nodes that keeps each in fp32.

Every tensor the quantized model quantizes gets the SQNR of quantizing it alone: fp32 values against their own
quantize-dequantize with the scale the quantized model uses (``qdq_loss_debug``'s SQNR, 20 log10 ``|x| / |x - qdq(x)|``,
summed over the samples). A tensor whose energy sits in a few outlier channels keeps a high whole-tensor SQNR while its
typical channel is rounded away, so a point's ``sqnr_db`` is the lower of the whole-tensor figure and, along each
axis, the median SQNR of its slices. Weights are measured the same way against their dequantized initializers.

The ranking simulates quantization in numpy, so it does not depend on the target: the native search ranks once and
emulated targets reuse it. What a target's own int8 kernels do with the quantized values is farm.job.kernels' part.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from farm.job.comparison import Energy, augmented, serialized
from farm.job.graph import GraphIndex
from farm.job.session import open_exact_session
from farm.job.types import QUANTIZABLE_OPS

# A neighbouring tensor joins a point's region when quantizing it alone keeps less than this SQNR (the typical
# channel of a well-behaved 8-bit tensor keeps 30 to 45 dB; one rounded away by an outlier keeps about 0).
LOSSY_DB = 20.0
# A region never grows past this many nodes (a residual spine of Add/Relu would otherwise take the whole network).
MAX_REGION_NODES = 16
# From a lossy tensor a region also grows through up to this many tensors in a row that the start model did not
# quantize at all: the input of a Relu that the quantizer folded into the Conv before it is quantized as soon as the
# Relu is kept in fp32, and carries the same range as the lossy tensor after it.
MAX_UNMEASURED_HOPS = 2
QUANTIZE_INPUT_SUFFIX = "_QuantizeLinear_Input"
DEQUANTIZE_OUTPUT_SUFFIX = "_DequantizeLinear_Output"


@dataclass(frozen=True, kw_only=True, slots=True)
class QParams:
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int

    def broadcast(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        """Scale and zero point in float64, shaped to broadcast against a tensor of rank ``ndim`` (per channel along
        ``axis``, or per tensor)."""
        scale = self.scale.astype(np.float64)
        zero = self.zero_point.astype(np.float64)
        if scale.size > 1:
            shape = [1] * ndim
            shape[self.axis] = -1
            return scale.reshape(shape), zero.reshape(shape)
        return scale.reshape(()), zero.reshape(())

    def dequantize(self, stored: np.ndarray) -> np.ndarray:
        scale, zero = self.broadcast(stored.ndim)
        return np.asarray((stored.astype(np.float64) - zero) * scale)

    def fake_quantize(self, value: np.ndarray) -> np.ndarray:
        """``value`` quantized and dequantized as QuantizeLinear/DequantizeLinear do (round half to even)."""
        x = value.astype(np.float64)
        scale, zero = self.broadcast(x.ndim)
        info = np.iinfo(self.zero_point.dtype)
        q = np.clip(np.rint(x / scale) + zero, info.min, info.max)
        return np.asarray((q - zero) * scale)


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def qparams(node: onnx.NodeProto, initializers: Mapping[str, np.ndarray]) -> QParams | None:
    scale = initializers.get(node.input[1]) if len(node.input) > 1 else None
    zero = initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
    if scale is None or zero is None or not np.issubdtype(zero.dtype, np.integer) or zero.dtype.itemsize > 2:
        return None  # int32 biases, 4-bit and float8 types: not what the ranking measures
    return QParams(scale=scale, zero_point=zero, axis=_attribute(node, "axis", 1))


class _Graph:
    """The float model's main graph: who produces and who consumes each tensor, and which tensors are constants."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        index = GraphIndex.of(graph)
        self.nodes, self.position, self.producer = index.nodes, index.position, index.producer
        self.index = index
        self.constants = {t.name for t in graph.initializer}
        self.constants.update(o for n in self.nodes if n.op_type == "Constant" for o in n.output)
        self.inputs = {i.name for i in graph.input} - self.constants

    def adjacent(self, tensor: str) -> list[onnx.NodeProto]:
        producer = self.producer.get(tensor)
        return ([producer] if producer is not None else []) + list(self.index.readers(tensor))

    def activations(self, node: onnx.NodeProto) -> list[str]:
        return [n for n in (*node.input, *node.output) if n and n not in self.constants]

    def first_position(self, tensor: str) -> int:
        return min((self.position.get(n.name, 0) for n in self.adjacent(tensor)), default=len(self.nodes))

    def region(self, tensor: str, lossy: Mapping[str, float]) -> list[str]:
        """The nodes to keep in fp32 so that ``tensor`` stays fp32: those that touch it, and through the non-compute
        ones among them, those that touch neighbouring tensors that are lossy too (``lossy``: the SQNR of each
        tensor the start model quantized; from a lossy tensor, unquantized neighbours count as lossy, see
        MAX_UNMEASURED_HOPS). Compute nodes (Conv, MatMul, ...) end a region: they are in it, but not their other
        tensors."""
        chosen: dict[str, None] = {}
        # Each entry: a tensor, and how many unquantized tensors in a row led to it from a lossy one (None: the
        # search did not come from a lossy tensor, so unquantized neighbours do not join).
        start_lossy = lossy.get(tensor, math.inf) < LOSSY_DB
        queue: list[tuple[str, int | None]] = [(tensor, 0 if start_lossy else None)]
        seen = {tensor}
        while queue and len(chosen) < MAX_REGION_NODES:
            current, hops = queue.pop(0)
            for node in self.adjacent(current):
                if node.name in chosen:
                    continue
                if len(chosen) >= MAX_REGION_NODES:
                    break
                chosen[node.name] = None
                if node.op_type in QUANTIZABLE_OPS:
                    continue
                for neighbour in self.activations(node):
                    if neighbour in seen:
                        continue
                    sqnr = lossy.get(neighbour)
                    if sqnr is not None and sqnr < LOSSY_DB:
                        seen.add(neighbour)
                        queue.append((neighbour, 0))
                    elif sqnr is None and hops is not None and hops < MAX_UNMEASURED_HOPS:
                        seen.add(neighbour)
                        queue.append((neighbour, hops + 1))
        return sorted(chosen, key=lambda name: self.position.get(name, 0))


def rank_points(
    float_model: Path,
    quantized: Path,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    threads: int = 1,
    work: Path | None = None,
) -> list[dict[str, Any]]:
    """The quantization points of ``quantized`` (a QDQ model of ``float_model``), worst first, each with the region
    of ``float_model``'s nodes that keeps it in fp32. ``feeds`` are the samples to measure on (fp32 runs only)."""
    source = onnx.load(str(float_model))
    qdq = onnx.load(str(quantized))
    graph = _Graph(source)
    q_init = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    activations: dict[str, QParams] = {}
    weights: dict[str, tuple[np.ndarray, QParams]] = {}
    for node in qdq.graph.node:
        if node.op_type == "QuantizeLinear":
            name = node.input[0].removesuffix(QUANTIZE_INPUT_SUFFIX)
            params = qparams(node, q_init)
            if params is not None and (name in graph.producer or name in graph.inputs):
                activations.setdefault(name, params)
        elif node.op_type == "DequantizeLinear" and node.input[0] in q_init:
            name = node.output[0].removesuffix(DEQUANTIZE_OUTPUT_SUFFIX)
            params = qparams(node, q_init)
            if params is not None and name in graph.constants and name not in weights:
                weights[name] = (q_init[node.input[0]], params)

    energy: dict[str, Energy] = {name: Energy(by_slice=True) for name in activations}
    if activations:
        fetch = [n for n in activations if n not in graph.inputs]
        # As qdq_loss_debug runs it: no graph rewrite may fold a tensor away.
        session = open_exact_session(serialized(augmented(source, fetch), work), threads=threads)
        wanted = [o.name for o in session.get_outputs() if o.name in energy]
        for feed in feeds:
            values = dict(zip(wanted, session.run(wanted, dict(feed)), strict=True)) if wanted else {}
            values.update({name: np.asarray(feed[name]) for name in energy if name in feed})
            for name, value in values.items():
                if np.issubdtype(value.dtype, np.floating) and value.size:
                    energy[name].add(value, activations[name].fake_quantize(value))
    initializers = {t.name: t for t in source.graph.initializer}
    for name, (stored, params) in weights.items():
        original = numpy_helper.to_array(initializers[name]) if name in initializers else None
        if original is None or original.shape != stored.shape or not np.issubdtype(original.dtype, np.floating):
            continue
        weight = Energy(by_slice=True)
        weight.add(original, params.dequantize(stored))
        energy[name] = weight

    measured = {name: e for name, e in energy.items() if e.signal > 0}
    lossy = {name: e.robust_db() for name, e in measured.items()}
    order = sorted(measured, key=lambda n: (lossy[n], graph.first_position(n), n))
    points: list[dict[str, Any]] = []
    by_region: dict[tuple[str, ...], dict[str, Any]] = {}
    for name in order:
        nodes = graph.region(name, lossy)
        if not nodes:
            continue
        key = tuple(sorted(nodes))
        if key in by_region:  # the same region keeps this tensor in fp32 too
            by_region[key]["tensors"].append(name)
            continue
        point = {
            "nodes": nodes,
            "tensor": name,
            "tensors": [name],
            "kind": "weight" if name in weights and name not in activations else "activation",
            "sqnr_db": round(lossy[name], 2),
            "tensor_sqnr_db": round(measured[name].whole_db(), 2),
        }
        by_region[key] = point
        points.append(point)
    return points
