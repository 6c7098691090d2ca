"""Walking an ONNX graph with its If/Loop/Scan bodies, indexing one graph's nodes, and counting the nodes that
quantization is about.

Read by the job (what a variant actually quantized) and by the controller's inspect (how much of the model sits
inside subgraphs), so it depends on onnx alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import onnx
from onnx import GraphProto, ModelProto, NodeProto

from farm.job.types import QUANTIZABLE_OPS, NodeCount

# What a quantizable node becomes in the QOperator format (dynamic quantization writes these).
QUANTIZED_OPS = frozenset({
    "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "QLinearConvTranspose", "QGemm",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "DynamicQuantizeLSTM", "QAttention",
})  # fmt: skip
_DEQUANTIZE = "DequantizeLinear"


def subgraphs(node: NodeProto) -> Iterator[GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def all_graphs(graph: GraphProto, depth: int = 0) -> Iterator[tuple[GraphProto, int]]:
    """``graph`` and every graph nested in its nodes, each with its depth (0 for ``graph`` itself)."""
    yield graph, depth
    for node in graph.node:
        for sub in subgraphs(node):
            yield from all_graphs(sub, depth + 1)


def all_nodes(model: ModelProto) -> Iterator[NodeProto]:
    """Every node of the main graph, of its subgraphs and of the model's local functions."""
    for graph, _ in all_graphs(model.graph):
        yield from graph.node
    for function in model.functions:
        for node in function.node:
            yield node
            for sub in subgraphs(node):
                for graph, _ in all_graphs(sub):
                    yield from graph.node


@dataclass(frozen=True, kw_only=True, slots=True)
class GraphIndex:
    """One graph's nodes indexed the ways the job looks them up: the node that makes each tensor, the nodes that
    read it, and each node's position by name. The one index the fusion, the kernel check and the ranking share.
    Empty names (optional inputs and outputs left out) are not indexed: no tensor is called "". A name made twice,
    or two nodes of one name, keep the last."""

    nodes: tuple[NodeProto, ...]
    producer: Mapping[str, NodeProto]
    consumers: Mapping[str, Sequence[NodeProto]]
    position: Mapping[str, int]

    @classmethod
    def of(cls, graph: GraphProto) -> GraphIndex:
        nodes = tuple(graph.node)
        producer: dict[str, NodeProto] = {}
        consumers: dict[str, list[NodeProto]] = {}
        for node in nodes:
            for name in node.output:
                if name:
                    producer[name] = node
            for name in node.input:
                if name:
                    consumers.setdefault(name, []).append(node)
        position = {node.name: index for index, node in enumerate(nodes)}
        return cls(nodes=nodes, producer=producer, consumers=consumers, position=position)

    def readers(self, tensor: str) -> Sequence[NodeProto]:
        """The nodes that read ``tensor``, in graph order."""
        return self.consumers.get(tensor, ())


def count_nodes(model: ModelProto) -> NodeCount:
    """Count quantizable float nodes, QOperator nodes, and float nodes that QDQ feeds (DequantizeLinear inputs).

    For a float model ``quantized`` is 0; for a quantized one, ``quantizable`` counts what was there to quantize:
    float nodes still left plus the ones now running int8.
    """
    totals = {"float": [0, 0], "int8": [0, 0]}

    def walk(graph: GraphProto, producers: Mapping[str, str], depth: int) -> None:
        # Outer-scope values are visible in a subgraph, so a weight dequantized outside still counts inside.
        local = dict(producers)
        for node in graph.node:
            for output in node.output:
                local[output] = node.op_type
        where = 0 if depth == 0 else 1
        for node in graph.node:
            if node.op_type in QUANTIZED_OPS:
                totals["int8"][where] += 1
            elif node.op_type in QUANTIZABLE_OPS:
                fed = any(local.get(name) == _DEQUANTIZE for name in node.input[:2])
                totals["int8" if fed else "float"][where] += 1
            for sub in subgraphs(node):
                walk(sub, local, depth + 1)

    walk(model.graph, {}, 0)
    float_, int8 = totals["float"], totals["int8"]
    return NodeCount(
        quantizable=sum(float_) + sum(int8),
        quantized=sum(int8),
        quantizable_in_subgraphs=float_[1] + int8[1],
        quantized_in_subgraphs=int8[1],
    )
