"""farm.job.recommend: the rules of docs/contracts.md section 2, on made-up results (the function is pure)."""

from __future__ import annotations

from dataclasses import replace

from farm.job.recommend import Recommendation, faster, recommend, saturation_findings, speed_evidence
from farm.job.report import Variant
from farm.job.types import Accuracy, Latency, StopReason


def ok(
    name: str,
    p50: float | None,
    cosine: float = 0.999,
    *,
    within: bool = True,
    noise: float = 0.01,
    size: int | None = None,
) -> Variant:
    """A variant that ran; its five timing rounds lie within ``noise`` (a share of p50) around ``p50``."""
    rounds = () if p50 is None else tuple(p50 * (1 + noise * f) for f in (-1.0, -0.5, 0.0, 0.5, 1.0))
    return Variant(
        name=name,
        status="ok",
        size_bytes=size,
        latency_ms=None if p50 is None else Latency(p50=p50, p90=p50, p99=p50, rounds=rounds),
        timing="none" if p50 is None else "measured",
        accuracy=Accuracy(cosine=cosine, max_abs=0.1, top1_agreement=1.0 if within else 0.9, accuracy=None),
        within_tolerance=within,
    )


def failed(name: str) -> Variant:
    return Variant(name=name, status="failed", error="boom")


BASE = [ok("fp32", 0.20, 1.0), ok("optimized", 0.18, 1.0)]


def advice(
    variants: list[Variant], *, emulated: bool = False, saturation_risk: bool = False, conv_share: float | None = None
) -> Recommendation:
    """What the stage asks for: the evidence from the variants' timing labels, except where QEMU ran them."""
    evidence = "none" if emulated else speed_evidence(variants, None)
    return recommend(
        variants, evidence=evidence, saturation_risk=saturation_risk, conv_share=conv_share, target="arm64"
    )


def advise(
    variants: list[Variant], *, emulated: bool = False, saturation_risk: bool = False
) -> tuple[str | None, str | None]:
    chosen = advice(variants, emulated=emulated, saturation_risk=saturation_risk)
    return chosen.recommended, chosen.reason


def test_fastest_int8_within_tolerance_wins() -> None:
    variants = [*BASE, ok("u8s8-qdq", 0.10, within=False), ok("u8u8-qdq", 0.12), ok("s8s8-qdq", 0.15)]
    name, why = advise(variants, emulated=False, saturation_risk=False)
    assert name == "u8u8-qdq"
    assert why == "u8u8-qdq: faster than optimized beyond noise (p50 0.12 ±0.0012 ms vs optimized 0.18 ±0.0018 ms)"


def test_int8_that_does_not_pay_recommends_the_faster_baseline() -> None:
    variants = [*BASE, ok("u8u8-qdq", 0.30), ok("s8s8-qdq", 0.40)]
    name, why = advise(variants, emulated=False, saturation_risk=False)
    assert name == "optimized"
    assert why is not None
    assert why.startswith("int8 did not pay: every int8 variant is slower than optimized beyond noise (best 0.60x")


def test_no_int8_within_tolerance_says_which_came_closest() -> None:
    variants = [*BASE, ok("u8s8-qdq", 0.1, 0.95, within=False), ok("u8u8-qdq", 0.1, 0.97, within=False)]
    name, why = advise(variants, emulated=False, saturation_risk=False)
    assert name == "optimized"
    assert why == (
        "no int8 variant is within tolerance (best: u8u8-qdq, cosine 0.9700, top1 agreement 0.90); "
        "recommending optimized; optimized rather than fp32: faster beyond noise (p50 0.18 ±0.0018 ms vs fp32 "
        "0.20 ±0.002 ms)"
    )


def test_fp32_when_optimized_failed_and_no_int8_ran() -> None:
    name, why = advise([BASE[0], failed("optimized"), failed("u8u8-qdq")], emulated=False, saturation_risk=False)
    assert name == "fp32"
    assert why == "no int8 variant ran (u8u8-qdq: failed); recommending fp32"


def test_nothing_when_fp32_failed() -> None:
    assert advice([failed("fp32")]) == Recommendation(
        recommended=None, reason="fp32 did not run, so there is nothing to compare against", int8_if_needed=None
    )
    assert advise([], emulated=False, saturation_risk=False)[0] is None


