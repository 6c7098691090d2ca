"""farm.job.recommend: what a target's speed claims rest on (``speed_evidence``) and the int8 variant to ship if int8
is needed (``int8_if_needed``), branch by branch of the rule in docs/contracts.md section 2."""

from __future__ import annotations

from dataclasses import replace

import pytest

from farm.job.recommend import recommend, speed_evidence
from farm.job.report import Quantization, SpeedEstimate, Timing, Variant
from farm.job.types import Latency
from tests.unit.test_job_recommend import BASE, advice, ok

TRUSTED = SpeedEstimate(cost_model="haswell", trusted=True, error_p90=0.2, basis="instruction counts")


def labelled(variants: list[Variant], timing: Timing) -> list[Variant]:
    return [replace(v, timing=timing) for v in variants]


def estimated(name: str, p50: float, cosine: float = 0.999) -> Variant:
    """An instruction-count estimate: one figure, no rounds."""
    return replace(ok(name, p50, cosine), latency_ms=Latency(p50=p50, p90=p50, p99=p50), timing="estimated")


def static(variant: Variant, kind: str = "static") -> Variant:
    """The variant as prepare.json describes it, under a name no recipe has."""
    quantization = Quantization(
        kind="static" if kind == "static" else "dynamic",
        format="QDQ" if kind == "static" else "QOperator",
        activation_type="uint8",
        weight_type="int8",
        reduce_range=False,
        per_channel=False,
        subgraphs=False,
        calibration=None,
        opset=13,
        nodes=None,
    )
    return replace(variant, quantization=quantization)


def test_speed_evidence_is_the_passing_variants_timing_when_all_share_it() -> None:
    variants = [*BASE, ok("u8u8-qdq", 0.1), ok("s8s8-qdq", None, within=False)]  # a failing variant does not count
    assert speed_evidence(variants, None) == "measured"
    assert speed_evidence(labelled(variants, "masked"), None) == "masked"
    assert speed_evidence([*variants[:2], replace(variants[2], timing="masked")], None) == "none"


def test_emulated_wall_time_is_never_evidence() -> None:
    assert speed_evidence(labelled(BASE, "emulated"), TRUSTED) == "none"
    assert speed_evidence([], None) == "none"


def test_an_estimate_is_evidence_only_when_trusted() -> None:
    variants = [estimated("fp32", 1.0, 1.0), estimated("u8u8-qdq", 0.5)]
    assert speed_evidence(variants, TRUSTED) == "estimated"
    assert speed_evidence(variants, replace(TRUSTED, trusted=False)) == "none"
    assert speed_evidence(variants, None) == "none"


def test_a_trusted_estimate_claims_speed_only_beyond_its_error() -> None:
    within_error = [estimated("fp32", 1.0, 1.0), estimated("u8u8-qdq", 0.85)]
    chosen = recommend(within_error, evidence="estimated", saturation_risk=False, conv_share=None, claim_floor=0.2)
    assert chosen.recommended == "fp32" and chosen.int8_if_needed == "u8u8-qdq"
    assert (
        chosen.reason is not None and "no variant is faster beyond the estimate's error (20% at p90)" in chosen.reason
    )
    clear = [estimated("fp32", 1.0, 1.0), estimated("u8u8-qdq", 0.5)]
    chosen = recommend(clear, evidence="estimated", saturation_risk=False, conv_share=None, claim_floor=0.2)
    assert chosen.recommended == "u8u8-qdq" and chosen.int8_if_needed == "u8u8-qdq"
    # Without the estimate's error, the same 15% would have been a claim beyond the timing noise floor.
    assert recommend(within_error, evidence="estimated", saturation_risk=False, conv_share=None).recommended == (
        "u8u8-qdq"
    )


def test_an_untrusted_estimate_names_itself_as_why_speed_is_unknown() -> None:
    variants = [estimated("fp32", 1.0, 1.0), estimated("u8u8-qdq", 0.3)]
    chosen = recommend(variants, evidence="none", saturation_risk=False, conv_share=None, target="arm64")
    assert chosen.recommended == "fp32" and chosen.int8_if_needed == "u8u8-qdq"
    assert chosen.reason is not None and chosen.reason.startswith(
        "speed unknown on arm64 (its instruction-count estimate is not validated against real hardware)"
    )


@pytest.mark.parametrize(("share", "expected"), [(0.9, "u8s8-qdq"), (0.5, "u8s8-dynamic"), (None, "u8s8-dynamic")])
def test_static_qdq_goes_before_dynamic_only_when_conv_does_most_of_the_work(
    share: float | None, expected: str
) -> None:
    variants = [*BASE, ok("u8s8-dynamic", None, 0.9999), ok("u8s8-qdq", None, 0.999)]
    chosen = advice(variants, emulated=True, conv_share=share)
    assert chosen.recommended == "fp32" and chosen.int8_if_needed == expected
    assert chosen.reason is not None
    assert ("static QDQ before dynamic: 90% of the multiply-accumulates are in Conv" in chosen.reason) == (share == 0.9)


