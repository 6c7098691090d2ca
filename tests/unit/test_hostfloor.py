"""The search tests' expectations follow the naive timings of the host they run on (tests/hostfloor.py), fed here with
both outcomes: int8 that pays by the default floor (a VNNI host) and int8 that does not (an AVX2-only Zen 1)."""

from __future__ import annotations

from typing import Any

import pytest

from farm.job.spec import DEFAULT_FLOOR
from tests.hostfloor import KEPT_SHARE, check_keep_fp32_is_earned, search_floor


def trial(index: int, speedup: float | None, *, within: bool, kept: bool = True, step: str = "") -> dict[str, Any]:
    return {"index": index, "speedup": speedup, "within_tolerance": within, "kept": kept, "step": step or "knob"}


def entry(verdict: str, naive: dict[str, float | None], *, mode: str = "native", **keys: Any) -> dict[str, Any]:
    return {
        "verdict": verdict,
        "mode": mode,
        "timed": mode != "emulated",
        "naive": {name: {"speedup": speed} for name, speed in naive.items()},
        "reason": keys.pop("reason", ""),
        "trials": keys.pop("trials", []),
        **keys,
    }


def test_a_host_where_int8_pays_searches_at_the_default_floor_alone() -> None:
    vnni = entry("tuned", {"s8s8-qdq": 2.9, "u8s8-qdq": 3.1})
    assert search_floor([vnni]) is None
    # An emulated target is untimed: its verdict never asks for a second search.
    emulated = entry("keep-fp32", {"u8s8-qdq": None}, mode="emulated")
    assert search_floor([vnni, emulated]) is None


def test_a_host_where_int8_does_not_pay_searches_again_below_its_naive_speedup() -> None:
    zen1 = entry("keep-fp32", {"s8s8-qdq": 0.91, "u8s8-qdq": 0.96, "u8u8-qdq": None})
    floor = search_floor([zen1])
    assert floor is not None and floor == pytest.approx(KEPT_SHARE * 0.96, abs=1e-3) and floor < 0.96
    # Of several timed targets, the slowest sets the floor, and it never rises above the default.
    fast = entry("tuned", {"u8s8-qdq": 9.0})
    assert search_floor([fast, zen1]) == floor
    assert search_floor([entry("keep-fp32", {"u8s8-qdq": 9.0})]) == DEFAULT_FLOOR


def test_keep_fp32_is_earned_only_when_the_search_s_own_timings_show_it() -> None:
    claim = f"nothing within tolerance beats fp32 by {DEFAULT_FLOOR:g}x"
    start = f"u8s8-qdq: the start is 0.96x fp32's speed, below the floor {DEFAULT_FLOOR:g}x"
    earned = entry(
        "keep-fp32",
        {"u8s8-qdq": 0.96},
        reason=f"{claim} ({start}); best trade-off: trial 0",
        trials=[trial(0, 0.96, within=False, step="start"), trial(1, 1.5, within=True, kept=False)],
    )
    check_keep_fp32_is_earned(earned, DEFAULT_FLOOR)
    # The start's own timing decides whether the search stops at it, not the naive variant's before it: a start
    # timed above the floor (noise under load) is searched on, and the budget may end it.
    searched = {
        **earned,
        "reason": f"{claim} (the trial budget (3) is spent); best trade-off: trial 0",
        "trials": [trial(0, 1.24, within=False, step="start"), trial(1, None, within=False, kept=False)],
    }
    check_keep_fp32_is_earned(searched, DEFAULT_FLOOR)

    kept_fast = {**earned, "trials": [trial(0, 0.96, within=False, step="start"), trial(1, 1.5, within=True)]}
    with pytest.raises(AssertionError, match="kept the floor"):
        check_keep_fp32_is_earned(kept_fast, DEFAULT_FLOOR)
    with pytest.raises(AssertionError):
        check_keep_fp32_is_earned(earned, 1.2)  # the reason names another floor
    with pytest.raises(AssertionError):
        check_keep_fp32_is_earned({**earned, "reason": f"{claim} (budget spent)"}, DEFAULT_FLOOR)
    with pytest.raises(AssertionError):
        check_keep_fp32_is_earned({**earned, "verdict": "tuned"}, DEFAULT_FLOOR)
