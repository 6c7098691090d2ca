"""farm.report.estimatecheck: the figures scripts/bench-estimate prints and records in trust.json."""

from __future__ import annotations

import pytest

from farm.job.report import InstructionCounts, TargetResult, Variant
from farm.job.types import Latency
from farm.report.estimatecheck import ModelCheck, Pair, pairs, spearman, summarize


def test_spearman_ranks_ties_by_their_mean_and_flat_sides_give_zero() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) == 0.0
    assert 0.0 < spearman([1, 2, 3, 4], [1, 1, 2, 3]) < 1.0


def pair(name: str, measured: float, estimated: float, count: float = 1.0, qemu: float = 1.0) -> Pair:
    return Pair(variant=name, measured=measured, estimated=estimated, count=count, qemu_time=qemu)


def model(name: str, *figures: tuple[float, float, float, float]) -> ModelCheck:
    return ModelCheck(model=name, pairs=tuple(pair(f"v{i}", *f) for i, f in enumerate(figures)))


def test_a_summary_is_trusted_only_when_every_goal_holds_and_it_beats_both_naive_predictors() -> None:
    good = [model(f"m{i}", (0.5, 0.55, 2.0, 3.0), (0.9, 0.85, 1.5, 2.0), (1.2, 1.1, 1.0, 1.0)) for i in range(5)]
    summary = summarize(good)
    assert (summary.models, summary.variants, summary.sign_agreement) == (5, 15, 1.0)
    assert summary.spearman == pytest.approx(1.0) and summary.naive_count == pytest.approx(-1.0)
    assert summary.median_error == pytest.approx(0.0833, abs=1e-3) and summary.trusted
    assert summary.line().startswith("estimate vs native: spearman 1.00 over 15 variants on 5 models; sign agreement")
    assert not summarize(good[:4]).trusted  # fewer than 5 models
    # The same ranking, but every estimate on the wrong side of fp32: the signs fail the goal.
    flipped = [model(f"m{i}", (0.5, 1.1, 2.0, 3.0), (0.9, 1.2, 1.5, 2.0), (1.2, 1.3, 1.0, 1.0)) for i in range(5)]
    assert summarize(flipped).sign_agreement == pytest.approx(1 / 3) and not summarize(flipped).trusted
    # A naive count that ranks as well as the estimate leaves it untrusted.
    tied = [model(f"m{i}", (0.5, 0.55, 0.5, 3.0), (0.9, 0.85, 0.9, 2.0), (1.2, 1.1, 1.2, 1.0)) for i in range(5)]
    assert not summarize(tied).trusted
    with pytest.raises(ValueError, match="no model gave two or more variants"):
        summarize([model("m", (1.0, 1.0, 1.0, 1.0))])


def variant(name: str, ms: float, *, timing: str = "measured", total: int = 0, wall: float = 0.0) -> Variant:
    counts = InstructionCounts(runs=3, per_run={"scalar": total}, spread=0.0, qemu_wall_ms=wall) if total else None
    latency = Latency(p50=ms, p90=ms, p99=ms)
    return Variant(name=name, status="ok", latency_ms=latency, timing=timing, instructions=counts)  # type: ignore[arg-type]


def target(name: str, *variants: Variant) -> TargetResult:
    return TargetResult(name=name, platform="linux/amd64", mode="native", status="ok", variants=variants)


def test_pairs_compare_speedups_over_each_targets_own_fp32() -> None:
    timed = target("t", variant("fp32", 10.0), variant("u8u8-qdq", 5.0), variant("only-timed", 1.0))
    estimated = target(
        "e",
        variant("fp32", 4.0, timing="estimated", total=1000, wall=300.0),
        variant("u8u8-qdq", 1.0, timing="estimated", total=500, wall=100.0),
    )
    assert pairs(timed, estimated) == (pair("u8u8-qdq", 2.0, 4.0, 2.0, 3.0),)
    untimed = target("e", variant("fp32", 4.0, timing="emulated"), variant("u8u8-qdq", 1.0, timing="emulated"))
    assert pairs(timed, untimed) == ()
