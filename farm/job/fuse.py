"""Exporter patterns fused before quantizing: hardswish and hardsigmoid written out as elementwise nodes.

Exporters (paddle2onnx, older torch and tf2onnx) write hardswish as ``x * clip(x + 3, 0, 6) / 6`` and hardsigmoid as
``clip(x + 3, 0, 6) / 6``, four and three nodes. onnxruntime's optimizer (which quant_pre_process runs) folds
BatchNorm's Mul/Add into the Conv before it, but leaves these, and the quantizer then puts a QuantizeLinear on the
tensor between every two of them (Add, Clip and Mul are quantizable ops; 8 more points per hardswish, each rounding
a wide tensor again). One HardSwish (opset 14) or HardSigmoid node computes the same in fp32 and leaves no point
inside: a 4-layer CNN lost 8 of its 18 QuantizeLinear nodes and ran 1.3 times faster in int8 on one core.

Only the main graph is rewritten; every intermediate tensor must have one consumer and not be a graph output, and
every constant must be a scalar of the exact value, so the rewrite is exact up to float rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from farm.job.graph import GraphIndex, all_graphs, subgraphs

# HardSwish is in the default domain from this opset on; below it, x * HardSigmoid(x) stands in for it.
HARDSWISH_OPSET = 14
_ALPHA, _BETA = 1.0 / 6.0, 0.5
_TOLERANCE = 1e-6


@dataclass(frozen=True, kw_only=True, slots=True)
class Fused:
    """What was fused: one entry per pattern, the nodes it replaced and the node that replaces them."""

    kind: str
    replaced: tuple[str, ...]
    node: str


def _read_in_subgraphs(model: onnx.ModelProto) -> set[str]:
    """Every name a node inside an If/Loop/Scan body reads: main-graph tensors a body uses have readers there."""
    return {
        name
        for node in model.graph.node
        for body in subgraphs(node)
        for graph, _ in all_graphs(body)
        for inner in graph.node
        for name in inner.input
    }


@dataclass(kw_only=True, slots=True)
class _PatternGraph:
    model: onnx.ModelProto
    index: GraphIndex
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    # Graph outputs and the names read inside subgraphs: a pattern's inner tensor may be neither.
    outputs: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, model: onnx.ModelProto) -> _PatternGraph:
        graph = cls(
            model=model,
            index=GraphIndex.of(model.graph),
            outputs={o.name for o in model.graph.output} | _read_in_subgraphs(model),
        )
        for tensor in model.graph.initializer:
            if tensor.data_location != onnx.TensorProto.EXTERNAL and len(tensor.dims) == 0:
                graph.constants[tensor.name] = numpy_helper.to_array(tensor)
        for node in model.graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None and len(value.dims) == 0:
                    graph.constants[node.output[0]] = numpy_helper.to_array(value)
        return graph

    def scalar(self, name: str, value: float) -> bool:
        found = self.constants.get(name)
        return found is not None and found.size == 1 and abs(float(found) - value) <= _TOLERANCE * max(1.0, value)

    def sole(self, name: str, op: str | tuple[str, ...]) -> onnx.NodeProto | None:
        """The node that makes ``name``, if it is a default-domain ``op`` whose output only one node reads."""
        node = self.index.producer.get(name)
        ops = (op,) if isinstance(op, str) else op
        if node is None or node.op_type not in ops or node.domain not in ("", "ai.onnx"):
            return None
        if name in self.outputs or len(self.index.readers(name)) != 1:
            return None
        return node

    def other(self, node: onnx.NodeProto, name: str) -> str | None:
        """The other input of a two-input node, given one of them."""
        if len(node.input) != 2:
            return None
        first, second = node.input
        return second if first == name else first if second == name else None


def _attribute(node: onnx.NodeProto, name: str) -> float | None:
    found = next((a for a in node.attribute if a.name == name), None)
    return None if found is None else float(helper.get_attribute_value(found))


def _relu6_of_plus_3(graph: _PatternGraph, name: str) -> tuple[str, list[onnx.NodeProto]] | None:
    """``name`` = clip(x + 3, 0, 6) (as Clip with inputs or attributes, or Min(Relu(.), 6)): (x, its nodes)."""
    clip = graph.sole(name, "Clip")
    nodes: list[onnx.NodeProto]
    if clip is not None:
        if len(clip.input) >= 3 and clip.input[1] and clip.input[2]:
            bounded = graph.scalar(clip.input[1], 0.0) and graph.scalar(clip.input[2], 6.0)
        else:
            bounded = _attribute(clip, "min") == 0.0 and _attribute(clip, "max") == 6.0 and len(clip.input) == 1
        if not bounded:
            return None
        inner, nodes = clip.input[0], [clip]
    else:
        low = graph.sole(name, "Min")
        if low is None or len(low.input) != 2:
            return None
        six = next((i for i in low.input if graph.scalar(i, 6.0)), None)
        relu = graph.sole(graph.other(low, six) or "", "Relu") if six is not None else None
        if relu is None:
            return None
        inner, nodes = relu.input[0], [low, relu]
    add = graph.sole(inner, "Add")
    if add is None:
        return None
    three = next((i for i in add.input if graph.scalar(i, 3.0)), None)
    x = graph.other(add, three) if three is not None else None
    if x is None or x in graph.constants:
        return None
    return x, [add, *nodes]


def _over_6(graph: _PatternGraph, node: onnx.NodeProto) -> str | None:
    """The input ``node`` divides by 6 (Div by 6 or Mul by 1/6), if it does."""
    if node.op_type == "Div" and len(node.input) == 2 and graph.scalar(node.input[1], 6.0):
        return str(node.input[0])
    if node.op_type == "Mul" and len(node.input) == 2:
        sixth = next((i for i in node.input if graph.scalar(i, _ALPHA)), None)
        return graph.other(node, sixth) if sixth is not None else None
    return None


def _hardsigmoid(graph: _PatternGraph, name: str) -> tuple[str, list[onnx.NodeProto]] | None:
    """``name`` (read by one node) = clip(x + 3, 0, 6) / 6, or HardSigmoid(x) with alpha 1/6 and beta 1/2: (x, its
    nodes)."""
    node = graph.sole(name, ("Div", "Mul", "HardSigmoid"))
    return None if node is None else _hardsigmoid_at(graph, node)


def _hardsigmoid_at(graph: _PatternGraph, node: onnx.NodeProto) -> tuple[str, list[onnx.NodeProto]] | None:
    if node.op_type == "HardSigmoid":
        # alpha 0.2 and beta 0.5 are HardSigmoid's defaults; hardswish's alpha is 1/6.
        alpha, beta = _attribute(node, "alpha"), _attribute(node, "beta")
        alpha, beta = 0.2 if alpha is None else alpha, 0.5 if beta is None else beta
        if abs(alpha - _ALPHA) > _TOLERANCE or abs(beta - _BETA) > _TOLERANCE:
            return None
        return node.input[0], [node]
    inner = _over_6(graph, node)
    found = _relu6_of_plus_3(graph, inner) if inner is not None else None
    if found is None:
        return None
    return found[0], [*found[1], node]


def _hardswish(graph: _PatternGraph, node: onnx.NodeProto) -> tuple[str, list[onnx.NodeProto]] | None:
    """``node`` ends x * hardsigmoid(x) (Mul(x, hsig(x))) or x * relu6(x + 3) / 6: (x, its nodes)."""
    if node.op_type == "Mul" and len(node.input) == 2:
        for x, gate in (node.input, reversed(node.input)):
            found = _hardsigmoid(graph, gate)
            if found is not None and found[0] == x:
                return x, [*found[1], node]
    product = _over_6(graph, node)
    mul = graph.sole(product, "Mul") if product is not None else None
    if mul is None or len(mul.input) != 2:
        return None
    for x, relu6 in (mul.input, reversed(mul.input)):
        found = _relu6_of_plus_3(graph, relu6)
        if found is not None and found[0] == x:
            return x, [*found[1], mul, node]
    return None


def fuse(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Fused]]:
    """``model`` with its decomposed hardswish and hardsigmoid fused (a copy), and what was fused."""
    fused_model = onnx.ModelProto()
    fused_model.CopyFrom(model)
    opset = next((o.version for o in fused_model.opset_import if o.domain in ("", "ai.onnx")), 0)
    done: list[Fused] = []
    freed: set[str] = set()
    # Each fusion removes nodes, so there are never more fusions than nodes.
    for _ in range(len(fused_model.graph.node)):
        graph = _PatternGraph.of(fused_model)
        found = _first(graph, opset)
        if found is None:
            break
        kind, x, nodes = found
        last = nodes[-1]
        output = last.output[0]
        name = f"{last.name or last.op_type}/{kind}Fusion"
        if kind == "HardSwish" and opset >= HARDSWISH_OPSET:
            replacement = [helper.make_node("HardSwish", [x], [output], name=name)]
        elif kind == "HardSwish":
            gate = f"{output}/hardsigmoid"
            replacement = [
                helper.make_node("HardSigmoid", [x], [gate], name=f"{name}/HardSigmoid", alpha=_ALPHA, beta=_BETA),
                helper.make_node("Mul", [x, gate], [output], name=name),
            ]
        else:
            replacement = [helper.make_node("HardSigmoid", [x], [output], name=name, alpha=_ALPHA, beta=_BETA)]
        _replace(fused_model, nodes, replacement)
        freed.update(name for n in nodes for name in n.input)
        done.append(Fused(kind=kind, replaced=tuple(n.name for n in nodes), node=name))
    _drop_unused_constants(fused_model, freed)
    return fused_model, done


def _first(graph: _PatternGraph, opset: int) -> tuple[str, str, list[onnx.NodeProto]] | None:
    for node in graph.model.graph.node:
        swish = _hardswish(graph, node)
        # Below opset 14, x * HardSigmoid(x) is already the fused form.
        if swish is not None and not (
            opset < HARDSWISH_OPSET and [n.op_type for n in swish[1]] == ["HardSigmoid", "Mul"]
        ):
            return "HardSwish", *swish
    for node in graph.model.graph.node:
        if node.op_type not in ("Div", "Mul") or node.domain not in ("", "ai.onnx"):
            continue
        sigmoid = _hardsigmoid_at(graph, node)
        if sigmoid is not None:
            return "HardSigmoid", *sigmoid
    return None


def _replace(model: onnx.ModelProto, old: list[onnx.NodeProto], new: list[onnx.NodeProto]) -> None:
    """Put ``new`` where the last of ``old`` was (its inputs are all made before it), and drop ``old``."""
    nodes = list(model.graph.node)
    gone = {id(n) for n in old}
    position = max(i for i, n in enumerate(nodes) if id(n) in gone)
    kept = [n for i, n in enumerate(nodes) if id(n) not in gone or i == position]
    at = next(i for i, n in enumerate(kept) if id(n) in gone)
    kept[at : at + 1] = new
    del model.graph.node[:]
    model.graph.node.extend(kept)


def _drop_unused_constants(model: onnx.ModelProto, freed: set[str]) -> None:
    """Drop the constants the fused patterns read (``freed``) that nothing reads any more, in any graph."""
    used = (
        {name for node in model.graph.node for name in node.input}
        | {o.name for o in model.graph.output}
        | _read_in_subgraphs(model)
    )
    gone = freed - used
    for tensor in [t for t in model.graph.initializer if t.name in gone]:
        model.graph.initializer.remove(tensor)
    kept = [n for n in model.graph.node if not (n.op_type == "Constant" and n.output[0] in gone)]
    if len(kept) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(kept)


def counts(fused: Sequence[Fused]) -> Mapping[str, int]:
    found: dict[str, int] = {}
    for entry in fused:
        found[entry.kind] = found.get(entry.kind, 0) + 1
    return found
