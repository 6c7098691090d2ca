"""Where a variant's tensors leave fp32's, node by node: the comparison `farm bisect` runs in a target (issue 22).

Comparing inside an int8 model must not change what it computes. A float tensor inside a QDQ group marked as a graph
output keeps onnxruntime from fusing DequantizeLinear -> op -> QuantizeLinear into the target's int8 kernel, and a
saturation of that kernel would vanish. So the variant is compared at its quantization points, the outputs of its
QuantizeLinear nodes (which the fused kernels write too; dequantized here with the node's own scale and zero point),
and at its graph outputs; and each marked run's final outputs must equal the variant's own run's, bit for bit
(``Divergence.reproduced`` says whether they did).

A point stands for the fp32 tensor that the same consumer reads at the same input: the quantizer folds a Relu after a
Conv into the Conv's requantization, so the variant's point after conv1 is fp32's relu1 output, not conv1's.

Memory: the tensors marked in one session are chosen so that one sample's marked values, both models' together, stay
within ``limit_bytes`` (their sizes from shape inference on the sample's shapes; a tensor whose size it cannot tell
counts as the largest it can); each chunk's sessions and values are dropped before the next chunk's are made.

The local error of a point that a quantized compute node writes (Conv, MatMul, Gemm): that node's QDQ group alone
(farm.job.kernels), run fused on this target and fed fp32's own inputs, against fp32's tensor, so that the error
arriving from upstream is not charged to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
from onnx import numpy_helper

from farm.job.comparison import SQNR_CLIP_DB, Energy, augmented
from farm.job.graph import GraphIndex
from farm.job.kernels import LOSSY_KERNEL_DB, KernelGroup, group_model, kernel_groups
from farm.job.ranking import QUANTIZE_INPUT_SUFFIX, QParams, qparams
from farm.job.report import NodeDivergence

# The first node below this is where the variant leaves fp32: the kernel check's bound for a lossy kernel.
THRESHOLD_DB = LOSSY_KERNEL_DB
# Activations the quantizer folds into the compute node before them (its requantization clips the same way).
FOLDED = ("Relu", "Clip")
# How many nodes the answer names as the worst by local error.
WORST = 3
# Makes an onnxruntime session of a serialized model (onnxruntime has no type stubs).
Opener = Callable[[bytes], Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class MarkedPoint:
    """An fp32 tensor and the variant's tensor that carries it."""

    node: str  # fp32's node that makes ``tensor``
    op: str
    tensor: str
    fetch: str
    quantized: QParams | None = None  # ``fetch`` is a QuantizeLinear's output, dequantized with these
    group: KernelGroup | None = None  # the variant's QDQ group that writes ``fetch``, for the local error
    group_feeds: Mapping[str, str] = field(default_factory=dict)  # the group's inputs -> fp32's tensors


@dataclass(frozen=True, kw_only=True, slots=True)
class Divergence:
    nodes: tuple[NodeDivergence, ...]  # fp32's topological order
    threshold_db: float
    reproduced: bool
    chunks: int
    marked_bytes: int  # the most that one sample's marked values took in one chunk

    @property
    def first(self) -> NodeDivergence | None:
        return next((n for n in self.nodes if n.sqnr_db < self.threshold_db), None)

    def worst(self, count: int = WORST) -> tuple[NodeDivergence, ...]:
        # A node that alone computes the reference's values exactly adds no error, whatever came to it.
        measured = [n for n in self.nodes if n.local_db is not None and n.local_db < SQNR_CLIP_DB]
        return tuple(sorted(measured, key=lambda n: (n.local_db, n.node))[:count])