def test_without_speed_evidence_the_baseline_is_recommended_and_int8_named_by_accuracy() -> None:
    # The int8 variants' (emulated) timings would make u8s8-qdq the fastest: they are not evidence.
    variants = [*BASE, ok("u8s8-qdq", 0.01, 0.999), ok("s8s8-qdq", 5.0, 0.9995)]
    chosen = advice(variants, emulated=True)
    assert chosen.recommended == "fp32"  # as accurate as optimized, and no size to tell them apart
    assert chosen.int8_if_needed == "s8s8-qdq"
    assert chosen.reason is not None and chosen.reason.startswith("speed unknown on arm64 (")
    assert "so no variant is called faster: recommending the baseline fp32" in chosen.reason
    assert chosen.reason.endswith(
        "if int8 is needed here (e.g. for size or power): s8s8-qdq (within tolerance, then the most accurate, "
        "then the smallest)"
    )
    assert "faster beyond" not in chosen.reason


def test_without_speed_evidence_the_baseline_is_chosen_on_accuracy_then_size() -> None:
    variants = [ok("fp32", None, 1.0, size=1000), ok("optimized", None, 1.0, size=900), ok("u8u8-qdq", None)]
    chosen = advice(variants, emulated=True)
    assert chosen.recommended == "optimized" and chosen.int8_if_needed == "u8u8-qdq"
    assert (
        chosen.reason is not None and "optimized rather than the other baseline on accuracy, then size" in chosen.reason
    )


def test_emulated_x86_without_vnni_names_a_saturation_safe_variant_first() -> None:
    variants = [
        *BASE,
        ok("u8s8-qdq", 1.0, 0.9999),
        ok("u8s8-qdq+x64quantprecision", 1.0, 0.9995),
        ok("u8u8-qdq", 1.0, 0.9990),
    ]
    chosen = advice(variants, emulated=True, saturation_risk=True)
    assert chosen.recommended == "fp32"
    assert chosen.int8_if_needed == "u8s8-qdq+x64quantprecision"
    assert chosen.reason is not None and "cannot saturate on x86 without VNNI" in chosen.reason


def test_saturation_risk_without_a_safe_variant_says_so() -> None:
    variants = [*BASE, ok("u8s8-qdq", 1.0, 0.9999), ok("u8u8-qdq", 1.0, 0.5, within=False)]
    chosen = advice(variants, emulated=True, saturation_risk=True)
    assert chosen.recommended == "fp32" and chosen.int8_if_needed == "u8s8-qdq"
    assert chosen.reason is not None
    assert chosen.reason.endswith(
        "none that cannot saturate on x86 without VNNI is within tolerance, so u8s8-qdq may saturate)"
    )


def test_a_passing_variant_left_untimed_leaves_the_target_without_evidence() -> None:
    variants = [ok("fp32", 0.2, 1.0), ok("u8u8-qdq", None, 0.999), ok("s8s8-qdq", 0.1, 0.99)]
    assert speed_evidence(variants, None) == "none"
    chosen = advice(variants)
    assert chosen.recommended == "fp32" and chosen.int8_if_needed == "u8u8-qdq"
    assert chosen.reason is not None and chosen.reason.startswith("speed unknown on arm64 (no trusted timings")


def test_int8_that_does_not_pay_still_names_the_int8_to_ship_for_size() -> None:
    variants = [*BASE, ok("u8s8-qdq", 0.25), ok("u8u8-qdq", 0.30), ok("s8s8-qdq", 0.40, within=False)]
    chosen = advice(variants)
    assert chosen.recommended == "optimized" and chosen.int8_if_needed == "u8s8-qdq"
    assert chosen.reason is not None and chosen.reason.endswith(
        "; if int8 is needed here (e.g. for size or power): u8s8-qdq (within tolerance, not slower beyond noise "
        "than another int8 variant)"
    )
    # The one variant that cannot saturate is slower beyond noise than u8s8-qdq: dropped, and the reason says so.
    risky = advice(variants, saturation_risk=True)
    assert risky.recommended == "optimized" and risky.int8_if_needed == "u8s8-qdq"
    assert risky.reason is not None and risky.reason.endswith(
        "the variants that cannot saturate on x86 without VNNI (u8u8-qdq) are slower beyond noise than another "
        "int8 variant, so u8s8-qdq may saturate on inputs larger than these samples)"
    )


