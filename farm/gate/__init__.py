"""``farm gate``: a release gate over a matrix report, alone or against a baseline report, under a policy.

policy.py says what is demanded, comparable.py when two runs may be compared, rules.py checks (budgets.py the
deployment budgets; checks.py what every rule yields), render.py writes the result for a terminal, for JUnit and for a
GitHub step summary.
"""

from __future__ import annotations

from pathlib import Path

from farm.gate.checks import Check
from farm.gate.policy import Policy
from farm.gate.render import render_junit, render_markdown, render_text
from farm.gate.rules import RULES, GateResult, evaluate
from farm.report import read_report


def run_gate(report: Path, *, baseline: Path | None = None, policy: Path | None = None) -> GateResult:
    new = read_report(report)
    old = None if baseline is None else read_report(baseline, "baseline")
    return evaluate(
        new,
        Policy.load(policy),
        baseline=old,
        report_name=str(report),
        baseline_name=None if baseline is None else str(baseline),
    )


__all__ = [
    "RULES",
    "Check",
    "GateResult",
    "Policy",
    "evaluate",
    "read_report",
    "render_junit",
    "render_markdown",
    "render_text",
    "run_gate",
]