def points(reference: onnx.ModelProto, variant: onnx.ModelProto) -> list[MarkedPoint]:
    """Every point where ``variant`` can be compared with ``reference`` without changing what it computes, in
    ``reference``'s order: its quantization points, and the graph outputs both have."""
    ref, var = GraphIndex.of(reference.graph), GraphIndex.of(variant.graph)
    ref_nodes = {n.name: n for n in ref.nodes if n.name}
    constants = {t.name: numpy_helper.to_array(t) for t in variant.graph.initializer}
    groups = {g.output: g for g in kernel_groups(variant)}
    found: dict[str, MarkedPoint] = {}
    for node in var.nodes:
        twin = _twin(node, ref, ref_nodes)
        if twin is None or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, name in enumerate(node.input[: len(twin.input)]):
            quantize = _quantize_behind(var, name, constants)
            tensor = twin.input[index]
            maker = ref.producer.get(tensor)
            if quantize is None or maker is None or tensor in found:
                continue
            params = qparams(quantize, constants)
            group = groups.get(name)
            # Named by the compute node whose int8 kernel writes the point where there is one (conv1 for fp32's
            # relu1 output): the node a user would change.
            named = maker if group is None else group.node
            found[tensor] = MarkedPoint(
                node=label(named),
                op=named.op_type,
                tensor=tensor,
                fetch=quantize.output[0],
                quantized=params,
                group=group,
                group_feeds=_group_feeds(group, var, ref, ref_nodes, constants),
            )
    produced = set(var.producer)
    for output in reference.graph.output:
        maker = ref.producer.get(output.name)
        if maker is not None and output.name in produced and output.name not in found:
            group = groups.get(output.name)  # a graph output that a quantized node's group writes, dequantized
            found[output.name] = MarkedPoint(
                node=label(maker),
                op=maker.op_type,
                tensor=output.name,
                fetch=output.name,
                group=group,
                group_feeds=_group_feeds(group, var, ref, ref_nodes, constants),
            )
    order = {name: index for index, node in enumerate(ref.nodes) for name in node.output}
    return sorted(found.values(), key=lambda p: order[p.tensor])


def label(node: onnx.NodeProto) -> str:
    """A node as the answer names it: by its name, or where the exporter gave it none, by the tensor it makes."""
    return node.name or next((name for name in node.output if name), node.op_type)


def node_points(model: onnx.ModelProto) -> list[MarkedPoint]:
    """Every tensor a node of ``model``'s main graph makes, in its order: where two targets' fp32 runs are compared
    (fp32 has no int8 kernel that marking could unfuse). A point's group is its node alone, with the Constant nodes it
    reads, so its local error is what this target's kernel of that node adds on the reference's inputs."""
    index = GraphIndex.of(model.graph)
    initializers = {t.name for t in model.graph.initializer}
    constants = {name: n for n in index.nodes if n.op_type == "Constant" for name in n.output}
    found = []
    for node in index.nodes:
        if node.op_type == "Constant":
            continue
        read = [name for name in node.input if name]
        feeds = tuple(dict.fromkeys(n for n in read if n not in initializers and n not in constants))
        nodes = (*(constants[n] for n in dict.fromkeys(read) if n in constants), node)
        for output in (name for name in node.output if name):
            group = KernelGroup(
                node=node,
                nodes=nodes,
                feeds=feeds,
                initializers=tuple(dict.fromkeys(n for n in read if n in initializers)),
                output=output,
                weight=None,
            )
            found.append(
                MarkedPoint(
                    node=label(node),
                    op=node.op_type,
                    tensor=output,
                    fetch=output,
                    group=group,
                    group_feeds={name: name for name in feeds},
                )
            )
    return found


def _twin(node: onnx.NodeProto, ref: GraphIndex, ref_nodes: Mapping[str, onnx.NodeProto]) -> onnx.NodeProto | None:
    """fp32's node for the variant's ``node``: the one that makes the same tensor (the quantizer keeps a node's
    output names, and the pre-processing before it may name nodes that had no name), else the one of its name."""
    # A graph output that the quantizer quantizes is renamed where it is made (the DequantizeLinear after it makes it).
    made = ref.producer.get(node.output[0].removesuffix(QUANTIZE_INPUT_SUFFIX)) if node.output else None
    # The quantizer folds a Relu or Clip into the node before it, which then makes the activation's output.
    while made is not None and made.op_type != node.op_type and made.op_type in FOLDED and made.input:
        made = ref.producer.get(made.input[0])
    if made is not None and made.op_type == node.op_type:
        return made
    return ref_nodes.get(node.name) if node.name else None