def test_a_fast_variant_that_may_saturate_comes_with_a_safe_alternative() -> None:
    variants = [*BASE, ok("u8s8-qdq", 0.10), ok("u8u8-qdq", 0.12)]
    name, why = advise(variants, emulated=False, saturation_risk=True)
    assert name == "u8s8-qdq"
    assert why is not None and why.endswith(": u8u8-qdq is within tolerance at p50 0.12 ms")


def test_saturation_is_told_apart_from_quantization_by_the_mitigation_twin() -> None:
    variants = [
        *BASE,
        ok("u8s8-qdq", 0.1, 0.9537, within=False),
        ok("u8s8-qdq+x64quantprecision", 0.1, 1.0),
        # Out of tolerance with its twin too: quantization itself lost the accuracy, not the kernels.
        ok("u8s8-dynamic", 0.1, 0.90, within=False),
        ok("u8s8-dynamic+x64quantprecision", 0.1, 0.91, within=False),
    ]
    findings = saturation_findings(variants)
    assert len(findings) == 1
    assert findings[0].startswith("u8s8-qdq saturates on this tier: cosine 0.9537, against 1.0000 for the same model")


def test_variants_within_noise_are_never_called_fastest() -> None:
    # 2% apart with rounds that overlap: neither int8 nor optimized beats fp32 beyond noise.
    variants = [
        ok("fp32", 0.100, 1.0, noise=0.05, size=1000),
        ok("optimized", 0.098, 1.0, noise=0.05, size=1200),
        ok("u8u8-qdq", 0.097, 0.9995, noise=0.05),
    ]
    name, why = advise(variants, emulated=False, saturation_risk=False)
    assert name == "fp32"
    assert why is not None and "fastest" not in why
    assert why.startswith("no variant is faster beyond noise: u8u8-qdq within noise of fp32")
    assert "fp32 rather than optimized: within noise" in why and "chose on accuracy, then size" in why
    assert why.endswith("; if int8 is needed here (e.g. for size or power): u8u8-qdq (within tolerance)")


def test_steady_rounds_make_a_small_difference_real_but_the_floor_still_holds() -> None:
    steady = [ok("fp32", 0.100, 1.0, noise=0.001), ok("u8u8-qdq", 0.095, noise=0.001)]
    assert advise(steady, emulated=False, saturation_risk=False)[0] == "u8u8-qdq"
    # 2% apart with rounds that do not overlap is still below the 3% floor.
    close = [ok("fp32", 0.100, 1.0, noise=0.001), ok("u8u8-qdq", 0.098, noise=0.001)]
    assert advise(close, emulated=False, saturation_risk=False)[0] == "fp32"


def test_optimized_slower_than_fp32_is_not_recommended() -> None:
    variants = [ok("fp32", 0.10, 1.0), ok("optimized", 0.13, 1.0), ok("u8u8-qdq", 0.5, within=False)]
    name, why = advise(variants, emulated=False, saturation_risk=False)
    assert name == "fp32"
    assert why is not None and "optimized is slower beyond noise" in why


def test_int8_tied_with_the_fastest_is_chosen_on_accuracy_then_size() -> None:
    variants = [
        *BASE,
        ok("u8s8-qdq", 0.100, 0.9990, noise=0.05, size=500),
        ok("u8u8-qdq", 0.101, 0.9995, noise=0.05, size=600),
        ok("s8s8-qdq", 0.102, 0.9995, noise=0.05, size=400),
    ]
    name, why = advise(variants, emulated=False, saturation_risk=False)
    assert name == "s8s8-qdq"  # the same cosine as u8u8-qdq, and smaller
    assert why is not None and "within noise of u8s8-qdq, u8u8-qdq, so chose on accuracy, then size" in why


