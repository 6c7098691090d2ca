"""Accuracy against fp32, per output, and latency in rounds, exactly as docs/contracts.md section 2 defines them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Literal

import numpy as np

from farm.job.types import Accuracy, Latency, OutputAccuracy, StopReason

# One entry per sample; each entry holds that sample's outputs in the session's output order.
Outputs = Sequence[Sequence[np.ndarray]]
# How an output is classifier-like along its last axis: one decision per sample, one per position (an [N, T, C]
# sequence, a per-pixel map), or not at all.
Top1Kind = Literal["sample", "position"]
# Rows of a softmax sum to 1; float32 rounding over thousands of classes stays well inside this.
_DISTRIBUTION_ATOL = 1e-3


class MetricsError(ValueError):
    """A variant's outputs cannot be compared with fp32's (shape, count, or non-finite values)."""


def latency_from_rounds(
    rounds: Sequence[Sequence[float]], *, interleaved: bool = False, stopped: StopReason | None = None
) -> Latency:
    """Percentiles in ms over every timed run (seconds) of every round, and each round's p50."""
    ms = np.asarray([s for r in rounds for s in r], dtype=np.float64) * 1000.0
    p50, p90, p99 = (round(float(np.percentile(ms, q)), 4) for q in (50, 90, 99))
    medians = tuple(round_p50(r) for r in rounds if r)
    return Latency(p50=p50, p90=p90, p99=p99, rounds=medians, interleaved=interleaved, stopped=stopped)


def round_p50(seconds: Sequence[float]) -> float:
    """One round's p50 in ms, as ``Latency.rounds`` holds it (the figure a speed claim compares, round by round)."""
    return round(float(np.median(np.asarray(seconds, dtype=np.float64)) * 1000.0), 4)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flat vectors; two zero vectors agree (1.0), one zero vector does not (0.0)."""
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = float(np.linalg.norm(a64)), float(np.linalg.norm(b64))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a64, b64) / (na * nb))


def is_classifier_like(sample_output: np.ndarray) -> bool:
    """One sample's output is a score vector: ``[C]`` or ``[1, C]`` with C > 1."""
    shape = sample_output.shape
    return (len(shape) == 1 and shape[0] > 1) or (len(shape) == 2 and shape[0] == 1 and shape[1] > 1)


def top1_kind(samples: Sequence[np.ndarray]) -> Top1Kind | None:
    """Whether argmax along the last axis is this output's decision, per sample or per position.

    A score vector per sample is one decision. With more axes (``[N, T, C]`` sequences, per-pixel maps), only
    rows that are probability distributions (non-negative, summing to 1) count: a detector's ``[84, 8400]`` rows of
    box coordinates and class scores are not decisions along their last axis.
    """
    first = samples[0]
    if not np.issubdtype(first.dtype, np.floating):
        return None
    if is_classifier_like(first):
        return "sample"
    squeezed = _squeeze_leading(first)
    if squeezed.ndim < 2 or squeezed.shape[-1] < 2:
        return None
    decided = False
    for sample in samples:
        rows = sample.astype(np.float64)
        if rows.size == 0:  # a dynamic axis at 0 in this sample: nothing to decide, nothing against
            continue
        if not np.isfinite(rows).all() or rows.min() < 0.0:
            return None
        if not np.allclose(rows.sum(axis=-1), 1.0, atol=_DISTRIBUTION_ATOL):
            return None
        decided = True
    # Empty in every sample: no decision at all, and top-1 agreement over none would be NaN.
    return "position" if decided else None


def _squeeze_leading(array: np.ndarray) -> np.ndarray:
    while array.ndim > 1 and array.shape[0] == 1:
        array = array[0]
    return array


def default_counted(names: Sequence[str], reference: Outputs) -> tuple[str, ...]:
    """The outputs that make the verdict when the user names none: every float output that fp32 fills with finite
    values (one holding NaN has nothing to be compared against), or every output if none is."""
    floats = [
        name
        for index, name in enumerate(names)
        if np.issubdtype(reference[0][index].dtype, np.floating)
        and all(np.isfinite(sample[index]).all() for sample in reference)
    ]
    return tuple(floats or names)