def _quantize_behind(var: GraphIndex, name: str, constants: Mapping[str, np.ndarray]) -> onnx.NodeProto | None:
    """The QuantizeLinear whose output the DequantizeLinear that makes ``name`` reads, where the activation is
    quantized (not a constant weight) with constant parameters."""
    dequantize = var.producer.get(name)
    if dequantize is None or dequantize.op_type != "DequantizeLinear" or dequantize.input[0] in constants:
        return None
    quantize = var.producer.get(dequantize.input[0])
    if quantize is None or quantize.op_type != "QuantizeLinear" or qparams(quantize, constants) is None:
        return None
    return quantize


def _group_feeds(
    group: KernelGroup | None,
    var: GraphIndex,
    ref: GraphIndex,
    ref_nodes: Mapping[str, onnx.NodeProto],
    constants: Mapping[str, np.ndarray],
) -> dict[str, str]:
    """The group's float inputs, each named by the fp32 tensor that its compute node reads there."""
    twin = None if group is None else _twin(group.node, ref, ref_nodes)
    if group is None or twin is None:
        return {}
    by_quantized = {}
    for index, name in enumerate(group.node.input[: len(twin.input)]):
        quantize = _quantize_behind(var, name, constants)
        if quantize is not None:
            by_quantized[quantize.input[0]] = twin.input[index]
        elif name in group.feeds:
            by_quantized[name] = twin.input[index]
    return by_quantized if set(by_quantized) == set(group.feeds) else {}


