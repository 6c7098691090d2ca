"""The gate's rules over one report and, optionally, a baseline: every check names its target, variant, rule and
both values, so a failed release says what broke without anyone opening the report."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from farm.gate.budgets import BUDGET_RULES, MEMORY_REGRESSION_RULE, budgets, memory_regressions
from farm.gate.checks import Check, CheckStatus, in_scope, not_compared, variant_check
from farm.gate.comparable import accuracy_difference, latency_difference, target_timing_difference
from farm.gate.policy import FROM_TOLERANCE, Limits, Policy, Severity
from farm.job.recommend import recommend, speed_evidence
from farm.job.types import Latency
from farm.report import _format as fmt
from farm.report.model import Report, TargetResult, Variant

# The share of pairs of timing rounds (one of each run) in which the new run must be slower to be beyond noise ...
NOISE_PAIRS = 0.9
# ... when both runs have at least this many rounds: the alternating rounds every speed claim needs (farm matrix's
# timing.rounds). A variant with fewer (adaptive timing stopped it early) must be slower in every pair.
PAIRED_ROUNDS = 10
# The target name of a check about the report as a whole.
ANY_TARGET = "(any target)"
# Every rule the gate knows, in the order it reports them (docs/contracts.md section 5).
RULES = (
    "target-runs",
    "recommended",
    "min-cosine",
    "min-top1",
    "min-accuracy",
    "min-metric",
    *BUDGET_RULES,
    "new-failure",
    "recommendation-change",
    "cosine-drop",
    "top1-drop",
    "accuracy-drop",
    "metric-drop",
    "latency-regression",
    MEMORY_REGRESSION_RULE,
)
RULE_ORDER = {rule: index for index, rule in enumerate(RULES)}


@dataclass(frozen=True, kw_only=True, slots=True)
class GateResult:
    report: str
    baseline: str | None
    policy: str
    checks: tuple[Check, ...]

    def having(self, status: CheckStatus) -> list[Check]:
        return [c for c in self.checks if c.status == status]

    @property
    def shown(self) -> list[Check]:
        """The checks worth a line: every one that did not simply pass."""
        return [c for c in self.checks if c.status != "passed"]

    @property
    def passed(self) -> bool:
        return not self.having("failed")


def evaluate(
    report: Report,
    policy: Policy,
    *,
    baseline: Report | None = None,
    report_name: str = "report",
    baseline_name: str | None = None,
) -> GateResult:
    checks = list(_target_runs(report, policy))
    for target in report.targets:
        if target.status == "ok":
            checks += _minimums(report, target, policy)
            checks += budgets(target, in_scope(target, policy.variants), policy.limits_for(target.name))
    if baseline is not None:
        checks += _against_baseline(report, baseline, policy)
    checks.sort(key=lambda c: (RULE_ORDER[c.rule], c.target, c.variant or ""))
    return GateResult(report=report_name, baseline=baseline_name, policy=policy.source, checks=tuple(checks))


def _target_runs(report: Report, policy: Policy) -> Iterator[Check]:
    by_name = {t.name: t for t in report.targets}
    required = policy.required_targets or tuple(t.name for t in report.targets if t.status != "skipped")
    for name in required:
        target = by_name.get(name)
        if target is None:
            yield Check(
                rule="target-runs",
                target=name,
                variant=None,
                status="failed",
                message=f"{name}: target-runs: required, but not in the report (run farm matrix with it)",
            )
        elif target.status != "ok":
            yield Check(
                rule="target-runs",
                target=name,
                variant=None,
                status="failed",
                message=f"{name}: target-runs: {target.status}, required ok: {fmt.target_summary(target)}",
            )
        else:
            yield Check(rule="target-runs", target=name, variant=None, status="passed", message=f"{name}: ran ok")
    if not any(t.status == "ok" for t in report.targets):
        # Nothing evaluated is nothing to release on, whatever the other rules (which then have nothing to check).
        skipped = ", ".join(f"{t.name} ({t.status})" for t in report.targets) or "no target at all"
        yield Check(
            rule="target-runs",
            target=ANY_TARGET,
            variant=None,
            status="failed",
            message=f"target-runs: no target ran ok: {skipped}",
        )


def _minimums(report: Report, target: TargetResult, policy: Policy) -> Iterator[Check]:
    limits = policy.limits_for(target.name)
    if policy.variants == "recommended":
        yield Check(
            rule="recommended",
            target=target.name,
            variant=None,
            status="passed" if target.recommended else "failed",
            message=f"{target.name}: recommended: "
            + (
                f"recommends {target.recommended}"
                if target.recommended
                else f"no variant recommended ({target.recommendation_reason or 'none held the tolerance'})"
            ),
        )
    for variant in in_scope(target, policy.variants):
        accuracy = variant.accuracy
        if accuracy is None:
            continue
        judged_by_metric = report.tolerance.metric is not None
        floors = (
            (
                "min-cosine",
                "cosine",
                accuracy.cosine,
                _floor(limits.min_cosine, report.tolerance.cosine, judged_by_metric),
            ),
            (
                "min-top1",
                "top-1 agreement",
                accuracy.top1_agreement,
                _floor(limits.min_top1, report.tolerance.top1_agreement, judged_by_metric),
            ),
            ("min-accuracy", "labelled accuracy", accuracy.accuracy, limits.min_accuracy),
        )
        for rule, what, value, floor in floors:
            if floor is None:
                continue
            if value is None:
                if rule == "min-accuracy":
                    yield variant_check(rule, target, variant, "not-compared", f"{what}: not measured (no --labels)")
                continue
            ok = value >= floor
            yield variant_check(
                rule,
                target,
                variant,
                "passed" if ok else "failed",
                f"{what} {value:.4f} {'≥' if ok else '<'} minimum {floor:.4f}",
            )
        scores = {} if accuracy.metric is None else accuracy.metric.scores
        for score, floor in limits.min_metric.items():
            if score not in scores:
                yield variant_check(
                    "min-metric",
                    target,
                    variant,
                    "failed",
                    f"metric score {score!r}: not reported (the metric returned {sorted(scores)})",
                )
                continue
            ok = scores[score] >= floor
            yield variant_check(
                "min-metric",
                target,
                variant,
                "passed" if ok else "failed",
                f"metric {score} {scores[score]:.4f} {'≥' if ok else '<'} minimum {floor:.4f}",
            )


def _rule_changed(old: TargetResult, new: TargetResult, old_farm: str, new_farm: str) -> str:
    """The clause that says a changed recommendation is farm's rule changing, not the model or the target: the
    baseline was written by a farm before speed evidence (issue 19: it recommended int8 on emulated targets on
    accuracy alone), and today's rule, applied to the baseline's own results, recommends what the new report does.

    Empty otherwise. The report does not keep whether a target risks saturation, which only decides between int8
    variants tied on speed, so the rule is applied both ways and must agree.
    """
    if old.speed_evidence is not None or new.speed_evidence is None:
        return ""
    evidence = speed_evidence(old.variants, old.estimate)
    claim_floor = None if old.estimate is None else old.estimate.error_p90
    picks = {
        recommend(
            old.variants, evidence=evidence, saturation_risk=risk, conv_share=None, claim_floor=claim_floor
        ).recommended
        for risk in (False, True)
    }
    if picks != {new.recommended}:
        return ""
    return (
        f"; farm's rule changed, not the results: the baseline (farm {old_farm}) predates speed evidence, and by "
        f"this farm's rule (farm {new_farm}) the baseline's own results recommend {new.recommended} too"
        + ("" if evidence != "none" else f" (speed unknown on {old.name}, so the baseline)")
        + "; a baseline written by this farm clears it"
    )


def _floor(limit: float | Literal["tolerance"] | None, tolerance: float, judged_by_metric: bool) -> float | None:
    """A minimum given in the policy, else the report's own tolerance, except when --metric made the verdicts: then
    cosine may be below the tolerance in a variant the metric passed, and only the policy's own numbers apply."""
    if limit == FROM_TOLERANCE:
        return None if judged_by_metric else tolerance
    return limit


