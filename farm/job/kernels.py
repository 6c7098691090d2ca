"""The kernel check: whether this target's int8 kernels compute what its QDQ model says, node by node.

Run with graph optimizations off, onnxruntime executes a QDQ model as written (DequantizeLinear, the float op,
QuantizeLinear): the arithmetic the quantizer meant, the same on every machine. With them on, it fuses each
DQ -> op -> Q group into one int8 kernel of the target's (QLinearConv, QGemm, QLinearMatMul), which need not compute
the same: on x86 without VNNI, MLAS's u8s8 kernels add pairs of u8 x s8 products in int16 (VPMADDUBSW), which
saturates. The SQNR ranking (farm.job.ranking) simulates quantization in numpy and cannot see that.

Here each quantized compute node's group is cut out into a model of its own, fed the node's own inputs from the fp32
model, and run both ways in the target: the SQNR of the fused output against the exact one is the node's
``kernel_db``. On a tier that may saturate, each node also runs fused with ``session.x64quantprecision=1``, which
makes MLAS keep 32-bit sums: when that restores a lossy node, its loss is saturation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from farm.job.comparison import Energy, augmented, serialized
from farm.job.graph import GraphIndex
from farm.job.ranking import DEQUANTIZE_OUTPUT_SUFFIX, QUANTIZE_INPUT_SUFFIX
from farm.job.session import open_exact_session, open_session
from farm.job.spec import SpecTarget
from farm.job.tunecontract import CitedKernel, KernelEntry
from farm.job.variants import X64_QUANT_PRECISION

# The ops whose QDQ groups onnxruntime runs as one int8 kernel.
KERNEL_OPS = ("Conv", "MatMul", "Gemm")
# A node's kernel is lossy below this. Where a kernel is exact its output differs from the exact one by a
# requantization step here and there (45 dB and up measured; a one-step flip in every uint8 output would still keep
# about 35 dB); VPMADDUBSW's saturation took a classifier's head to 9 dB.
LOSSY_KERNEL_DB = 30.0
# Saturation shows on any input that drives a node that far, and every sample costs two runs per node under QEMU.
KERNEL_SAMPLES = 4


@dataclass(frozen=True, kw_only=True, slots=True)
class KernelFinding:
    """One quantized compute node's kernel on this target."""

    node: str
    op: str
    # The float model's initializer of the node's weight (what 7-bit weights for this node would change), if any.
    weight: str | None
    kernel_db: float
    # The same with session.x64quantprecision=1, on tiers where MLAS's u8s8 kernels may saturate; else None.
    precise_db: float | None

    @property
    def lossy(self) -> bool:
        return self.kernel_db < LOSSY_KERNEL_DB

    @property
    def saturates(self) -> bool:
        """Lossy, and exact once the kernel keeps 32-bit sums: the loss is the int16 pair sums' saturation."""
        return self.lossy and self.precise_db is not None and self.precise_db >= LOSSY_KERNEL_DB

    def brief(self) -> str:
        """The finding in a few words, for a trial's change."""
        text = f"its {self.op} kernel keeps {self.kernel_db:.1f} dB here"
        if self.saturates:
            assert self.precise_db is not None
            text += f", {self.precise_db:.1f} dB with 32-bit sums: it saturates"
        return text

    def describe(self) -> str:
        """Why this node's kernel is (or is not) a reason to change it, in words for the report."""
        if not self.lossy:
            return f"its int8 kernel ({self.op}) is exact on this target ({self.kernel_db:.1f} dB)"
        text = (
            f"its int8 kernel ({self.op}) loses accuracy on this target: {self.kernel_db:.1f} dB against the same "
            "QDQ computed exactly"
        )
        if self.saturates:
            assert self.precise_db is not None
            text += (
                f", and {self.precise_db:.1f} dB with session.x64quantprecision=1, so its int16 pair sums "
                "(VPMADDUBSW, x86 without VNNI) saturate"
            )
        return text

    def cited(self) -> CitedKernel:
        """The finding as tune.json writes it (docs/contracts.md section 6)."""
        return CitedKernel(
            node=self.node,
            op=self.op,
            weight=self.weight,
            kernel_db=round(self.kernel_db, 2),
            precise_db=None if self.precise_db is None else round(self.precise_db, 2),
            lossy=self.lossy,
            saturates=self.saturates,
        )

    def entry(self, variant: str) -> KernelEntry:
        """The finding as tune.json's ``kernels`` lists it, for ``variant``."""
        cited = self.cited()
        return KernelEntry(variant=variant, **{f.name: getattr(cited, f.name) for f in fields(cited)})

    @classmethod
    def of(cls, cited: CitedKernel) -> KernelFinding:
        """A finding read back from tune.json (``lossy`` and ``saturates`` follow from the figures)."""
        return cls(
            node=cited.node, op=cited.op, weight=cited.weight, kernel_db=cited.kernel_db, precise_db=cited.precise_db
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class KernelGroup:
    """A compute node with the Q/DQ nodes around it, as a model of its own needs them."""

    node: onnx.NodeProto
    nodes: tuple[onnx.NodeProto, ...]
    # Float tensors of the fp32 model that feed the group (the activations its QuantizeLinear nodes quantize).
    feeds: tuple[str, ...]
    initializers: tuple[str, ...]
    output: str
    weight: str | None


def kernel_groups(model: onnx.ModelProto) -> list[KernelGroup]:
    """Every compute node of ``model``'s main graph whose activation input is quantized, with its group."""
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    indexed = GraphIndex.of(graph)
    producer = indexed.producer

    def parameters_constant(node: onnx.NodeProto) -> bool:
        return all(not name or name in constants for name in node.input[1:])

    groups = []
    for node in graph.node:
        if node.op_type not in KERNEL_OPS or node.domain not in ("", "ai.onnx") or not node.output[0]:
            continue
        nodes: list[onnx.NodeProto] = []
        feeds: list[str] = []
        needed: set[str] = set()
        weight: str | None = None
        quantized, complete = False, True
        for index, name in enumerate(node.input):
            if not name or name in constants:
                needed.add(name)
                continue
            dequantize = producer.get(name)
            if dequantize is None or dequantize.op_type != "DequantizeLinear":
                feeds.append(name)  # a float input the quantizer left as it was
                continue
            if not parameters_constant(dequantize):
                complete = False
                break
            needed.update(dequantize.input[1:])
            nodes.append(dequantize)
            stored = dequantize.input[0]
            if stored in constants:
                needed.add(stored)
                if index == 1:
                    weight = dequantize.output[0].removesuffix(DEQUANTIZE_OUTPUT_SUFFIX)
                continue
            quantize = producer.get(stored)
            if quantize is None or quantize.op_type != "QuantizeLinear" or not parameters_constant(quantize):
                complete = False
                break
            needed.update(quantize.input[1:])
            nodes.append(quantize)
            feeds.append(quantize.input[0])
            quantized = True
        if not complete or not quantized:
            continue
        nodes.append(node)
        output = node.output[0]
        requantize = next((c for c in indexed.readers(output) if c.op_type == "QuantizeLinear"), None)
        if requantize is not None and parameters_constant(requantize):
            back = next(
                (
                    c
                    for c in indexed.readers(requantize.output[0])
                    if c.op_type == "DequantizeLinear" and parameters_constant(c)
                ),
                None,
            )
            if back is not None:
                nodes += [requantize, back]
                needed.update([*requantize.input[1:], *back.input[1:]])
                output = back.output[0]
        groups.append(
            KernelGroup(
                node=node,
                nodes=tuple(nodes),
                feeds=tuple(dict.fromkeys(feeds)),
                initializers=tuple(sorted(n for n in needed if n)),
                output=output,
                weight=weight,
            )
        )
    return groups


def group_model(model: onnx.ModelProto, group: KernelGroup, sample: Mapping[str, np.ndarray]) -> bytes:
    initializers = {t.name: t for t in model.graph.initializer}
    # Every dimension dynamic: samples may differ in shape where the model allows it.
    inputs = [
        helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(sample[name].dtype), [None] * sample[name].ndim
        )
        for name in group.feeds
    ]
    graph = helper.make_graph(
        list(group.nodes),
        f"kernel_{group.node.name}",
        inputs,
        [helper.make_empty_tensor_value_info(group.output)],
        initializer=[initializers[name] for name in group.initializers],
    )
    single = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return bytes(single.SerializeToString())