def tensor_bytes(model: onnx.ModelProto, sample: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Each tensor's size for ``sample``, where shape inference on the sample's shapes can tell it."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name in sample:
            shape = value.type.tensor_type.shape.dim
            del shape[:]
            for size in np.shape(sample[value.name]):
                shape.add().dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:  # a model shape inference cannot follow: every size unknown, chunks of one
        return {}
    sizes = {}
    for value in (*inferred.graph.value_info, *inferred.graph.output):
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        if tensor.HasField("shape") and all(d >= 0 for d in dims) and tensor.elem_type:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize
            sizes[value.name] = math.prod(dims) * itemsize
    return sizes


def chunked(found: Sequence[MarkedPoint], sizes: Mapping[str, int], limit_bytes: int) -> list[list[MarkedPoint]]:
    """``found`` in order, cut so that each chunk's marked values (fp32's tensor, the variant's, and the fp32
    inputs of its groups) stay within ``limit_bytes``; a point alone over it is a chunk of its own."""
    largest = max(sizes.values(), default=limit_bytes)
    chunks: list[list[MarkedPoint]] = []
    used = limit_bytes + 1
    for point in found:
        cost = sum(sizes.get(name, largest) for name in (point.tensor, *point.group_feeds.values())) * 2
        if used + cost > limit_bytes:
            chunks.append([])
            used = 0
        chunks[-1].append(point)
        used += cost
    return chunks


@dataclass(kw_only=True, slots=True)
class _Sums:
    """A point's tensor against the reference's, in the whole model and, where its group ran alone, locally."""

    whole: Energy = field(default_factory=Energy)
    local: Energy | None = None

    def add_local(self, reference: np.ndarray, value: np.ndarray) -> None:
        if self.local is None:
            self.local = Energy()
        self.local.add(reference, value)

    def figures(self, point: MarkedPoint) -> NodeDivergence:
        return NodeDivergence(
            node=point.node,
            op=point.op,
            tensor=point.tensor,
            sqnr_db=self.whole.whole_db(),
            cosine=self.whole.cosine(),
            local_db=None if self.local is None else self.local.whole_db(),
        )


class ReferenceChunk(Protocol):
    """The reference's values of one chunk's marked tensors, sample by sample."""

    def values(self, index: int, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


# Opens the reference for a chunk: the fp32 tensors it must give (a name it cannot give is left out), and each
# point's place in the variant's points (where save_points wrote its value).
Reference = Callable[[Sequence[str], Mapping[str, int]], ReferenceChunk]


@dataclass(frozen=True, kw_only=True, slots=True)
class _Session:
    session: Any
    names: tuple[str, ...]

    def values(self, index: int, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.names, _run(self.session, self.names, feed), strict=True))


def fp32_reference(model: onnx.ModelProto, opener: Opener) -> Reference:
    """fp32 run in this job, the chunk's tensors marked as outputs (fp32 has no int8 kernel to keep)."""

    def chunk(names: Sequence[str], positions: Mapping[str, int]) -> ReferenceChunk:
        return _Session(session=opener(augmented(model, names).SerializeToString()), names=tuple(names))

    return chunk


@dataclass(frozen=True, kw_only=True, slots=True)
class _Saved:
    folder: Path
    files: Mapping[str, str]

    def values(self, index: int, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        found = {name: np.load(self.folder / str(index) / file) for name, file in self.files.items()}
        return {**found, **{name: np.asarray(feed[name]) for name in feed}}


def saved_reference(folder: Path) -> Reference:
    """Another target's values of the same variant, as save_points wrote them into ``folder``; the graph inputs are
    the feed itself."""

    def chunk(names: Sequence[str], positions: Mapping[str, int]) -> ReferenceChunk:
        return _Saved(folder=folder, files={name: f"{positions[name]}.npy" for name in names if name in positions})

    return chunk


def compare(
    reference: onnx.ModelProto,
    variant: onnx.ModelProto | None,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    against: Reference,
    open_variant: Opener,
    open_group: Opener,
    limit_bytes: int,
    threshold_db: float = THRESHOLD_DB,
) -> Divergence:
    """``variant`` at every point against what ``against`` gives for fp32's tensor there (fp32_reference: fp32 in
    this job; saved_reference: the same variant on another target), over ``feeds``. ``reference`` is the fp32 model
    the points are named by; a ``variant`` of None is ``reference`` itself, compared at every node (node_points)
    with another target's. The openers make a session from a serialized model: the variant's with its own
    settings, a QDQ group's fused as the variant runs."""
    runs = _Variant(reference, variant, feeds, open_variant, limit_bytes)
    sums = {p.tensor: _Sums() for p in runs.found}
    positions = runs.positions()
    peak = 0
    for chunk, carried in runs.each():
        marked = list(dict.fromkeys(name for p in chunk for name in (p.tensor, *p.group_feeds.values())))
        given = against(marked, positions)
        groups: dict[str, Any] = {}
        for index, feed in enumerate(feeds):
            values = given.values(index, feed)
            ran, nbytes = carried(index)
            peak = max(peak, nbytes + sum(values[n].nbytes for n in marked if n in values))
            for point, value in zip(chunk, ran, strict=True):
                sums[point.tensor].whole.add(values[point.tensor], value)
                local = _local(point, values, groups, runs.variant, open_group)
                if local is not None:
                    sums[point.tensor].add_local(values[point.tensor], local)
        del given, groups
    return Divergence(
        nodes=tuple(sums[p.tensor].figures(p) for p in runs.found),
        threshold_db=threshold_db,
        reproduced=runs.reproduced,
        chunks=len(runs.chunks),
        marked_bytes=peak,
    )


def save_points(
    reference: onnx.ModelProto,
    variant: onnx.ModelProto | None,
    feeds: Sequence[Mapping[str, np.ndarray]],
    folder: Path,
    *,
    open_variant: Opener,
    limit_bytes: int,
) -> Divergence:
    """Write the variant's values at every point, dequantized, into ``folder`` (``<sample>/<point>.npy``): the
    reference for the same variant on another target (saved_reference). The answer has no nodes."""
    runs = _Variant(reference, variant, feeds, open_variant, limit_bytes)
    position = runs.positions()
    peak = 0
    for chunk, carried in runs.each():
        for index in range(len(feeds)):
            ran, nbytes = carried(index)
            (folder / str(index)).mkdir(parents=True, exist_ok=True)
            for point, value in zip(chunk, ran, strict=True):
                np.save(folder / str(index) / f"{position[point.tensor]}.npy", value)
            peak = max(peak, nbytes)
    return Divergence(
        nodes=(), threshold_db=THRESHOLD_DB, reproduced=runs.reproduced, chunks=len(runs.chunks), marked_bytes=peak
    )


class _Variant:
    """The variant run with each chunk's points marked, one chunk's session at a time, one sample at a time; whether
    every run reproduced the variant's own final outputs."""

    def __init__(
        self,
        reference: onnx.ModelProto,
        variant: onnx.ModelProto | None,
        feeds: Sequence[Mapping[str, np.ndarray]],
        open_variant: Opener,
        limit_bytes: int,
    ) -> None:
        self.variant = reference if variant is None else variant
        self.feeds, self.opener = feeds, open_variant
        self.found = node_points(reference) if variant is None else points(reference, variant)
        self.chunks = chunked(self.found, tensor_bytes(reference, feeds[0]) if feeds else {}, limit_bytes)
        self.outputs = [o.name for o in self.variant.graph.output]
        plain = open_variant(self.variant.SerializeToString())
        self.own = [_run(plain, self.outputs, feed) for feed in feeds]
        self.reproduced = True

    def positions(self) -> dict[str, int]:
        """Each point's fp32 tensor and its place among the points: the file save_points writes its value to."""
        return {point.tensor: index for index, point in enumerate(self.found)}

    def each(self) -> Iterator[tuple[list[MarkedPoint], Callable[[int], tuple[list[np.ndarray], int]]]]:
        """Per chunk, its points and a function of a sample's index: their values there, dequantized, and the bytes
        the marked outputs took. The chunk's session goes when the next chunk comes."""
        for chunk in self.chunks:
            fetched = [p.fetch for p in chunk]
            session = self.opener(augmented(self.variant, fetched).SerializeToString())

            def carried(
                index: int, chunk: list[MarkedPoint] = chunk, session: Any = session, fetched: list[str] = fetched
            ) -> tuple[list[np.ndarray], int]:
                got = _run(session, [*self.outputs, *fetched], self.feeds[index])
                ends = got[: len(self.outputs)]
                self.reproduced &= all(np.array_equal(a, b) for a, b in zip(ends, self.own[index], strict=True))
                marked = got[len(self.outputs) :]
                # In the scale's type, as DequantizeLinear computes it (the float64 product, rounded once, is the
                # same): another target's job feeds these values to its groups, whose inputs have that type.
                values = [
                    v if p.quantized is None else p.quantized.dequantize(v).astype(p.quantized.scale.dtype)
                    for p, v in zip(chunk, marked, strict=True)
                ]
                return values, sum(v.nbytes for v in marked)

            yield chunk, carried
            del session, carried


def _run(session: Any, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(v) for v in session.run(list(names), dict(feed))]


def _local(
    point: MarkedPoint,
    values: Mapping[str, np.ndarray],
    groups: dict[str, Any],
    variant: onnx.ModelProto,
    open_group: Opener,
) -> np.ndarray | None:
    """The point's group run fused on fp32's inputs, or None where it has none or it does not run on its own."""
    if point.group is None or not point.group_feeds or not set(point.group_feeds.values()) <= set(values):
        return None
    fed = {name: values[tensor] for name, tensor in point.group_feeds.items()}
    try:
        if point.tensor not in groups:
            groups[point.tensor] = open_group(group_model(variant, point.group, fed))
        return _run(groups[point.tensor], [point.group.output], fed)[0]
    except Exception:  # a group onnxruntime cannot load or run alone: the point keeps its other figures
        return None


def described(divergence: Divergence) -> str:
    """The answer in a line: where the variant leaves fp32 first, and the worst nodes by local error."""
    first = divergence.first
    head = (
        f"first below {divergence.threshold_db:.0f} dB: {first.node} ({first.op}, {first.tensor}) at "
        f"{first.sqnr_db:.1f} dB"
        if first is not None
        else f"no node below {divergence.threshold_db:.0f} dB"
    )
    worst = ", ".join(f"{n.node} {n.local_db:.1f} dB" for n in divergence.worst())
    return head + (f"; worst by local error: {worst}" if worst else "")