def _against_baseline(report: Report, baseline: Report, policy: Policy) -> Iterator[Check]:
    latency_reason = latency_difference(report, baseline)
    accuracy_reason = accuracy_difference(report, baseline)
    now = {t.name: t for t in report.targets}
    for old in baseline.targets:
        new = now.get(old.name)
        if new is None or (new.status == "skipped" and old.status != "skipped"):
            if old.status == "ok":
                # What the baseline checked and this run does not is a release that lost a target.
                why = "is not in the report" if new is None else f"was skipped ({new.reason})"
                yield Check(
                    rule="new-failure",
                    target=old.name,
                    variant=None,
                    status=_SEVERITY[policy.new_failure],
                    message=f"{old.name}: new-failure: ran ok in the baseline, {why}",
                )
            continue
        picked = None if report.run is None else report.run.settings.variants
        yield from _new_failures(new, old, policy.new_failure, picked)
        if picked is not None and old.recommended not in (None, *picked) and old.status == "ok":
            yield not_compared(
                "recommendation-change",
                old.name,
                "recommendation",
                f"the baseline recommends {old.recommended}, which this run's --variant did not name",
            )
        elif old.recommended != new.recommended and old.status == "ok" and new.status == "ok":
            yield Check(
                rule="recommendation-change",
                target=old.name,
                variant=None,
                status=_SEVERITY[policy.recommendation_change],
                message=f"{old.name}: recommendation-change: recommends {new.recommended} (baseline {old.recommended})"
                + _rule_changed(old, new, baseline.farm_version, report.farm_version),
            )
        if new.status != "ok" or old.status != "ok":
            continue
        limits = policy.limits_for(old.name)
        pairs = [(v, new.variant(v.name)) for v in in_scope(old, policy.compare)]
        compared = [(o, n) for o, n in pairs if n is not None and n.status == "ok"]
        if accuracy_reason:
            yield not_compared("cosine-drop", old.name, "accuracy", accuracy_reason)
        else:
            for o, n in compared:
                yield from _drops(new, o, n, limits)
        if limits.max_memory_regression is not None:
            yield from memory_regressions(report, baseline, new, old, compared, limits.max_memory_regression)
        timing_reason = latency_reason or target_timing_difference(new, old)
        if limits.max_latency_regression is None:
            continue
        if timing_reason:
            yield not_compared("latency-regression", old.name, "latency", timing_reason)
            continue
        context = _context(report, baseline, old, new)
        for o, n in compared:
            check = _latency(new, o, n, limits.max_latency_regression, limits.latency_noise_ms, context)
            if check is not None:
                yield check


