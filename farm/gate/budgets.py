"""The gate's deployment budgets (issue 20): each variant's peak memory, session creation and first run against
gate.toml's limits, and its peak memory against the baseline's. The figures are the variant's ``profile``; a report
without one (an older farm, ``--no-profile``) still gates: each budget says "not measured" (not compared), which
does not fail the gate."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from farm.gate.checks import Check, not_compared, variant_check
from farm.gate.comparable import memory_difference, target_memory_difference
from farm.gate.policy import Limits
from farm.job.report import Profile
from farm.report import _format as fmt
from farm.report.model import Report, TargetResult, Variant

PEAK_RULE = "max-peak-rss"
CREATE_RULE = "max-session-create"
FIRST_RUN_RULE = "max-first-run"
MEMORY_REGRESSION_RULE = "memory-regression"
BUDGET_RULES = (PEAK_RULE, CREATE_RULE, FIRST_RUN_RULE)
# Timings that are measurements of the host's CPU (none under emulation, which has no times; older reports' QEMU
# timings are not measurements either).
TIMED = ("measured", "masked")
# Growth below this is the allocator's and the page granularity's, not the model's: a small model's few MiB would
# otherwise cross 10 % on noise.
MEMORY_NOISE_MIB = 1.0
_PROFILE_FAILED = (
    "not measured: this variant's profile failed while the others' were measured (the target's warnings say why, "
    "e.g. killed at its memory limit); raise the target's memory or budget_s in targets.toml and run again"
)
_NO_PROFILE = "not measured (no profile: the report is from an older farm or farm matrix --no-profile)"


@dataclass(frozen=True, kw_only=True, slots=True)
class _Figure:
    what: str
    value: float | None
    unit: str
    # Why there is no value, when there is none.
    missing: str = "not measured"

    def text(self, value: float) -> str:
        return f"{value:.1f} MiB" if self.unit == "MiB" else f"{fmt.milliseconds(value)} ms"


def memory_word(profile: Profile) -> str:
    """What the memory figure is: a process's peak, or under QEMU the guest's own heap."""
    return "guest heap" if profile.memory == "guest-heap" else "peak memory"


def _figure(rule: str, profile: Profile | None) -> _Figure:
    unit = "MiB" if rule == PEAK_RULE else "ms"
    what = {PEAK_RULE: "peak memory", CREATE_RULE: "session creation", FIRST_RUN_RULE: "first run"}[rule]
    if profile is None:
        return _Figure(what=what, value=None, unit=unit, missing=_NO_PROFILE)
    if rule == PEAK_RULE:
        return _Figure(what=memory_word(profile), value=profile.peak_rss_mib, unit=unit)
    if profile.timing not in TIMED:
        why = "emulated under QEMU: no times" if profile.memory == "guest-heap" else f"timing {profile.timing}"
        return _Figure(what=what, value=None, unit=unit, missing=f"not measured ({why})")
    value = profile.session_create_ms if rule == CREATE_RULE else profile.first_run_ms
    return _Figure(what=what, value=value, unit="ms")


def budgets(target: TargetResult, variants: Sequence[Variant], limits: Limits) -> Iterator[Check]:
    """The budgets gate.toml sets, on the variants the minimums apply to (the policy's ``variants``)."""
    for rule, key, limit in (
        (PEAK_RULE, "max_peak_rss_mib", limits.max_peak_rss_mib),
        (CREATE_RULE, "max_session_create_ms", limits.max_session_create_ms),
        (FIRST_RUN_RULE, "max_first_run_ms", limits.max_first_run_ms),
    ):
        if limit is None:
            continue
        for variant in variants:
            yield _budget(rule, key, limit, target, variant)


def _budget(rule: str, key: str, limit: float, target: TargetResult, variant: Variant) -> Check:
    if variant.profile is None and any(v.profile is not None for v in target.variants):
        # The run profiled, but this variant's profile process failed (killed for memory, timed out): the worst
        # case may hide there, so a budget cannot pass on it.
        return variant_check(rule, target, variant, "failed", _PROFILE_FAILED)
    figure = _figure(rule, variant.profile)
    if figure.value is None:
        return variant_check(rule, target, variant, "not-compared", f"{figure.what}: {figure.missing}")
    ok = figure.value <= limit
    verdict = "within" if ok else "is over"
    return variant_check(
        rule,
        target,
        variant,
        "passed" if ok else "failed",
        f"{figure.what} {figure.text(figure.value)} {verdict} {key} = {limit:g}",
    )


def memory_regressions(
    report: Report,
    baseline: Report,
    new: TargetResult,
    old: TargetResult,
    pairs: Sequence[tuple[Variant, Variant]],
    limit: float,
) -> Iterator[Check]:
    """Peak memory of each compared variant (baseline's, this run's) against the baseline's, like with like."""
    reason = memory_difference(report, baseline) or target_memory_difference(new, old)
    measured = [(o, n) for o, n in pairs if _peak(o) is not None and _peak(n) is not None]
    if not reason and pairs and not measured:
        there, here = (any(_peak(v) is not None for v in side) for side in zip(*pairs, strict=True))
        where = "in the baseline" if here else "here" if there else "in either run"
        reason = f"not measured {where} (no profile)"
    if reason:
        yield not_compared(MEMORY_REGRESSION_RULE, new.name, "memory", reason)
        return
    for o, n in pairs:
        yield _regression(new, o, n, limit)


def _peak(variant: Variant) -> float | None:
    return None if variant.profile is None else variant.profile.peak_rss_mib


def _regression(target: TargetResult, old: Variant, new: Variant, limit: float) -> Check:
    a, b = new.profile, old.profile
    if a is None or b is None or a.peak_rss_mib is None or b.peak_rss_mib is None:
        where = "here" if a is None or a.peak_rss_mib is None else "in the baseline"
        return variant_check(MEMORY_REGRESSION_RULE, target, new, "not-compared", f"peak memory: not measured {where}")
    unlike = [
        f"{what} {x} here but {y} in the baseline"
        for what, x, y in (
            ("memory basis", a.memory, b.memory),
            ("session threads", a.session_threads, b.session_threads),
        )
        if x != y
    ]
    if unlike:
        return variant_check(
            MEMORY_REGRESSION_RULE, target, new, "not-compared", "peak memory not compared: " + ", ".join(unlike)
        )
    now, before = a.peak_rss_mib, b.peak_rss_mib
    growth = now - before
    change = growth / before if before > 0 else (0.0 if growth <= 0 else float("inf"))
    over = change > limit + 1e-12
    failed = over and growth > MEMORY_NOISE_MIB
    verdict = (
        "within limit"
        if not over
        else ("over the limit" if failed else f"within noise: under {MEMORY_NOISE_MIB:g} MiB")
    )
    return variant_check(
        MEMORY_REGRESSION_RULE,
        target,
        new,
        "failed" if failed else "passed",
        f"{memory_word(a)} {now:.1f} MiB vs baseline {before:.1f} MiB ({change:+.1%}, limit +{limit:.0%}, {verdict})",
    )
