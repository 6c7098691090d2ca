"""``farm gate``: a release gate over a matrix report, alone or against a baseline report, under a policy.

policy.py says what is demanded, comparable.py when two runs may be compared, rules.py checks (budgets.py the
deployment budgets; checks.py what every rule yields), render.py writes the result for a terminal, for JUnit and for a
GitHub step summary.
"""

from __future__ import annotations

from pathlib import Path

from farm.errors import BadInput
from farm.gate.checks import Check
from farm.gate.policy import Policy
from farm.gate.render import render_junit, render_markdown, render_text
from farm.gate.rules import RULES, GateResult, evaluate
from farm.report import REPORT_FILE, InvalidReport, Report, load_report


def read_report(path: Path, what: str = "report") -> Report:
    """A report from FILE or from DIR/report.json (the folder farm matrix --out wrote)."""
    file = path / REPORT_FILE if path.is_dir() else path
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(
            f"reading the {what} {file} failed because {exc.strerror or exc}",
            fix="pass the report.json farm matrix wrote, or the folder that holds it",
        ) from None
    try:
        return load_report(text)
    except InvalidReport as exc:
        raise BadInput(f"reading the {what} {file} failed because at {exc.path}: {exc.problem}", fix=exc.fix) from None


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
