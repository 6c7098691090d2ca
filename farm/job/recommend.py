"""Which variant to ship on a target, and why (docs/contracts.md section 2). Pure: results in, sentence out.

A speed claim ("faster", "slower", "did not pay") is made only beyond the run's own noise: every timing round of one
variant beat every round of the other, and by more than ``NOISE_FLOOR``. Variants closer than that are "within
noise", and the choice between them rests on accuracy, then size.
"""

from __future__ import annotations

from collections.abc import Sequence

from farm.job.report import Variant
from farm.job.types import Latency
from farm.job.variants import BASELINES, FP32, MITIGATION_SUFFIX, OPTIMIZED, saturation_safe

# Differences below this share of p50 are never claimed, however steady the rounds: clock frequency and memory
# layout move single-threaded timings by a few percent between sessions of the same model.
NOISE_FLOOR = 0.03
SATURATION_NOTE = (
    "on x86 without VNNI U8S8/S8S8 kernels (VPMADDUBSW) may saturate, so preferred "
    "u8u8-qdq, u8s8-qdq-rr and +x64quantprecision variants"
)


def faster(a: Latency, b: Latency) -> bool:
    """``a`` beats ``b`` beyond noise: by more than NOISE_FLOOR overall, and in every round.

    Rounds that alternated (``interleaved``) are compared pairwise, round i against round i, since a slow stretch
    of the host fell on both alike; otherwise each of a's rounds must beat each of b's.
    """
    if a.p50 * (1.0 + NOISE_FLOOR) >= b.p50:
        return False
    if not a.rounds or not b.rounds:
        return True
    if a.interleaved and b.interleaved and len(a.rounds) == len(b.rounds):
        return all(x < y for x, y in zip(a.rounds, b.rounds, strict=True))
    return max(a.rounds) < min(b.rounds)


def recommend(variants: Sequence[Variant], *, emulated: bool, saturation_risk: bool) -> tuple[str | None, str | None]:
    """``(recommended, reason)``: the int8 variant within tolerance that is faster than fp32 and optimized beyond
    noise, or else the better baseline, with the reason.

    ``saturation_risk`` is true on x86 targets without VNNI. On emulated targets timings say nothing, so the
    choice rests on accuracy and, with ``saturation_risk``, on which kernels cannot saturate.
    """
    by_name = {v.name: v for v in variants}
    fp32 = by_name.get(FP32)
    if fp32 is None or fp32.status != "ok":
        why = "fp32 did not run" if fp32 is None or fp32.accuracy is None else f"fp32 failed ({fp32.error})"
        return None, f"{why}, so there is nothing to compare against"
    timed = not emulated and all(v.latency_ms is not None for v in variants if v.passes)
    base, base_why = _baseline(variants, timed=timed)
    int8 = [v for v in variants if v.name not in BASELINES and v.passes]
    if not int8:
        return base.name, f"{_why_no_int8(variants)}; recommending {base.name}{base_why}"
    if emulated:
        return _on_accuracy(int8, saturation_risk, "emulated target: timings are not comparable")
    if not timed:
        return _on_accuracy(int8, saturation_risk, "no timings were taken")
    return _on_speed(int8, base, base_why, saturation_risk)


def _baseline(variants: Sequence[Variant], *, timed: bool) -> tuple[Variant, str]:
    """fp32 or optimized, by the same rule as everything else: faster beyond noise, else accuracy, then size.

    The text says why, as a clause to append (empty when there was no choice to make).
    """
    by_name = {v.name: v for v in variants}
    fp32 = by_name[FP32]
    optimized = by_name.get(OPTIMIZED)
    if optimized is None or not optimized.passes:
        return fp32, ""
    if timed:
        assert fp32.latency_ms is not None and optimized.latency_ms is not None
        if faster(optimized.latency_ms, fp32.latency_ms):
            return optimized, f"; optimized rather than fp32: faster beyond noise ({_vs(optimized, fp32)})"
        if faster(fp32.latency_ms, optimized.latency_ms):
            return fp32, f"; fp32 rather than optimized: optimized is slower beyond noise ({_vs(optimized, fp32)})"
        chosen = min((fp32, optimized), key=_quality)
        other = optimized if chosen is fp32 else fp32
        return chosen, (
            f"; {chosen.name} rather than {other.name}: within noise ({_vs(optimized, fp32)}), "
            "so chose on accuracy, then size"
        )
    chosen = min((fp32, optimized), key=_quality)
    return chosen, f"; {chosen.name} rather than the other baseline on accuracy, then size (no comparable timings)"


