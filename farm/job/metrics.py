"""Accuracy against fp32 and latency percentiles, exactly as docs/contracts.md section 2 defines them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# One entry per sample; each entry holds that sample's outputs in the session's output order.
Outputs = Sequence[Sequence[np.ndarray]]


class MetricsError(ValueError):
    """A variant's outputs cannot be compared with fp32's (shape, count, or non-finite values)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Accuracy:
    cosine: float
    max_abs: float
    top1_agreement: float | None
    accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cosine": self.cosine,
            "max_abs": self.max_abs,
            "top1_agreement": self.top1_agreement,
            "accuracy": self.accuracy,
        }

    def within(self, *, cosine: float, top1_agreement: float) -> bool:
        return self.cosine >= cosine and (self.top1_agreement is None or self.top1_agreement >= top1_agreement)


@dataclass(frozen=True, kw_only=True, slots=True)
class Latency:
    p50: float
    p90: float
    p99: float

    @classmethod
    def from_seconds(cls, seconds: Sequence[float]) -> Latency:
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        p50, p90, p99 = (round(float(np.percentile(ms, q)), 4) for q in (50, 90, 99))
        return cls(p50=p50, p90=p90, p99=p99)

    def to_dict(self) -> dict[str, Any]:
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flat vectors; two zero vectors agree (1.0), one zero vector does not (0.0)."""
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = float(np.linalg.norm(a64)), float(np.linalg.norm(b64))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a64, b64) / (na * nb))


def is_classifier_like(sample_output: np.ndarray) -> bool:
    shape = sample_output.shape
    return (len(shape) == 1 and shape[0] > 1) or (len(shape) == 2 and shape[0] == 1 and shape[1] > 1)


def _compared(sample: Sequence[np.ndarray], float_only: bool) -> np.ndarray:
    parts = [o.astype(np.float64).ravel() for o in sample if not float_only or np.issubdtype(o.dtype, np.floating)]
    return np.concatenate(parts) if parts else np.zeros(0)


def compare(reference: Outputs, candidate: Outputs, labels: np.ndarray | None = None) -> Accuracy:
    """Metrics of ``candidate`` against ``reference`` (fp32), sample by sample.

    ``cosine`` and ``max_abs`` use the float outputs; a model without any float output is compared on all of them.
    """
    if len(reference) != len(candidate) or not reference:
        raise MetricsError(f"{len(candidate)} samples of outputs against fp32's {len(reference)}")
    _check_shapes(reference[0], candidate[0])
    float_only = any(np.issubdtype(o.dtype, np.floating) for o in reference[0])
    cosines, max_abs = [], 0.0
    for ref_sample, cand_sample in zip(reference, candidate, strict=True):
        ref, cand = _compared(ref_sample, float_only), _compared(cand_sample, float_only)
        if ref.shape != cand.shape:
            raise MetricsError(f"a sample's outputs hold {cand.size} values against fp32's {ref.size}")
        if not (np.isfinite(ref).all() and np.isfinite(cand).all()):
            raise MetricsError("outputs hold NaN or infinity, so they cannot be compared with fp32")
        cosines.append(cosine(ref, cand))
        if ref.size:
            max_abs = max(max_abs, float(np.max(np.abs(ref - cand))))
    ref_top = [int(np.argmax(s[0])) for s in reference]
    cand_top = [int(np.argmax(s[0])) for s in candidate]
    top1 = None
    if is_classifier_like(reference[0][0]):
        top1 = float(np.mean([r == c for r, c in zip(ref_top, cand_top, strict=True)]))
    accuracy = None if labels is None else float(np.mean(np.asarray(cand_top) == labels[: len(cand_top)]))
    return Accuracy(cosine=float(np.mean(cosines)), max_abs=max_abs, top1_agreement=top1, accuracy=accuracy)


def _check_shapes(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> None:
    if len(reference) != len(candidate):
        raise MetricsError(f"the model has {len(candidate)} outputs; fp32 has {len(reference)}")
    for index, (ref, cand) in enumerate(zip(reference, candidate, strict=True)):
        if ref.shape != cand.shape:
            raise MetricsError(f"output {index} has shape {list(cand.shape)}; fp32 has {list(ref.shape)}")
