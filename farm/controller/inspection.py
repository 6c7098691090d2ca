"""``farm inspect``: a model's facts and, per target, whether its pinned runtime will load it, before anything runs.

The model is read with onnx on the host; each target's runtime capabilities come from its image, once per image
(farm/controller/compat.py). The result is one JSON document (``farm.inspect/1``) and a terminal rendering of it.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from farm.controller.compat import Capabilities, Prediction, capabilities, predict
from farm.controller.fleet import Fleet
from farm.job.codec import json_object
from farm.model.inspect import ModelInfo, NodeUse, node_uses
from farm.model.shapes import shape_text
from farm.targets.config import Target

SCHEMA = "farm.inspect/1"
_STANDARD_DOMAINS = ("ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training")


@dataclass(frozen=True, kw_only=True)
class TargetVerdict:
    target: Target
    mode: str
    capabilities: Capabilities | None
    prediction: Prediction

    def to_dict(self) -> dict[str, Any]:
        caps = self.capabilities
        return {
            "name": self.target.name,
            "platform": self.target.platform,
            "mode": self.mode,
            "runtime": self.target.runtime,
            "providers": list(self.target.providers),
            "max_ir_version": None if caps is None else caps.max_ir_version,
            "opsets": None if caps is None else dict(caps.opsets),
            **self.prediction.to_dict(),
        }


@dataclass(frozen=True, kw_only=True)
class Inspection:
    path: Path
    info: ModelInfo
    nodes: tuple[NodeUse, ...]
    targets: tuple[TargetVerdict, ...]

    @property
    def predicted_failures(self) -> list[TargetVerdict]:
        return [t for t in self.targets if t.prediction.verdict == "fails"]

    def op_counts(self) -> dict[str, dict[str, int]]:
        """Per op (``domain:Op`` outside the default domain), how many nodes, and how many inside subgraphs."""
        total = Counter(_op(n) for n in self.nodes)
        nested = Counter(_op(n) for n in self.nodes if n.in_subgraph)
        return {op: {"nodes": count, "in_subgraphs": nested[op]} for op, count in sorted(total.items())}

    def to_dict(self) -> dict[str, Any]:
        info = self.info
        return {
            "schema": SCHEMA,
            "model": {
                **json_object(info.model_summary(self.path)),
                "size_bytes": info.size_bytes,
                "external_data": list(info.external_data),
                "custom_domains": sorted(d for d in info.opsets if d not in _STANDARD_DOMAINS),
                "dynamic_inputs": {t.name: list(t.dynamic_dims) for t in info.inputs if t.dynamic_dims},
                "quantizable_nodes": info.quantizable_nodes,
                "quantizable_in_subgraphs": info.quantizable_in_subgraphs,
                "ops": self.op_counts(),
            },
            "targets": [t.to_dict() for t in self.targets],
        }


def inspect_for_targets(fleet: Fleet, targets: tuple[Target, ...], path: Path, info: ModelInfo) -> Inspection:
    nodes = tuple(node_uses(path))
    verdicts = []
    for target in targets:
        placement = fleet.placements[target.name]
        found = capabilities(fleet, target)
        if isinstance(found, str):
            verdicts.append(
                TargetVerdict(
                    target=target,
                    mode=placement.mode,
                    capabilities=None,
                    prediction=Prediction(verdict="unknown", reason=found),
                )
            )
            continue
        prediction = predict(info.ir_version, info.opsets, nodes, found, target.providers)
        verdicts.append(TargetVerdict(target=target, mode=placement.mode, capabilities=found, prediction=prediction))
    return Inspection(path=path, info=info, nodes=nodes, targets=tuple(verdicts))


def render(inspection: Inspection, width: int = 100) -> str:
    info = inspection.info
    opsets = ", ".join(f"{d} {v}" for d, v in info.opsets.items())
    lines = [
        f"model {inspection.path} (sha256 {info.sha256[:12]}, {info.size_bytes:,} bytes)",
        f"IR {info.ir_version} · opsets {opsets} · {len(inspection.nodes)} nodes",
    ]
    if info.external_data:
        lines.append(f"external data: {', '.join(info.external_data)}")
    for kind, tensors in (("input", info.inputs), ("output", info.outputs)):
        for tensor in tensors:
            lines.append(f"{kind} {tensor.name}: {tensor.dtype} {shape_text(tensor.shape)}")
    counts = inspection.op_counts()
    ops = ", ".join(
        f"{op} {c['nodes']}" + (f" ({c['in_subgraphs']} in subgraphs)" if c["in_subgraphs"] else "")
        for op, c in counts.items()
    )
    lines += textwrap.wrap(f"ops: {ops}", width, subsequent_indent="  ")
    rows = []
    for verdict in inspection.targets:
        caps = verdict.capabilities
        reads = "—" if caps is None else f"IR ≤ {caps.max_ir_version}, opset ≤ {caps.opsets.get('ai.onnx')}"
        what = verdict.prediction.verdict + (
            f" ({verdict.prediction.failure_class})" if verdict.prediction.failure_class else ""
        )
        rows.append([verdict.target.name, verdict.target.runtime, reads, what, verdict.prediction.reason or ""])
    table = tabulate(
        rows, headers=["target", "runtime", "reads", "verdict", "why"], maxcolwidths=[None, None, None, None, 40]
    )
    return "\n".join([*lines, "", table]) + "\n"


def _op(node: NodeUse) -> str:
    return node.op if node.domain == "ai.onnx" else f"{node.domain}:{node.op}"