def _on_speed(int8: Sequence[Variant], base: Variant, base_why: str, saturation_risk: bool) -> tuple[str, str]:
    assert base.latency_ms is not None
    fastest = min(int8, key=_p50)
    assert fastest.latency_ms is not None
    if faster(fastest.latency_ms, base.latency_ms):
        # Variants that also beat the baseline and that the fastest does not beat beyond noise are as fast as far
        # as this run can tell.
        tied = [
            v
            for v in int8
            if v is fastest or (faster(_latency(v), base.latency_ms) and not faster(fastest.latency_ms, _latency(v)))
        ]
        safe_tied = [v for v in tied if saturation_safe(v.name)] if saturation_risk else []
        best = min(safe_tied or tied, key=_quality)
        reason = f"{best.name}: faster than {base.name} beyond noise ({_vs(best, base)})"
        if len(tied) > 1:
            others = ", ".join(v.name for v in tied if v is not best)
            reason += f"; within noise of {others}, so chose on accuracy, then size"
        if saturation_risk and not saturation_safe(best.name):
            # It passed on these samples; inputs with larger activations may still saturate its kernels.
            safe = [v for v in int8 if saturation_safe(v.name)]
            alternative = min(safe, key=_p50) if safe else None
            reason += f"; {SATURATION_NOTE}" + (
                f": {alternative.name} is within tolerance at p50 {_ms(_p50(alternative))} ms"
                if alternative
                else ", and none of them is within tolerance here"
            )
        return best.name, reason
    safe = [v for v in int8 if saturation_safe(v.name)] if saturation_risk else list(int8)
    if all(faster(base.latency_ms, _latency(v)) for v in int8):
        speedup = _p50(base) / _p50(fastest) if _p50(fastest) > 0 else 0.0
        reason = (
            f"int8 did not pay: every int8 variant is slower than {base.name} beyond noise "
            f"(best {speedup:.2f}x: {fastest.name} {_vs(fastest, base)}){base_why}"
        )
        pick, why_pick = (min(safe, key=_p50), "fastest") if safe else (None, "")
    else:
        close = [v for v in int8 if not faster(base.latency_ms, _latency(v))]
        reason = (
            f"no variant is faster beyond noise: {', '.join(v.name for v in close)} within noise of "
            f"{base.name} ({fastest.name} {_vs(fastest, base)}), so chose {base.name} on accuracy{base_why}"
        )
        pick, why_pick = (min(safe, key=_quality), "most accurate") if safe else (None, "")
    if pick is not None:
        # int8 is also chosen for size; say which variant to ship then.
        reason += f"; if int8 is needed here (e.g. for size), {pick.name} is the {why_pick} within tolerance" + (
            " that cannot saturate" if saturation_risk else ""
        )
    return base.name, reason


def saturation_findings(variants: Sequence[Variant]) -> list[str]:
    """Variants that fall out of tolerance while their +x64quantprecision twin, the same model file, stays in.

    The twin differs only in the kernels' intermediate precision, so the loss is the kernels' (VPMADDUBSW saturating
    on x86 without VNNI), not quantization's: the one finding that a laptop with VNNI never shows.
    """
    by_name = {v.name: v for v in variants}
    findings = []
    for variant in variants:
        twin = by_name.get(variant.name + MITIGATION_SUFFIX)
        if twin is None or variant.status != "ok" or variant.passes or not twin.passes:
            continue
        assert variant.accuracy is not None and twin.accuracy is not None
        findings.append(
            f"{variant.name} saturates on this tier: cosine {variant.accuracy.cosine:.4f}, against "
            f"{twin.accuracy.cosine:.4f} for the same model with session.x64quantprecision=1, so its int8 kernels "
            f"(VPMADDUBSW without VNNI) lose the accuracy, not quantization; ship {twin.name} (the session option), "
            "u8u8-qdq or u8s8-qdq-rr on this tier"
        )
    return findings


def _on_accuracy(int8: Sequence[Variant], saturation_risk: bool, why: str) -> tuple[str, str]:
    def key(v: Variant) -> tuple[bool, float, float, int]:
        return (saturation_risk and not saturation_safe(v.name), *_quality(v))

    best = min(int8, key=key)
    assert best.accuracy is not None
    reason = f"{why}; chose on accuracy: {best.name} has the highest cosine ({best.accuracy.cosine:.4f})"
    if saturation_risk:
        reason += " among the saturation-safe variants" if saturation_safe(best.name) else ""
        reason += f" within tolerance; {SATURATION_NOTE}"
        if not saturation_safe(best.name):
            reason += f", but none of them is within tolerance, so {best.name} may still saturate on real inputs"
    else:
        reason += " within tolerance"
    return best.name, reason


def _why_no_int8(variants: Sequence[Variant]) -> str:
    int8 = [v for v in variants if v.name not in BASELINES]
    if not int8:
        return "no int8 variant was requested"
    drifted = [v for v in int8 if v.status == "ok" and v.accuracy is not None]
    if not drifted:
        return "no int8 variant ran (" + ", ".join(f"{v.name}: {v.status}" for v in int8) + ")"
    best = max(drifted, key=lambda v: v.accuracy.cosine if v.accuracy else -1.0)
    assert best.accuracy is not None
    top1 = best.accuracy.top1_agreement
    figures = f"cosine {best.accuracy.cosine:.4f}" + ("" if top1 is None else f", top1 agreement {top1:.2f}")
    if best.accuracy.metric is not None:
        figures += ", failed the --metric"
    return f"no int8 variant is within tolerance (best: {best.name}, {figures})"


def _quality(v: Variant) -> tuple[float, float, int]:
    """Sort key, best first: cosine and top-1 as the report shows them (4 and 3 places), then the smaller file."""
    accuracy = v.accuracy
    cosine = round(accuracy.cosine, 4) if accuracy else -2.0
    top1 = round(accuracy.top1_agreement, 3) if accuracy and accuracy.top1_agreement is not None else 0.0
    return (-cosine, -top1, v.size_bytes if v.size_bytes is not None else 1 << 62)


def _latency(v: Variant) -> Latency:
    assert v.latency_ms is not None
    return v.latency_ms


def _p50(v: Variant) -> float:
    return _latency(v).p50


def _vs(a: Variant, b: Variant) -> str:
    return f"p50 {_figure(a)} vs {b.name} {_figure(b)}"


def _figure(v: Variant) -> str:
    latency = _latency(v)
    spread = f" ±{_ms(latency.spread / 2)}" if latency.rounds else ""
    return f"{_ms(latency.p50)}{spread} ms"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3g}"