def test_static_qdq_is_read_from_how_the_variant_was_made() -> None:
    variants = [*BASE, static(ok("mine", None, 0.9999), "dynamic"), static(ok("yours", None, 0.99))]
    assert advice(variants, emulated=True, conv_share=1.0).int8_if_needed == "yours"


def test_saturation_safety_goes_before_static_qdq() -> None:
    variants = [*BASE, ok("u8s8-qdq", None, 0.9999), ok("u8s8-dynamic+x64quantprecision", None, 0.999)]
    chosen = advice(variants, emulated=True, saturation_risk=True, conv_share=1.0)
    assert chosen.int8_if_needed == "u8s8-dynamic+x64quantprecision"
    assert advice(variants, emulated=True, conv_share=1.0).int8_if_needed == "u8s8-qdq"


def test_equal_accuracy_goes_to_the_smaller_variant() -> None:
    variants = [*BASE, ok("u8u8-qdq", None, 0.999, size=600), ok("s8s8-qdq-pc", None, 0.99990001, size=500)]
    # The cosines round to the same four places the report shows.
    assert advice(variants, emulated=True).int8_if_needed == "s8s8-qdq-pc"


def test_a_timed_target_never_names_an_int8_variant_another_beats_beyond_noise() -> None:
    # The YOLOv8n case of issue 19: every int8 variant within tolerance, none faster than fp32, and the most
    # accurate one (dynamic) 2.8x slower than static QDQ.
    variants = [
        ok("fp32", 63.8, 1.0),
        ok("u8s8-dynamic", 179.0, 0.9999),
        ok("u8s8-qdq", 63.2, 0.999),
        ok("u8u8-qdq", 64.0, 0.9995),
    ]
    chosen = advice(variants, conv_share=None)
    assert chosen.recommended == "fp32"
    # u8s8-dynamic is out; u8s8-qdq and u8u8-qdq are within noise of each other, so accuracy decides.
    assert chosen.int8_if_needed == "u8u8-qdq"
    assert chosen.reason is not None and chosen.reason.endswith(
        "u8u8-qdq (within tolerance, not slower beyond noise than another int8 variant, then the most accurate, "
        "then the smallest)"
    )


def test_a_safe_variant_within_noise_of_the_fastest_is_kept() -> None:
    variants = [ok("fp32", 0.1, 1.0), ok("u8s8-qdq", 0.2, 0.9999), ok("u8u8-qdq", 0.202, 0.999)]
    chosen = advice(variants, saturation_risk=True)
    assert chosen.recommended == "fp32" and chosen.int8_if_needed == "u8u8-qdq"


def test_the_recommended_int8_variant_is_the_one_to_ship_if_needed() -> None:
    # Most accurate would be s8s8-qdq (within noise of the baseline, so not recommended): the recommendation wins.
    variants = [*BASE, ok("u8u8-qdq", 0.10, 0.999), ok("s8s8-qdq", 0.18, 0.9999)]
    chosen = advice(variants)
    assert chosen.recommended == "u8u8-qdq" and chosen.int8_if_needed == "u8u8-qdq"


def test_no_int8_within_tolerance_names_none() -> None:
    variants = [*BASE, ok("u8u8-qdq", 0.1, 0.9, within=False)]
    assert advice(variants).int8_if_needed is None
    emulated = advice(variants, emulated=True)
    assert emulated.int8_if_needed is None and emulated.recommended == "fp32"
    assert emulated.reason is not None and emulated.reason.startswith("speed unknown on arm64")


def interleaved(name: str, rounds: tuple[float, ...], cosine: float) -> Variant:
    latency = Latency(p50=sorted(rounds)[len(rounds) // 2], p90=max(rounds), p99=max(rounds), rounds=rounds)
    return replace(ok(name, 1.0, cosine), latency_ms=replace(latency, interleaved=True))


def test_a_recommended_int8_variant_is_beaten_by_no_other_even_one_within_noise_of_the_fastest() -> None:
    # The CI case of issue 21: u8s8-qdq-pc+x64quantprecision was within noise of the fastest (it lost one round
    # to it) and most accurate, but s8s8-qdq-pc beat it in every round: "beyond noise" is not transitive.
    fastest = interleaved("u8s8-qdq", (0.50, 0.50, 0.50, 0.50, 0.60), 0.99)
    beaten = interleaved("u8s8-qdq-pc", (0.55, 0.55, 0.55, 0.55, 0.55), 0.9999)
    beats_it = interleaved("s8s8-qdq-pc", (0.52, 0.52, 0.52, 0.52, 0.52), 0.999)
    base = interleaved("fp32", (1.0, 1.0, 1.0, 1.0, 1.0), 1.0)
    chosen = advice([base, fastest, beaten, beats_it])
    assert chosen.recommended == "s8s8-qdq-pc" and chosen.int8_if_needed == "s8s8-qdq-pc", chosen.reason