def compare(
    reference: Outputs,
    candidate: Outputs,
    labels: np.ndarray | None = None,
    *,
    names: Sequence[str] | None = None,
    counted: Collection[str] | None = None,
    tolerance: tuple[float, float] | None = None,
) -> Accuracy:
    """Metrics of ``candidate`` against ``reference`` (fp32), output by output, sample by sample.

    ``names`` are the outputs' names in session order (``output_<i>`` when not given); ``counted`` the ones that make
    the verdict (default: ``default_counted``). A counted output holding NaN or infinity is an error; the others
    are reported without figures. With ``tolerance`` (cosine, top-1), ``worst_output`` is an output that falls
    outside it when one does, so that it names what drifted.
    """
    if len(reference) != len(candidate) or not reference:
        raise MetricsError(f"{len(candidate)} samples of outputs against fp32's {len(reference)}")
    _check_shapes(reference[0], candidate[0])
    names = list(names) if names is not None else [f"output_{i}" for i in range(len(reference[0]))]
    if len(names) != len(reference[0]):
        raise MetricsError(f"{len(names)} output names for {len(reference[0])} outputs")
    chosen = set(default_counted(names, reference) if counted is None else counted)
    outputs: list[OutputAccuracy] = []
    accuracy: float | None = None
    for index, name in enumerate(names):
        ref = [sample[index] for sample in reference]
        cand = [sample[index] for sample in candidate]
        figures = _output(name, ref, cand, counted=name in chosen)
        outputs.append(figures)
        if labels is not None and accuracy is None and figures.counted and top1_kind(ref) == "sample":
            cand_top = np.asarray([int(np.argmax(c)) for c in cand])
            accuracy = float(np.mean(cand_top == labels[: len(cand_top)]))
    scored = [o for o in outputs if o.counted and o.cosine is not None and o.max_abs is not None]
    # Counted outputs whose shape changed (a detector that found one box fewer): out of tolerance, not an error.
    changed = [o for o in outputs if o.counted and o.cosine is None]
    if not scored:
        reason = "changed shape against fp32" if changed else "holds numbers to compare"
        raise MetricsError(
            f"none of the counted outputs ({', '.join(sorted(chosen))}) {reason}"
            if not changed
            else f"every counted output {reason} ({', '.join(o.name for o in changed)})"
        )

    def key(o: OutputAccuracy) -> tuple[bool, float]:
        cos = o.cosine if o.cosine is not None else 1.0
        if tolerance is None:
            return (True, cos)
        inside = cos >= tolerance[0] and (o.top1_agreement is None or o.top1_agreement >= tolerance[1])
        return (inside, cos)

    worst = min(scored, key=key)
    top1s = [o.top1_agreement for o in scored if o.top1_agreement is not None]
    return Accuracy(
        cosine=min(float(o.cosine or 0.0) for o in scored),
        max_abs=max(float(o.max_abs or 0.0) for o in scored),
        top1_agreement=min(top1s) if top1s else None,
        accuracy=accuracy,
        outputs=tuple(outputs),
        worst_output=changed[0].name if changed else worst.name,
    )


def _output(name: str, reference: list[np.ndarray], candidate: list[np.ndarray], *, counted: bool) -> OutputAccuracy:
    numeric = all(r.dtype.kind in "biuf" for r in reference)
    finite = numeric and all(
        np.isfinite(a.astype(np.float64)).all() for a in (*reference, *candidate) if a.dtype.kind == "f"
    )
    if counted and numeric and not finite:
        raise MetricsError(f"output '{name}' holds NaN or infinity, so it cannot be compared with fp32")
    if not numeric or not finite:
        return OutputAccuracy(name=name, counted=False, cosine=None, max_abs=None, top1_agreement=None)
    if any(ref.shape != cand.shape for ref, cand in zip(reference, candidate, strict=True)):
        return OutputAccuracy(name=name, counted=counted, cosine=None, max_abs=None, top1_agreement=None)
    cosines, max_abs = [], 0.0
    for ref, cand in zip(reference, candidate, strict=True):
        cosines.append(cosine(ref, cand))
        if ref.size:
            max_abs = max(max_abs, float(np.max(np.abs(ref.astype(np.float64) - cand.astype(np.float64)))))
    if reference[0].size < 2:
        # One value per sample (a score, a probability) has no direction of its own, so its cosine would be 1.0
        # whatever the drift: compare the vector of every sample's value instead.
        flat_ref, flat_cand = (np.concatenate([a.ravel() for a in arrays]) for arrays in (reference, candidate))
        cosines = [cosine(flat_ref, flat_cand)]
    kind = top1_kind(reference)
    top1 = None
    if kind is not None:
        agree = [np.argmax(r, axis=-1) == np.argmax(c, axis=-1) for r, c in zip(reference, candidate, strict=True)]
        top1 = float(np.mean(np.concatenate([np.ravel(a) for a in agree])))
    return OutputAccuracy(
        name=name, counted=counted, cosine=float(np.mean(cosines)), max_abs=max_abs, top1_agreement=top1
    )


def _check_shapes(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> None:
    if len(reference) != len(candidate):
        raise MetricsError(f"the model has {len(candidate)} outputs; fp32 has {len(reference)}")