def _new_failures(
    new: TargetResult, old: TargetResult, severity: Severity, picked: tuple[str, ...] | None
) -> Iterator[Check]:
    """``picked``: the variants `farm matrix --variant` limited this run to (None: all); one it left out is not
    compared rather than failed, since the run never tried it."""
    if old.status == "ok" and new.status == "failed":
        yield Check(
            rule="new-failure",
            target=old.name,
            variant=None,
            status=_SEVERITY[severity],
            message=f"{old.name}: new-failure: failed ({fmt.target_summary(new)}), ok in the baseline",
        )
        return
    if new.status != "ok":
        return
    for o in old.variants:
        n = new.variant(o.name)
        if o.status != "ok" or (n is not None and n.status == "ok"):
            continue
        if n is None and picked is not None and o.name not in picked:
            yield Check(
                rule="new-failure",
                target=new.name,
                variant=o.name,
                status="not-compared",
                message=f"{new.name} / {o.name}: new-failure: not compared: this run's --variant did not name it",
            )
        elif n is None:
            yield Check(
                rule="new-failure",
                target=new.name,
                variant=o.name,
                status=_SEVERITY[severity],
                message=f"{new.name} / {o.name}: new-failure: ran ok in the baseline, not in this run",
            )
        else:
            why = "failed" if n.status == "failed" else "was skipped"
            yield variant_check(
                "new-failure",
                new,
                n,
                _SEVERITY[severity],
                f"{why} ({fmt.one_line(n.error or 'no reason given')}), ok in the baseline",
            )


def _drops(target: TargetResult, old: Variant, new: Variant, limits: Limits) -> Iterator[Check]:
    a, b = new.accuracy, old.accuracy
    if a is None or b is None:
        return
    for rule, what, now, before, limit in (
        ("cosine-drop", "cosine", a.cosine, b.cosine, limits.max_cosine_drop),
        ("top1-drop", "top-1 agreement", a.top1_agreement, b.top1_agreement, limits.max_top1_drop),
        ("accuracy-drop", "labelled accuracy", a.accuracy, b.accuracy, limits.max_accuracy_drop),
    ):
        if limit is None or now is None or before is None:
            continue
        yield _drop(rule, target, new, what, now, before, limit)
    if limits.max_metric_drop is not None and a.metric is not None and b.metric is not None:
        for score, before in sorted(b.metric.scores.items()):
            now = a.metric.scores.get(score)
            if now is not None:
                yield _drop("metric-drop", target, new, f"metric {score}", now, before, limits.max_metric_drop)


