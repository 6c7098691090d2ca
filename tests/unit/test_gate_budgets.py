"""farm gate's deployment budgets (issue 20): peak memory and start-up limits per variant, the memory regression
against the baseline, reports without a profile, and the policy keys."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from farm.gate import Policy, render_junit, render_text
from farm.gate.budgets import MEMORY_NOISE_MIB
from farm.gate.rules import GateResult
from farm.gate.trend import MEMORY_NOT_MEASURED, collect, render_trend_html, trend_data
from tests.unit.report_sample import sample_report_dict
from tests.unit.test_gate import VNNI, entry, failed, gate, released

# x86-avx2 runs emulated in the sample and recommends this variant; the VNNI target recommends optimized.
AVX2_PICK = "u8s8-qdq+x64quantprecision"


def profiled(
    data: dict[str, Any],
    target: str,
    variant: str,
    *,
    peak: float | None = 41.2,
    create: float | None = 12.0,
    first: float | None = 3.0,
    threads: int = 2,
) -> None:
    """Give a variant the profile the job writes: a process's figures natively, the guest's heap (no times) under
    emulation, as the target's mode says."""
    emulated = entry(data, target)["mode"] == "emulated"
    entry(data, target, variant)["profile"] = {
        "memory": "guest-heap" if emulated else "process",
        "peak_rss_mib": peak,
        "session_threads": threads,
        "timing": "none" if emulated else "measured",
    } | ({"rss_upper_bound_mib": 180.0} if emulated else {"session_create_ms": create, "first_run_ms": first})


def profile_all(data: dict[str, Any], target: str, peak: float = 41.2) -> None:
    for variant in entry(data, target)["variants"]:
        if variant["status"] == "ok":
            profiled(data, target, variant["name"], peak=peak)


def messages(result: GateResult, rule: str, status: str) -> list[str]:
    return [c.message for c in result.checks if c.rule == rule and c.status == status]


def budget(**keys: Any) -> Policy:
    return Policy.from_dict(keys, "gate.toml")


def test_a_peak_memory_budget_names_target_variant_figure_and_limit() -> None:
    data = released()
    profiled(data, VNNI, "optimized")
    result = gate(data, policy=budget(max_peak_rss_mib=1))
    assert failed(result, "max-peak-rss") == [
        f"{VNNI} / optimized: max-peak-rss: peak memory 41.2 MiB is over max_peak_rss_mib = 1"
    ]
    assert not result.passed
    held = gate(data, policy=budget(max_peak_rss_mib=41.2))
    assert messages(held, "max-peak-rss", "passed") == [
        f"{VNNI} / optimized: max-peak-rss: peak memory 41.2 MiB within max_peak_rss_mib = 41.2"
    ]


def test_an_emulated_target_is_budgeted_by_its_guest_heap_and_has_no_times() -> None:
    data = released()
    profiled(data, "x86-avx2", AVX2_PICK, peak=3.1)
    result = gate(data, policy=budget(max_peak_rss_mib=1, max_session_create_ms=10))
    assert failed(result, "max-peak-rss") == [
        f"x86-avx2 / {AVX2_PICK}: max-peak-rss: guest heap 3.1 MiB is over max_peak_rss_mib = 1"
    ]
    assert (
        f"x86-avx2 / {AVX2_PICK}: max-session-create: session creation: not measured (emulated under QEMU: no times)"
        in (messages(result, "max-session-create", "not-compared"))
    )


def test_start_up_budgets_hold_the_measured_times() -> None:
    data = released()
    profiled(data, VNNI, "optimized", create=12.0, first=3.0)
    result = gate(data, policy=budget(max_session_create_ms=10, max_first_run_ms=5))
    assert failed(result, "max-session-create") == [
        f"{VNNI} / optimized: max-session-create: session creation 12.0 ms is over max_session_create_ms = 10"
    ]
    assert messages(result, "max-first-run", "passed") == [
        f"{VNNI} / optimized: max-first-run: first run 3.00 ms within max_first_run_ms = 5"
    ]


def test_budgets_follow_the_policy_variants_scope() -> None:
    data = released()
    profile_all(data, VNNI)
    recommended = gate(data, policy=budget(max_peak_rss_mib=1))
    assert [c.variant for c in recommended.having("failed") if c.rule == "max-peak-rss"] == ["optimized"]
    usable = gate(data, policy=budget(max_peak_rss_mib=1, variants="usable"))
    assert len(failed(usable, "max-peak-rss")) == 6  # every ok variant within tolerance; u8s8-dynamic failed


def test_a_per_target_budget_overrides_the_top_level_one(tmp_path: Path) -> None:
    data = released()
    profiled(data, VNNI, "optimized")
    profiled(data, "x86-avx2", AVX2_PICK, peak=3.1)
    policy_file = tmp_path / "gate.toml"
    policy_file.write_text(f'max_peak_rss_mib = 1\n[targets."{VNNI}"]\nmax_peak_rss_mib = 64\n')
    result = gate(data, policy=Policy.load(policy_file))
    assert [c.target for c in result.having("failed") if c.rule == "max-peak-rss"] == ["x86-avx2"]
    assert messages(result, "max-peak-rss", "passed") == [
        f"{VNNI} / optimized: max-peak-rss: peak memory 41.2 MiB within max_peak_rss_mib = 64"
    ]


