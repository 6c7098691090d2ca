"""Which variant to ship on a target, and why (docs/contracts.md section 2). Pure: results in, sentence out.

A speed claim ("faster", "slower", "did not pay") is made only on evidence (``speed_evidence``: timings measured
natively or on a masked tier, or a trusted instruction-count estimate) and only beyond its error: every timing round
of one variant beat every round of the other, and by more than ``NOISE_FLOOR`` (for an estimate, by more than its
90th-percentile error). Variants closer than that are "within noise", and the choice between them rests on accuracy,
then size. Without evidence the baseline is recommended: QEMU wall time inverts the very ranking a user needs (TCG
emulates floating point far more slowly than integer SIMD), so an emulated timing is never evidence.

Every target with an int8 variant within tolerance also names ``int8_if_needed``, the int8 variant to ship if int8 is
wanted for size or power, by one stated rule (``_int8_if_needed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from farm.job.report import SpeedEstimate, SpeedEvidence, Variant
from farm.job.types import Latency
from farm.job.variants import BASELINES, FP32, MITIGATION_SUFFIX, OPTIMIZED, RECIPES, TUNED, saturation_safe

# Differences below this share of p50 are never claimed, however steady the rounds: clock frequency and memory
# layout move single-threaded timings by a few percent between sessions of the same model.
NOISE_FLOOR = 0.03
# Above this share of the model's multiply-accumulates in Conv, static QDQ goes before dynamic quantization: dynamic
# quantization adds a DynamicQuantizeLinear and a ConvInteger at every Conv, which measured 2.8-6.6x slower than
# static QDQ on CNNs (issue 19).
CONV_HEAVY = 0.5
SATURATION_NOTE = (
    "on x86 without VNNI U8S8/S8S8 kernels (VPMADDUBSW) may saturate, so preferred "
    "u8u8-qdq, u8s8-qdq-rr and +x64quantprecision variants"
)
IF_NEEDED = "if int8 is needed here (e.g. for size or power)"


@dataclass(frozen=True, kw_only=True, slots=True)
class Recommendation:
    """What to ship on a target and why; ``int8_if_needed`` is the int8 variant to ship if int8 is wanted (the
    recommended one when that is int8), None when no int8 variant is within tolerance."""

    recommended: str | None
    reason: str | None
    int8_if_needed: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class _Claims:
    """How far apart two latencies must be for a speed claim, and how the reason says so."""

    floor: float
    beyond: str

    def faster(self, a: Latency, b: Latency) -> bool:
        return faster(a, b, floor=self.floor)


def faster(a: Latency, b: Latency, *, floor: float = NOISE_FLOOR) -> bool:
    """``a`` beats ``b`` beyond noise: by more than ``floor`` of p50 overall, and in every round.

    Rounds that alternated (``interleaved``) are compared pairwise, round i against round i, since a slow stretch
    of the host fell on both alike; otherwise each of a's rounds must beat each of b's. Estimates have no rounds:
    ``floor`` (their error) alone decides. A latency whose timing stopped early (``stopped``: adaptive timing) has
    fewer rounds than the claim needs, so it is never called faster or slower than anything.
    """
    if a.stopped is not None or b.stopped is not None:
        return False
    if a.p50 * (1.0 + floor) >= b.p50:
        return False
    if not a.rounds or not b.rounds:
        return True
    if a.interleaved and b.interleaved and len(a.rounds) == len(b.rounds):
        return all(x < y for x, y in zip(a.rounds, b.rounds, strict=True))
    return max(a.rounds) < min(b.rounds)


def speed_evidence(variants: Sequence[Variant], estimate: SpeedEstimate | None) -> SpeedEvidence:
    """What the target's speed claims may rest on: the passing variants' timing when every one of them has a latency
    of the same kind, measured or masked; "estimated" when every one has an estimated latency and the estimate is
    trusted; else "none" (QEMU wall time, an untrusted estimate, or a passing variant left untimed)."""
    passing = [v for v in variants if v.passes]
    if not passing or any(v.latency_ms is None for v in passing):
        return "none"
    labels = {v.timing for v in passing}
    if labels == {"measured"}:
        return "measured"
    if labels == {"masked"}:
        return "masked"
    if labels == {"estimated"} and estimate is not None and estimate.trusted:
        return "estimated"
    return "none"


def recommend(
    variants: Sequence[Variant],
    *,
    evidence: SpeedEvidence,
    saturation_risk: bool,
    conv_share: float | None,
    claim_floor: float | None = None,
    target: str = "this target",
) -> Recommendation:
    """The int8 variant within tolerance that is faster than fp32 and optimized beyond noise, or else the better
    baseline, with the reason and the int8 variant to ship if int8 is needed.

    ``evidence`` is ``speed_evidence``'s verdict; without it ("none") no speed claim is made and the baseline is
    recommended on accuracy, then size. ``claim_floor`` replaces NOISE_FLOOR for an estimate (its error_p90).
    ``saturation_risk`` is true on x86 targets without VNNI; ``conv_share`` is the share of the model's
    multiply-accumulates in Conv nodes (None when unknown). ``target`` names the target in the reason.
    """
    by_name = {v.name: v for v in variants}
    fp32 = by_name.get(FP32)
    if fp32 is None or fp32.status != "ok":
        why = "fp32 did not run" if fp32 is None or fp32.accuracy is None else f"fp32 failed ({fp32.error})"
        return Recommendation(
            recommended=None, reason=f"{why}, so there is nothing to compare against", int8_if_needed=None
        )
    claims = _claims(evidence, claim_floor)
    base, base_why = _baseline(variants, claims=claims)
    int8 = [v for v in variants if v.name not in BASELINES and v.passes]
    if not int8:
        reason = f"{_why_no_int8(variants)}; recommending {base.name}{base_why}"
        if claims is None:
            reason = f"speed unknown on {target} ({_unknown_because(variants)}); {reason}"
        return Recommendation(recommended=base.name, reason=reason, int8_if_needed=None)
    pick, pick_why = _int8_if_needed(int8, claims=claims, saturation_risk=saturation_risk, conv_share=conv_share)
    if claims is None:
        reason = (
            f"speed unknown on {target} ({_unknown_because(variants)}), so no variant is called faster: "
            f"recommending the baseline {base.name}{base_why}; {IF_NEEDED}: {pick.name} ({pick_why})"
        )
        return Recommendation(recommended=base.name, reason=reason, int8_if_needed=pick.name)
    recommended, reason = _on_speed(int8, base, base_why, saturation_risk, claims)
    if recommended != base.name:
        return Recommendation(recommended=recommended, reason=reason, int8_if_needed=recommended)
    reason += f"; {IF_NEEDED}: {pick.name} ({pick_why})"
    return Recommendation(recommended=recommended, reason=reason, int8_if_needed=pick.name)


def _claims(evidence: SpeedEvidence, claim_floor: float | None) -> _Claims | None:
    if evidence == "none":
        return None
    if evidence == "estimated" and claim_floor is not None:
        return _Claims(floor=claim_floor, beyond=f"beyond the estimate's error ({claim_floor:.0%} at p90)")
    return _Claims(floor=NOISE_FLOOR, beyond="beyond noise")


def _unknown_because(variants: Sequence[Variant]) -> str:
    labels = {v.timing for v in variants if v.passes}
    if "estimated" in labels:
        return "its instruction-count estimate is not validated against real hardware"
    if "emulated" in labels:
        return "QEMU wall time is no speed evidence"
    return "no trusted timings were taken"


def _int8_if_needed(
    int8: Sequence[Variant], *, claims: _Claims | None, saturation_risk: bool, conv_share: float | None
) -> tuple[Variant, str]:
    """The int8 variant to ship if int8 is wanted, and the rule that chose it, as a clause.

    Within tolerance (``int8`` passes); where speed is known, none that another of them beats beyond noise; on x86
    without VNNI, those that cannot saturate first; static QDQ before dynamic when most multiply-accumulates are in
    Conv; then the most accurate, then the smallest.
    """
    pool = list(int8)
    steps = ["within tolerance"]
    dropped_safe: list[Variant] = []
    if claims is not None:
        unbeaten = [v for v in pool if not any(claims.faster(_latency(w), _latency(v)) for w in pool)]
        if len(unbeaten) < len(pool):
            steps.append(f"not slower {claims.beyond} than another int8 variant")
        if saturation_risk:
            dropped_safe = [v for v in pool if saturation_safe(v.name) and v not in unbeaten]
        pool = unbeaten
    if saturation_risk:
        safe = [v for v in pool if saturation_safe(v.name)]
        if safe:
            pool = safe
            steps.append("cannot saturate on x86 without VNNI")
    conv_heavy = conv_share is not None and conv_share > CONV_HEAVY
    if conv_heavy:
        static = [v for v in pool if _static_qdq(v)]
        if static and len(static) < len(pool):
            pool = static
            assert conv_share is not None
            steps.append(f"static QDQ before dynamic: {conv_share:.0%} of the multiply-accumulates are in Conv")
    best = min(pool, key=_quality)
    if len(pool) > 1:
        steps.append("then the most accurate, then the smallest")
    why = ", ".join(steps)
    if dropped_safe and not saturation_safe(best.name):
        assert claims is not None  # only a speed claim drops a variant
        names = ", ".join(v.name for v in dropped_safe)
        why += (
            f"; the variants that cannot saturate on x86 without VNNI ({names}) are slower {claims.beyond} than "
            f"another int8 variant, so {best.name} may saturate on inputs larger than these samples"
        )
    elif saturation_risk and not saturation_safe(best.name):
        why += f"; none that cannot saturate on x86 without VNNI is within tolerance, so {best.name} may saturate"
    return best, why


def _static_qdq(v: Variant) -> bool:
    """Quantized statically into QDQ (the tuned model is: farm tune searches static QDQ models)."""
    if v.quantization is not None:
        return v.quantization.kind == "static" and v.quantization.format == "QDQ"
    recipe = RECIPES.get(v.name.removesuffix(MITIGATION_SUFFIX))
    return v.name == TUNED or (recipe is not None and recipe.kind == "static")


def _baseline(variants: Sequence[Variant], *, claims: _Claims | None) -> tuple[Variant, str]:
    """fp32 or optimized, by the same rule as everything else: faster beyond noise, else accuracy, then size.

    The text says why, as a clause to append (empty when there was no choice to make).
    """
    by_name = {v.name: v for v in variants}
    fp32 = by_name[FP32]
    optimized = by_name.get(OPTIMIZED)
    if optimized is None or not optimized.passes:
        return fp32, ""
    if claims is not None:
        assert fp32.latency_ms is not None and optimized.latency_ms is not None
        if claims.faster(optimized.latency_ms, fp32.latency_ms):
            return optimized, f"; optimized rather than fp32: faster {claims.beyond} ({_vs(optimized, fp32)})"
        if claims.faster(fp32.latency_ms, optimized.latency_ms):
            return fp32, (f"; fp32 rather than optimized: optimized is slower {claims.beyond} ({_vs(optimized, fp32)})")
        chosen = min((fp32, optimized), key=_quality)
        other = optimized if chosen is fp32 else fp32
        return chosen, (
            f"; {chosen.name} rather than {other.name}: within noise ({_vs(optimized, fp32)}), "
            "so chose on accuracy, then size"
        )
    chosen = min((fp32, optimized), key=_quality)
    return chosen, f"; {chosen.name} rather than the other baseline on accuracy, then size (no comparable timings)"


def _on_speed(
    int8: Sequence[Variant], base: Variant, base_why: str, saturation_risk: bool, claims: _Claims
) -> tuple[str, str]:
    assert base.latency_ms is not None
    beyond = claims.beyond
    # A variant stopped early claims nothing, so the one to test is the fastest that still may.
    fastest = min([v for v in int8 if _latency(v).stopped is None] or int8, key=_p50)
    assert fastest.latency_ms is not None
    if claims.faster(fastest.latency_ms, base.latency_ms):
        # Variants that also beat the baseline and that no int8 variant beats beyond noise are as fast as far as
        # this run can tell. Not only the fastest: "beyond noise" is not transitive, so a variant within noise of
        # the fastest may still be beaten by a third (round by round).
        tied = [
            v
            for v in int8
            if v is fastest
            or (
                claims.faster(_latency(v), base.latency_ms)
                and not any(claims.faster(_latency(w), _latency(v)) for w in int8)
            )
        ]
        safe_tied = [v for v in tied if saturation_safe(v.name)] if saturation_risk else []
        best = min(safe_tied or tied, key=_quality)
        reason = f"{best.name}: faster than {base.name} {beyond} ({_vs(best, base)})"
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
    if all(claims.faster(base.latency_ms, _latency(v)) for v in int8):
        speedup = _p50(base) / _p50(fastest) if _p50(fastest) > 0 else 0.0
        reason = (
            f"int8 did not pay: every int8 variant is slower than {base.name} {beyond} "
            f"(best {speedup:.2f}x: {fastest.name} {_vs(fastest, base)}){base_why}"
        )
    else:
        close = [v for v in int8 if not claims.faster(base.latency_ms, _latency(v))]
        reason = (
            f"no variant is faster {beyond}: {', '.join(v.name for v in close)} within noise of "
            f"{base.name} ({fastest.name} {_vs(fastest, base)}), so chose {base.name} on accuracy{base_why}"
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