def check_kernels(
    float_model: Path,
    quantized: Path,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    target: SpecTarget,
    threads: int,
    work: Path | None = None,
) -> list[KernelFinding]:
    """Each quantized compute node of ``quantized`` (a QDQ model of ``float_model``), its kernel measured on this
    target on up to KERNEL_SAMPLES of ``feeds``; worst first. A node whose group cannot be cut out or run is left
    out: the check speaks only for the nodes it measured."""
    qdq = onnx.load(str(quantized))
    groups = [g for g in kernel_groups(qdq) if g.node.name]
    samples = list(feeds[:KERNEL_SAMPLES])
    if not groups or not samples:
        return []
    source = onnx.load(str(float_model))
    inputs = {i.name for i in source.graph.input}
    produced = set(GraphIndex.of(source.graph).producer) | inputs

    def fp32_name(feed: str) -> str:
        # A quantized tensor that is also a graph output is renamed by the quantizer; fp32 has it as it was.
        return feed if feed in produced else feed.removesuffix(QUANTIZE_INPUT_SUFFIX)

    wanted = sorted({fp32_name(name) for g in groups for name in g.feeds} & produced - inputs)
    fp32 = open_exact_session(serialized(augmented(source, wanted), work), threads=threads)
    fetched = [o.name for o in fp32.get_outputs() if o.name in set(wanted)]
    values = []
    for feed in samples:
        sample = dict(zip(fetched, fp32.run(fetched, dict(feed)), strict=True)) if fetched else {}
        sample.update({name: np.asarray(value) for name, value in feed.items()})
        values.append(sample)
    findings = []
    for group in groups:
        if not all(fp32_name(name) in sample for name in group.feeds for sample in values):
            continue
        fed = [{name: sample[fp32_name(name)] for name in group.feeds} for sample in values]
        finding = _measure(qdq, group, fed, target, threads)
        if finding is not None:
            findings.append(finding)
    return sorted(findings, key=lambda f: (f.kernel_db, f.node))


def _measure(
    qdq: onnx.ModelProto,
    group: KernelGroup,
    samples: Sequence[Mapping[str, np.ndarray]],
    target: SpecTarget,
    threads: int,
) -> KernelFinding | None:
    """One group's kernel, its sessions opened and dropped here, one group at a time."""
    try:
        model = group_model(qdq, group, samples[0])
        exact = open_exact_session(model, threads=threads)
        fused = open_session(model, target=target, threads=threads)
        precise = (
            open_session(model, target=target, threads=threads, config=X64_QUANT_PRECISION)
            if target.saturation_risk
            else None
        )
        kernel, precision = Energy(), Energy()
        wanted = [group.output]
        for sample in samples:
            reference = np.asarray(exact.run(wanted, dict(sample))[0])
            kernel.add(reference, np.asarray(fused.run(wanted, dict(sample))[0]))
            if precise is not None:
                precision.add(reference, np.asarray(precise.run(wanted, dict(sample))[0]))
    except Exception:  # a group onnxruntime cannot load or run on its own is not measured
        return None
    return KernelFinding(
        node=group.node.name,
        op=group.node.op_type,
        weight=group.weight,
        kernel_db=kernel.whole_db(),
        precise_db=None if precise is None else precision.whole_db(),
    )
