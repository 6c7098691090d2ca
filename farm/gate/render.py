"""The gate's result as terminal text, JUnit XML (one testcase per rule and target) and Markdown for
``$GITHUB_STEP_SUMMARY``."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict

from farm.gate.checks import Check
from farm.gate.rules import RULE_ORDER, GateResult
from farm.report import _format as fmt
from farm.report.junit import count, document

# Free text from a report as inert Markdown (farm/report/_format.py).
_text = fmt.markdown_text
_MARK = {"failed": "FAIL", "warned": "WARN", "not-compared": "not compared", "passed": "ok"}


def render_text(result: GateResult) -> str:
    lines = [
        f"farm gate: {result.report}"
        + (f" against {result.baseline}" if result.baseline else "")
        + f" ({result.policy})"
    ]
    for status in ("failed", "warned", "not-compared"):
        lines += [f"  {_MARK[status]}: {fmt.one_line(c.message)}" for c in result.having(status)]
    lines.append(_counts(result) + (": passed" if result.passed else ": FAILED"))
    return "\n".join(lines) + "\n"


def _counts(result: GateResult) -> str:
    return (
        f"{len(result.checks)} checks, {len(result.having('failed'))} failed, {len(result.having('warned'))} "
        f"warned, {len(result.having('not-compared'))} not compared"
    )


def _groups(result: GateResult) -> dict[tuple[str, str], list[Check]]:
    groups: dict[tuple[str, str], list[Check]] = defaultdict(list)
    for check in result.checks:
        groups[(check.rule, check.target)].append(check)
    return dict(sorted(groups.items(), key=lambda item: (item[0][1], RULE_ORDER[item[0][0]])))


def render_junit(result: GateResult) -> str:
    """One ``<testsuite>`` per target, one ``<testcase>`` per rule: failed when any of its checks failed, skipped
    when none could be compared; each check's message is in the case's text."""
    root = ET.Element("testsuites", name=f"farm gate {fmt.clean(result.report)}")
    suites: dict[str, ET.Element] = {}
    for (rule, target), checks in _groups(result).items():
        suite = suites.get(target)
        if suite is None:
            suite = suites[target] = ET.SubElement(root, "testsuite", name=f"gate {fmt.clean(target)}")
        case = ET.SubElement(suite, "testcase", classname=f"farm.gate.{fmt.clean(target)}", name=rule)
        text = "\n".join(fmt.clean(c.message) for c in checks)
        failed = [c for c in checks if c.status == "failed"]
        if failed:
            element = ET.SubElement(
                case, "failure", type=rule, message=fmt.one_line("; ".join(c.message for c in failed))[:1000]
            )
            element.text = text
        elif all(c.status == "not-compared" for c in checks):
            ET.SubElement(case, "skipped", message=fmt.one_line(checks[0].message)[:1000])
        else:
            ET.SubElement(case, "system-out").text = text
    for suite in suites.values():
        count(suite)
    return document(root)


def render_markdown(result: GateResult) -> str:
    verdict = "passed" if result.passed else "**failed**"
    lines = [
        f"## farm gate: {verdict}",
        "",
        f"`{_code(result.report)}`"
        + (f" against `{_code(result.baseline)}`" if result.baseline else "")
        + f", {_text(result.policy)}. {_counts(result)}.",
        "",
    ]
    shown = result.shown
    if shown:
        lines += ["| | rule | target | variant | detail |", "|---|---|---|---|---|"]
        lines += [
            f"| {_MARK[c.status]} | {c.rule} | {_text(c.target)} | {_text(c.variant or '')} | {_text(c.message)} |"
            for c in shown
        ]
    else:
        lines.append("Every rule held.")
    return "\n".join(lines) + "\n"


def _code(text: str) -> str:
    return fmt.one_line(text).replace("`", "'")
