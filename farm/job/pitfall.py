"""The export pitfall check: a model that declares a dynamic batch but was traced at batch 1.

Tracing exporters bake values seen during export into the graph (a Reshape to ``[1, -1]``, a shape computed from
the example input). The model then loads, runs at batch 1, and breaks or silently mixes samples at any other batch.
This runs the fp32 model on two samples as one batch and compares each sample's outputs with its batch-1 run. When
they differ or the run fails, it runs the graph again with every intermediate float tensor as an output and names
the first node whose output no longer matches, per sample, what batch 1 gave.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from farm.job.report import ExportCheck

# What counts as the same output at batch 1 and batch 2: float kernels may block differently by batch size.
RTOL, ATOL = 1e-3, 1e-4
_NODE_NAME = re.compile(r"Name:'([^']*)'")

Session = Callable[[bytes | Path], Any]


def check_batch(
    model: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    reference: Sequence[Sequence[np.ndarray]],
    open_session: Session,
) -> ExportCheck:
    """Run ``model`` on feeds 0 and 1 as one batch of 2 and compare with their batch-1 ``reference`` outputs."""
    if len(feeds) < 2:
        return ExportCheck(status="not-run", detail="needs at least 2 samples")
    session = open_session(model)
    dynamic = [i.name for i in session.get_inputs() if i.shape and not isinstance(i.shape[0], int)]
    if not dynamic:
        return ExportCheck(status="not-run", detail="no input has a dynamic batch axis")
    fixed = [i.name for i in session.get_inputs() if i.name not in dynamic]
    if fixed:
        return ExportCheck(status="not-run", detail=f"inputs {', '.join(fixed)} have no dynamic batch axis")
    if any(feeds[0][n].shape[:1] != (1,) for n in dynamic):
        return ExportCheck(status="not-run", detail="the samples are not batches of one")
    batched = {n: np.concatenate([feeds[0][n], feeds[1][n]]) for n in dynamic}
    try:
        outputs = session.run(None, batched)
    except Exception as exc:  # the runtime's error names the node that failed
        failed = _NODE_NAME.search(str(exc))
        return _locate(
            model,
            feeds,
            batched,
            open_session,
            failed.group(1) if failed else None,
            f"the batch of 2 fails: {' '.join(str(exc).split())[:300]}",
        )
    for index, out in enumerate(outputs):
        out = np.asarray(out)
        single = [np.asarray(reference[s][index]) for s in (0, 1)]
        if not _agrees(single, out):
            name = session.get_outputs()[index].name
            return _locate(
                model,
                feeds,
                batched,
                open_session,
                None,
                f"at batch 2 output '{name}' differs from each sample's batch-1 output",
            )
    return ExportCheck(status="passed", detail="two samples as one batch give each sample's batch-1 outputs")


def _agrees(single: Sequence[np.ndarray], batched: np.ndarray) -> bool:
    """``batched`` holds ``single[0]`` and ``single[1]`` stacked along the axis the batch runs through."""
    axis = _batch_axis(single[0].shape, batched.shape)
    if axis is None:
        return bool(batched.shape == single[0].shape and np.allclose(batched, single[0], rtol=RTOL, atol=ATOL))
    size = single[0].shape[axis]
    parts = (np.take(batched, range(size), axis=axis), np.take(batched, range(size, 2 * size), axis=axis))
    return all(
        p.shape == s.shape and np.allclose(p, s, rtol=RTOL, atol=ATOL, equal_nan=True)
        for p, s in zip(parts, single, strict=True)
    )


def _batch_axis(single: tuple[int, ...], batched: tuple[int, ...]) -> int | None:
    """The axis that went from 1 to 2 samples, all else equal; not axis 0 only, since a Transpose may move it.

    An axis that merely doubled (144 features to 288) is a batch folded into features, the very pitfall.
    """
    if len(single) != len(batched):
        return None
    grown = [a for a, (s, b) in enumerate(zip(single, batched, strict=True)) if b != s]
    if len(grown) == 1 and single[grown[0]] == 1 and batched[grown[0]] == 2:
        return grown[0]
    return None


def _locate(
    model: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    batched: dict[str, np.ndarray],
    open_session: Session,
    failed: str | None,
    detail: str,
) -> ExportCheck:
    """The first node, in graph order, whose float output stops matching batch 1; else the one that failed."""
    proto = onnx.load(str(model))
    nodes = list(proto.graph.node)
    if failed is not None:
        stop = next((i for i, n in enumerate(nodes) if n.name == failed), len(nodes))
        nodes = nodes[:stop]
    probed = _with_intermediates(proto, nodes)
    try:
        session = open_session(probed.SerializeToString())
        names = [o.name for o in session.get_outputs()]
        singles = [dict(zip(names, session.run(None, feed), strict=True)) for feed in feeds[:2]]
        together = dict(zip(names, session.run(None, batched), strict=True))
    except Exception:  # the probe itself cannot run: name what the runtime named
        singles, together = [], {}
    for node in nodes:
        for output in node.output:
            if output not in together:
                continue
            single = [np.asarray(s[output]) for s in singles]
            value = np.asarray(together[output])
            if value.dtype.kind == "f" and not _agrees(single, value):
                return ExportCheck(
                    status="flagged",
                    node=node.name or output,
                    op=node.op_type,
                    detail=f"{detail}; the first node whose output at batch 2 is not each sample's "
                    f"batch-1 output is {node.op_type} '{node.name or output}' "
                    f"(shape {list(value.shape)} at batch 2, {list(single[0].shape)} at batch 1)",
                )
    if failed is not None:
        op = next((n.op_type for n in proto.graph.node if n.name == failed), None)
        return ExportCheck(status="flagged", node=failed, op=op, detail=f"{detail}; it fails at {op} '{failed}'")
    return ExportCheck(status="flagged", detail=detail)


def _with_intermediates(model: onnx.ModelProto, nodes: Sequence[onnx.NodeProto]) -> onnx.ModelProto:
    """The model with every float output of ``nodes`` as a graph output (typed by onnx's shape inference)."""
    probed = onnx.ModelProto()
    probed.CopyFrom(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(probed)
    except Exception:  # without types the outputs are added untyped, which onnxruntime accepts
        inferred = probed
    types = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    # Only the nodes asked about: the one that failed, and everything after it, would fail the probe again.
    kept = {id(n) for n in nodes}
    chosen = [n for n in model.graph.node if id(n) in kept]
    del probed.graph.node[:]
    probed.graph.node.extend(chosen)
    del probed.graph.output[:]
    for node in nodes:
        for output in node.output:
            info = types.get(output)
            if info is not None and info.type.tensor_type.elem_type not in (
                onnx.TensorProto.FLOAT,
                onnx.TensorProto.FLOAT16,
                onnx.TensorProto.DOUBLE,
            ):
                continue
            probed.graph.output.append(info or onnx.helper.make_empty_tensor_value_info(output))
    return probed