def test_a_report_without_profile_gates_and_says_not_measured() -> None:
    data = released()
    result = gate(data, copy.deepcopy(data), budget(max_peak_rss_mib=1, max_first_run_ms=5))
    # Not measured is not a failure: the gate passes (exit 0), and each budget says why it checked nothing.
    assert result.passed, render_text(result)
    skipped = messages(result, "max-peak-rss", "not-compared")
    assert skipped[-1] == (
        f"{VNNI} / optimized: max-peak-rss: peak memory: not measured (no profile: the report is from an older farm "
        "or farm matrix --no-profile)"
    )
    assert len(skipped) == 3  # one per target that ran ok: its recommended variant
    assert messages(result, "memory-regression", "not-compared") == [
        f"{name}: memory not compared: not measured in either run (no profile)" for name in ("arm64", "x86-avx2", VNNI)
    ]
    text = render_text(result)
    assert "not compared: x86-avx2 / " in text and "not measured" in text
    assert "memory-regression" in render_junit(result)


def test_a_variant_whose_profile_failed_in_a_profiled_run_fails_its_budget() -> None:
    data = released()
    profile_all(data, VNNI)
    del entry(data, VNNI, "optimized")["profile"]  # its profile process was killed, the others measured
    result = gate(data, policy=budget(max_peak_rss_mib=100))
    [message] = failed(result, "max-peak-rss")
    assert message.startswith(f"{VNNI} / optimized: max-peak-rss: not measured: this variant's profile failed")


def test_a_memory_regression_beyond_ten_percent_fails_and_within_passes() -> None:
    old = released()
    profile_all(old, VNNI, peak=40.0)
    new = copy.deepcopy(old)
    profiled(new, VNNI, "u8s8-qdq", peak=44.5)
    result = gate(new, old)
    assert failed(result, "memory-regression") == [
        f"{VNNI} / u8s8-qdq: memory-regression: peak memory 44.5 MiB vs baseline 40.0 MiB (+11.2%, limit +10%, "
        "over the limit)"
    ]
    profiled(new, VNNI, "u8s8-qdq", peak=43.9)
    within = gate(new, old)
    assert not failed(within, "memory-regression")
    assert f"{VNNI} / u8s8-qdq: memory-regression: peak memory 43.9 MiB vs baseline 40.0 MiB (+9.7%, limit +10%, " in (
        "".join(messages(within, "memory-regression", "passed"))
    )
    # The share is the policy's, per target too.
    profiled(new, VNNI, "u8s8-qdq", peak=44.5)
    loose = Policy.from_dict({"targets": {VNNI: {"max_memory_regression": 0.2}}}, "gate.toml")
    assert not failed(gate(new, old, loose), "memory-regression")
    assert not [c for c in gate(new, old, budget(max_memory_regression=False)).checks if c.rule == "memory-regression"]


def test_growth_within_allocator_noise_passes_and_unlike_figures_are_not_compared() -> None:
    old = released()
    profile_all(old, VNNI, peak=2.0)
    new = copy.deepcopy(old)
    profiled(new, VNNI, "u8s8-qdq", peak=2.0 + MEMORY_NOISE_MIB / 2)
    assert not failed(gate(new, old), "memory-regression")
    profiled(new, VNNI, "u8s8-qdq", peak=80.0, threads=4)
    result = gate(new, old)
    assert not failed(result, "memory-regression")
    assert messages(result, "memory-regression", "not-compared") == [
        "arm64: memory not compared: not measured in either run (no profile)",
        "x86-avx2: memory not compared: not measured in either run (no profile)",
        f"{VNNI} / u8s8-qdq: memory-regression: peak memory not compared: session threads 4 here but 2 in the baseline",
    ]
    entry(new, VNNI)["mode"] = "masked"
    assert f"{VNNI}: memory not compared: ran masked here but native in the baseline" in messages(
        gate(new, old), "memory-regression", "not-compared"
    )


def test_memory_is_not_compared_across_architectures_and_a_baseline_without_profile_says_so() -> None:
    old = released()
    new = copy.deepcopy(old)
    profile_all(new, VNNI, peak=90.0)
    assert f"{VNNI}: memory not compared: not measured in the baseline (no profile)" in messages(
        gate(new, old), "memory-regression", "not-compared"
    )
    profile_all(old, VNNI, peak=40.0)
    new["run"]["host"]["arch"] = "aarch64"
    result = gate(new, old)
    assert not failed(result, "memory-regression")
    assert any(
        m.startswith(f"{VNNI}: memory not compared: runs differ in host architecture 'aarch64'")
        for m in messages(result, "memory-regression", "not-compared")
    )


def test_the_budgets_default_off_and_the_regression_share_to_ten_percent() -> None:
    limits = Policy().limits
    assert (limits.max_peak_rss_mib, limits.max_session_create_ms, limits.max_first_run_ms) == (None, None, None)
    assert limits.max_memory_regression == 0.10


def test_the_trend_shows_peak_memory_and_not_measured_where_absent(tmp_path: Path) -> None:
    for day, peak in ((1, None), (2, 41.2)):
        data = sample_report_dict(run=True)
        data["created"] = f"2026-12-0{day}T02:15:00Z"
        if peak is not None:
            profiled(data, VNNI, "optimized", peak=peak)
        (tmp_path / f"n{day}").mkdir()
        (tmp_path / f"n{day}" / "report.json").write_text(json.dumps(data))
    history = collect([tmp_path])
    data_ = trend_data(history, history.changes(Policy()))
    assert data_["targets"][VNNI]["variants"]["optimized"]["peak_rss_mib"] == [None, 41.2]
    assert data_["targets"][VNNI]["variants"]["optimized"]["memory"] == [None, "process"]
    page = render_trend_html(history, None)
    assert "trend memory" in page
    # No run measured the emulated targets' memory: said, not drawn.
    assert MEMORY_NOT_MEASURED in page
    only_old = collect([tmp_path / "n1"])
    assert render_trend_html(only_old, None).count(MEMORY_NOT_MEASURED) == len(only_old.target_names())