def test_faster_needs_every_round_to_beat_every_round() -> None:
    a = Latency(p50=1.0, p90=1.0, p99=1.0, rounds=(0.9, 1.0, 1.2))
    b = Latency(p50=1.5, p90=1.5, p99=1.5, rounds=(1.19, 1.5, 1.6))
    assert not faster(a, b)
    assert faster(a, Latency(p50=1.5, p90=1.5, p99=1.5, rounds=(1.3, 1.5, 1.6)))
    assert not faster(Latency(p50=1.5, p90=1.5, p99=1.5, rounds=(1.3, 1.5, 1.6)), a)


def test_alternating_rounds_are_compared_round_by_round() -> None:
    # A slow stretch in round 2 hit both: a is faster in every round, though its slow round is slower than b's fast.
    a = Latency(p50=1.0, p90=1.0, p99=1.0, rounds=(1.0, 2.0, 1.0), interleaved=True)
    b = Latency(p50=1.5, p90=1.5, p99=1.5, rounds=(1.5, 3.0, 1.5), interleaved=True)
    assert faster(a, b) and not faster(b, a)
    assert not faster(replace(a, interleaved=False), b)  # unpaired, a's 2.0 overlaps b's 1.5
    # One round the other way round is noise.
    assert not faster(replace(a, rounds=(1.0, 3.1, 1.0)), b)


def test_a_variant_tied_with_the_fastest_must_itself_beat_the_baseline() -> None:
    fp32 = ok("fp32", 10.0, 1.0)
    u8u8 = ok("u8u8-qdq", 8.0, 0.999)
    # Within noise of u8u8-qdq and more accurate, but its slowest round is slower than fp32's: not faster.
    s8s8 = replace(
        ok("s8s8-qdq", 9.9, 0.9995), latency_ms=Latency(p50=9.9, p90=9.9, p99=9.9, rounds=(7.9, 9.9, 10.5, 9.9, 9.9))
    )
    name, why = advise([fp32, u8u8, s8s8], emulated=False, saturation_risk=False)
    assert name == "u8u8-qdq", why


def stopped(variant: Variant, why: StopReason, rounds: int = 2) -> Variant:
    """``variant`` as adaptive timing leaves it when it stops early: its first ``rounds`` rounds, labelled."""
    latency = variant.latency_ms
    assert latency is not None
    return replace(variant, latency_ms=replace(latency, rounds=latency.rounds[:rounds], stopped=why))


def test_a_variant_stopped_early_makes_no_speed_claim_either_way() -> None:
    fast, slow = ok("u8u8-qdq", 0.05), ok("s8s8-qdq", 0.50)
    fp32 = BASE[0]
    assert fast.latency_ms and slow.latency_ms and fp32.latency_ms
    assert faster(fast.latency_ms, fp32.latency_ms) and faster(fp32.latency_ms, slow.latency_ms)
    reasons: tuple[StopReason, ...] = ("decided", "out-of-tolerance")
    for reason in reasons:
        quick, late = stopped(fast, reason), stopped(slow, reason)
        assert quick.latency_ms and late.latency_ms
        assert not faster(quick.latency_ms, fp32.latency_ms) and not faster(fp32.latency_ms, quick.latency_ms)
        assert not faster(late.latency_ms, fp32.latency_ms) and not faster(fp32.latency_ms, late.latency_ms)
    # Stopped, the fastest int8 variant is no claim: the baseline stays, and the reason says within noise.
    name, why = advise([*BASE, stopped(fast, "decided")])
    assert name == "optimized"
    assert why is not None and why.startswith("no variant is faster beyond noise: u8u8-qdq within noise of optimized")
    # A stopped variant never hides another that does beat the baseline in every round, whatever their p50s.
    name, why = advise([*BASE, stopped(ok("u8s8-qdq", 0.04), "decided"), ok("u8u8-qdq", 0.10)])
    assert name == "u8u8-qdq", why
    # "int8 did not pay" is a claim against every int8 variant; a stopped one is within noise, so it is not made.
    name, why = advise([*BASE, stopped(slow, "decided"), ok("u8s8-qdq", 0.40)])
    assert why is not None and "did not pay" not in why and why.startswith("no variant is faster"), why
