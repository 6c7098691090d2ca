"""The one per-node comparison of farm's job: a tensor against its reference, as SQNR and cosine over samples, and the
model that also outputs the tensors to compare. The ranking (a tensor against its own simulated quantization), tune's
kernel check (a QDQ group's fused kernel against the same group run exactly) and farm bisect (a variant, or another
target, against fp32 node by node) all measure with it, so their figures mean the same."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

# SQNR figures are clipped to this range: a tensor compared without error has no finite SQNR.
SQNR_CLIP_DB = 200.0
_EPS = float(np.finfo(np.float32).eps)


@dataclass(kw_only=True, slots=True)
class Energy:
    """One tensor against its reference over the samples: signal and noise energy, the cross terms of the cosine,
    and with ``by_slice`` the energies per slice along each axis."""

    by_slice: bool = False
    signal: float = 0.0
    noise: float = 0.0
    dot: float = 0.0
    other: float = 0.0
    # axis -> (signal per slice, noise per slice); dropped when the tensor's shape changes between samples.
    slices: dict[int, tuple[np.ndarray, np.ndarray]] | None = None
    shape: tuple[int, ...] | None = None

    def add(self, value: np.ndarray, approximation: np.ndarray) -> None:
        """One sample: ``value`` is the reference's tensor, ``approximation`` what is compared with it."""
        x, y = value.astype(np.float64), np.asarray(approximation, dtype=np.float64)
        noise = x - y
        x2, n2 = x * x, noise * noise
        self.signal += float(x2.sum())
        self.noise += float(n2.sum())
        self.dot += float((x * y).sum())
        self.other += float((y * y).sum())
        if not self.by_slice:
            return
        if self.shape is None:
            self.shape, self.slices = x.shape, {}
        elif self.shape != x.shape:
            self.slices = None
        if self.slices is None:
            return
        for axis, size in enumerate(x.shape):
            if size < 2:
                continue
            others = tuple(i for i in range(x.ndim) if i != axis)
            s, n = x2.sum(axis=others), n2.sum(axis=others)
            if axis in self.slices:
                s0, n0 = self.slices[axis]
                s, n = s0 + s, n0 + n
            self.slices[axis] = (s, n)

    def whole_db(self) -> float:
        return sqnr(self.signal, self.noise)

    def cosine(self) -> float:
        norms = math.sqrt(self.signal * self.other)
        return self.dot / norms if norms else float(self.noise == 0.0)

    def robust_db(self) -> float:
        """The whole-tensor SQNR, or the median slice's along some axis when that is lower."""
        worst = self.whole_db()
        for signal, noise in (self.slices or {}).values():
            live = signal > 0
            if live.any():
                worst = min(
                    worst, float(np.median([sqnr(s, n) for s, n in zip(signal[live], noise[live], strict=True)]))
                )
        return worst


def sqnr(signal: float, noise: float) -> float:
    """20 log10(|x| / |x - y|) from the energies, norms floored at float32 eps, as qdq_loss_debug computes it; the
    top of the range where nothing differs (an exact kernel, a tensor that quantizes without error): the floor would
    give a small tensor a low figure for no error at all."""
    if noise == 0.0:
        return SQNR_CLIP_DB
    ratio = max(math.sqrt(signal), _EPS) / max(math.sqrt(noise), _EPS)
    return max(-SQNR_CLIP_DB, min(SQNR_CLIP_DB, 20.0 * math.log10(ratio)))


def augmented(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """``model`` that also outputs ``names`` (typed where shape inference knew them)."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    graph = augmented.graph
    present = {o.name for o in graph.output}
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    for name in names:
        if name in present:
            continue
        elem = types.get(name, 0)
        graph.output.append(
            onnx.helper.make_tensor_value_info(name, elem, None)
            if elem
            else onnx.helper.make_empty_tensor_value_info(name)
        )
    return augmented


def serialized(model: onnx.ModelProto, work: Path | None) -> str | bytes:
    """The model as bytes, or above protobuf's 2 GiB as a file with its weights beside it."""
    if model.ByteSize() < (1 << 31) - (1 << 20) or work is None:
        return bytes(model.SerializeToString())
    path = work / "ranking.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data")
    return str(path)
