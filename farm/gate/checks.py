"""What every gate rule yields: a check that names its target, variant, rule and both values; and which variants a
scope of the policy selects. Shared by rules.py and budgets.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from farm.gate.policy import Scope
from farm.report.model import TargetResult, Variant

CheckStatus = Literal["passed", "failed", "warned", "not-compared"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Check:
    rule: str
    target: str
    variant: str | None
    status: CheckStatus
    message: str


def variant_check(rule: str, target: TargetResult, variant: Variant, status: CheckStatus, detail: str) -> Check:
    return Check(
        rule=rule,
        target=target.name,
        variant=variant.name,
        status=status,
        message=f"{target.name} / {variant.name}: {rule}: {detail}",
    )


def not_compared(rule: str, target: str, what: str, reason: str) -> Check:
    """A rule that could not compare a whole target's figures, and why."""
    return Check(
        rule=rule,
        target=target,
        variant=None,
        status="not-compared",
        message=f"{target}: {what} not compared: {reason}",
    )


def in_scope(target: TargetResult, scope: Scope) -> list[Variant]:
    if scope == "recommended":
        return [v for v in target.variants if v.name == target.recommended]
    if scope == "usable":
        return [v for v in target.variants if v.status == "ok" and v.within_tolerance is not False]
    return [v for v in target.variants if v.status == "ok"]
