"""Which variant to ship on a target, and why (docs/contracts.md section 2). Pure: results in, sentence out."""

from __future__ import annotations

from collections.abc import Sequence

from farm.job.result import VariantResult

BASELINES = ("fp32", "optimized")
MITIGATION_SUFFIX = "+x64quantprecision"
SATURATION_SAFE = ("u8u8-qdq", "u8s8-qdq-rr")
SATURATION_NOTE = (
    "on x86 without VNNI U8S8/S8S8 kernels (VPMADDUBSW) may saturate, so preferred "
    "u8u8-qdq, u8s8-qdq-rr and +x64quantprecision variants"
)


def saturation_safe(name: str) -> bool:
    return name in SATURATION_SAFE or name.endswith(MITIGATION_SUFFIX)


def recommend(
    variants: Sequence[VariantResult], *, emulated: bool, saturation_risk: bool
) -> tuple[str | None, str | None]:
    """``(recommended, reason)``: the fastest variant within tolerance, or the best baseline with the reason.

    ``saturation_risk`` is true on x86 targets without VNNI. On emulated targets timings say nothing, so the
    choice rests on accuracy and, with ``saturation_risk``, on which kernels cannot saturate.
    """
    by_name = {v.name: v for v in variants}
    fp32 = by_name.get("fp32")
    if fp32 is None or fp32.status != "ok":
        return None, "fp32 did not run, so there is nothing to compare against"
    optimized = by_name.get("optimized")
    fallback = optimized if optimized is not None and optimized.passes else fp32
    int8 = [v for v in variants if v.name not in BASELINES and v.passes]
    if not int8:
        return fallback.name, f"{_why_no_int8(variants)}; recommending {fallback.name}"
    if emulated:
        return _on_accuracy(int8, saturation_risk, "emulated target: timings are not comparable")
    timed = [v for v in int8 if v.latency_ms is not None]
    bases = [v for v in variants if v.name in BASELINES and v.passes and v.latency_ms is not None]
    if not timed or not bases:
        return _on_accuracy(int8, saturation_risk, "no timings were taken")
    best = min(timed, key=_p50)
    base = min(bases, key=_p50)
    safe = [v for v in timed if saturation_safe(v.name)] if saturation_risk else timed
    if _p50(best) < _p50(base):
        against = ", ".join(f"{v.name} {_ms(_p50(v))} ms" for v in bases)
        reason = f"{best.name}: fastest within tolerance (p50 {_ms(_p50(best))} ms vs {against})"
        if saturation_risk and not saturation_safe(best.name):
            # It passed on these samples; inputs with larger activations may still saturate its kernels.
            alternative = min(safe, key=_p50) if safe else None
            reason += f"; {SATURATION_NOTE}" + (
                f": {alternative.name} is within tolerance at p50 {_ms(_p50(alternative))} ms"
                if alternative else ", and none of them is within tolerance here")
        return best.name, reason
    speedup = _p50(base) / _p50(best) if _p50(best) > 0 else 0.0
    reason = (
        f"int8 did not pay: every int8 variant is slower than {base.name} "
        f"(best {speedup:.1f}x: {best.name} p50 {_ms(_p50(best))} ms vs {_ms(_p50(base))} ms)"
    )
    if safe:
        # int8 is also chosen for size; say which variant to ship then.
        fastest_int8 = min(safe, key=_p50)
        reason += (f"; if int8 is needed here (e.g. for size), {fastest_int8.name} is the fastest within tolerance"
                   + (" that cannot saturate" if saturation_risk else ""))
    return base.name, reason


def saturation_findings(variants: Sequence[VariantResult]) -> list[str]:
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


def _on_accuracy(int8: Sequence[VariantResult], saturation_risk: bool, why: str) -> tuple[str, str]:
    def key(v: VariantResult) -> tuple[bool, float, float]:
        assert v.accuracy is not None  # passes implies accuracy
        top1 = v.accuracy.top1_agreement
        return (saturation_risk and not saturation_safe(v.name), -v.accuracy.cosine, -(top1 or 0.0))

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


def _why_no_int8(variants: Sequence[VariantResult]) -> str:
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
    return f"no int8 variant is within tolerance (best: {best.name}, {figures})"


def _p50(v: VariantResult) -> float:
    assert v.latency_ms is not None
    return v.latency_ms.p50


def _ms(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3g}"
