"""farm.job.recommend: the rules of docs/contracts.md section 2, on made-up results (the function is pure)."""

from __future__ import annotations

from farm.job.metrics import Accuracy, Latency
from farm.job.recommend import recommend, saturation_findings
from farm.job.result import VariantResult


def ok(name: str, p50: float | None, cosine: float = 0.999, *, within: bool = True) -> VariantResult:
    return VariantResult(
        name=name,
        status="ok",
        latency_ms=None if p50 is None else Latency(p50=p50, p90=p50, p99=p50),
        timing="none" if p50 is None else "measured",
        accuracy=Accuracy(cosine=cosine, max_abs=0.1, top1_agreement=1.0 if within else 0.9, accuracy=None),
        within_tolerance=within,
    )


def failed(name: str) -> VariantResult:
    return VariantResult(name=name, status="failed", error="boom")


BASE = [ok("fp32", 0.20, 1.0), ok("optimized", 0.18, 1.0)]


def test_fastest_int8_within_tolerance_wins() -> None:
    variants = [*BASE, ok("u8s8-qdq", 0.10, within=False), ok("u8u8-qdq", 0.12), ok("s8s8-qdq", 0.15)]
    name, why = recommend(variants, emulated=False, saturation_risk=False)
    assert name == "u8u8-qdq"
    assert why == "u8u8-qdq: fastest within tolerance (p50 0.12 ms vs fp32 0.20 ms, optimized 0.18 ms)"


def test_int8_that_does_not_pay_recommends_the_faster_baseline() -> None:
    variants = [*BASE, ok("u8u8-qdq", 0.30), ok("s8s8-qdq", 0.40)]
    name, why = recommend(variants, emulated=False, saturation_risk=False)
    assert name == "optimized"
    assert why is not None
    assert why.startswith("int8 did not pay: every int8 variant is slower than optimized (best 0.6x")


def test_no_int8_within_tolerance_says_which_came_closest() -> None:
    variants = [*BASE, ok("u8s8-qdq", 0.1, 0.95, within=False), ok("u8u8-qdq", 0.1, 0.97, within=False)]
    name, why = recommend(variants, emulated=False, saturation_risk=False)
    assert name == "optimized"
    assert why == (
        "no int8 variant is within tolerance (best: u8u8-qdq, cosine 0.9700, top1 agreement 0.90); "
        "recommending optimized"
    )


def test_fp32_when_optimized_failed_and_no_int8_ran() -> None:
    name, why = recommend([BASE[0], failed("optimized"), failed("u8u8-qdq")], emulated=False, saturation_risk=False)
    assert name == "fp32"
    assert why == "no int8 variant ran (u8u8-qdq: failed); recommending fp32"


def test_nothing_when_fp32_failed() -> None:
    assert recommend([failed("fp32")], emulated=False, saturation_risk=False)[0] is None
    assert recommend([], emulated=False, saturation_risk=False)[0] is None


def test_emulated_target_chooses_on_accuracy_not_speed() -> None:
    variants = [*BASE, ok("u8s8-qdq", 0.01, 0.999), ok("s8s8-qdq", 5.0, 0.9995)]
    name, why = recommend(variants, emulated=True, saturation_risk=False)
    assert name == "s8s8-qdq"
    assert why is not None and why.startswith("emulated target: timings are not comparable; chose on accuracy")


def test_emulated_x86_without_vnni_prefers_saturation_safe_variants() -> None:
    variants = [
        *BASE,
        ok("u8s8-qdq", 1.0, 0.9999),
        ok("u8s8-qdq+x64quantprecision", 1.0, 0.9995),
        ok("u8u8-qdq", 1.0, 0.9990),
    ]
    name, why = recommend(variants, emulated=True, saturation_risk=True)
    assert name == "u8s8-qdq+x64quantprecision"
    assert why is not None
    assert "emulated target: timings are not comparable" in why
    assert "on x86 without VNNI U8S8/S8S8 kernels (VPMADDUBSW) may saturate, so preferred" in why


def test_saturation_risk_without_a_safe_variant_says_so() -> None:
    variants = [*BASE, ok("u8s8-qdq", 1.0, 0.9999), ok("u8u8-qdq", 1.0, 0.5, within=False)]
    name, why = recommend(variants, emulated=True, saturation_risk=True)
    assert name == "u8s8-qdq"
    assert why is not None and "none of them is within tolerance" in why


def test_native_without_timings_falls_back_to_accuracy() -> None:
    variants = [ok("fp32", None, 1.0), ok("u8u8-qdq", None, 0.999)]
    name, why = recommend(variants, emulated=False, saturation_risk=False)
    assert name == "u8u8-qdq"
    assert why is not None and why.startswith("no timings were taken")


def test_int8_that_does_not_pay_still_names_the_int8_to_ship_for_size() -> None:
    variants = [*BASE, ok("u8s8-qdq", 0.25), ok("u8u8-qdq", 0.30), ok("s8s8-qdq", 0.40, within=False)]
    _, why = recommend(variants, emulated=False, saturation_risk=False)
    assert why is not None and why.endswith("; if int8 is needed here (e.g. for size), u8s8-qdq is the fastest "
                                            "within tolerance")
    _, risky = recommend(variants, emulated=False, saturation_risk=True)
    assert risky is not None and risky.endswith("u8u8-qdq is the fastest within tolerance that cannot saturate")


def test_a_fast_variant_that_may_saturate_comes_with_a_safe_alternative() -> None:
    variants = [*BASE, ok("u8s8-qdq", 0.10), ok("u8u8-qdq", 0.12)]
    name, why = recommend(variants, emulated=False, saturation_risk=True)
    assert name == "u8s8-qdq"
    assert why is not None and why.endswith(": u8u8-qdq is within tolerance at p50 0.12 ms")


def test_saturation_is_told_apart_from_quantization_by_the_mitigation_twin() -> None:
    variants = [
        *BASE,
        ok("u8s8-qdq", 0.1, 0.9537, within=False), ok("u8s8-qdq+x64quantprecision", 0.1, 1.0),
        # Out of tolerance with its twin too: quantization itself lost the accuracy, not the kernels.
        ok("u8s8-dynamic", 0.1, 0.90, within=False), ok("u8s8-dynamic+x64quantprecision", 0.1, 0.91, within=False),
    ]
    findings = saturation_findings(variants)
    assert len(findings) == 1
    assert findings[0].startswith("u8s8-qdq saturates on this tier: cosine 0.9537, against 1.0000 for the same model")