def _drop(
    rule: str, target: TargetResult, variant: Variant, what: str, now: float, before: float, limit: float
) -> Check:
    drop = before - now
    ok = drop <= limit + 1e-12
    return variant_check(
        rule,
        target,
        variant,
        "passed" if ok else "failed",
        f"{what} {now:.4f} vs baseline {before:.4f} (drop {drop:+.4f}, limit {limit:.4f})",
    )


def _latency(
    target: TargetResult, old: Variant, new: Variant, limit: float, floor: float | None, context: str
) -> Check | None:
    """``floor``: latency_noise_ms, the slowdown in ms that is the noise between runs (None: none)."""
    a, b = new.latency_ms, old.latency_ms
    if a is None or b is None or b.p50 <= 0:
        return None
    change = a.p50 / b.p50 - 1.0
    slower = a.p50 - b.p50
    beyond, noise = beyond_noise(a, b)
    between_runs = floor is not None and slower <= floor
    if change <= limit:
        verdict = f"within limit: {noise}"
    elif between_runs:
        verdict = (
            f"within the noise between runs: {slower * 1000:.1f} us slower, not more than latency_noise_ms = {floor:g}"
        )
    else:
        verdict = f"{'beyond' if beyond else 'within'} noise: {noise}"
    return variant_check(
        "latency-regression",
        target,
        new,
        "failed" if change > limit and beyond and not between_runs else "passed",
        f"p50 {fmt.milliseconds(a.p50)} ms vs baseline {fmt.milliseconds(b.p50)} ms ({change:+.1%}, limit "
        f"+{limit:.0%}, {verdict}){context}",
    )


def beyond_noise(new: Latency, old: Latency) -> tuple[bool, str]:
    """Whether ``new`` is slower than ``old`` beyond noise, and which rule said so (docs/contracts.md section 5).

    With ``PAIRED_ROUNDS`` rounds or more on both sides, the pairs test: in at least 9 of 10 pairs (a round of this
    run, a round of the baseline) this run is slower. Two runs of the same graph land near 1 in 2; one outlying round
    can move the share by 1 in 10 at most. With fewer rounds on either side (adaptive timing stopped the variant
    early, or a run with fewer iterations), a tenth of the pairs is no longer one round's worth, so every round must be
    slower: this run's fastest round slower than the baseline's slowest. Without rounds: the p50 above the baseline's
    p90.
    """
    if not new.rounds or not old.rounds:
        p90 = fmt.milliseconds(old.p90)
        return new.p50 > old.p90, f"no timing rounds to pair, so p50 against the baseline p90 {p90} ms"
    if len(new.rounds) >= PAIRED_ROUNDS and len(old.rounds) >= PAIRED_ROUNDS:
        pairs = len(new.rounds) * len(old.rounds)
        slower = sum(1 for x in new.rounds for y in old.rounds if x > y)
        return slower >= NOISE_PAIRS * pairs, f"{slower} of {pairs} pairs of timing rounds slower"
    fastest, slowest = min(new.rounds), max(old.rounds)
    rounds = f"{_rounds(new)} here, {_rounds(old)} in the baseline"
    return fastest > slowest, (
        f"fewer than {PAIRED_ROUNDS} timing rounds ({rounds}), so every round must be slower: fastest round "
        f"{fmt.milliseconds(fastest)} ms vs the baseline's slowest {fmt.milliseconds(slowest)} ms"
    )


def _rounds(latency: Latency) -> str:
    count = len(latency.rounds)
    stopped = "" if latency.stopped is None else f", stopped early: {fmt.STOP_TEXT[latency.stopped]}"
    return f"{count} round{'s' if count != 1 else ''}{stopped}"


def _context(report: Report, baseline: Report, old: TargetResult, new: TargetResult) -> str:
    """What differs between the runs without keeping them apart: the image (a runtime upgrade is what a gate is for)
    and the timing mode (adaptive against fixed rounds: ``beyond_noise`` holds for either)."""
    parts = []
    if old.image and new.image and old.image != new.image:
        parts.append(f"image {old.image} → {new.image}")
    modes = tuple(None if r.run is None else r.run.settings.timing_mode for r in (report, baseline))
    if None not in modes and modes[0] != modes[1]:
        parts.append(f"timing {modes[0]} here, {modes[1]} in the baseline")
    return "".join(f"; {part}" for part in parts)


_SEVERITY: dict[Severity, CheckStatus] = {"fail": "failed", "warn": "warned", "allow": "passed"}
