"""The cross-target report: its model (``farm.report/1``), its schema, and one renderer per output format.

Every renderer is a pure function ``Report -> str`` whose text ends in one newline, ready to write as is.
"""

from __future__ import annotations

from collections.abc import Callable

from farm.errors import BadInput
from farm.job.types import Accuracy, Latency
from farm.report.html import render_html
from farm.report.junit import render_junit
from farm.report.markdown import render_markdown
from farm.report.model import (
    REPORT_FILE,
    DataSummary,
    ModelSummary,
    Report,
    Runtime,
    TargetResult,
    TensorSummary,
    Tolerance,
    Variant,
    load_report,
    read_report,
    report_json,
)
from farm.report.schema import InvalidReport, validate, validate_target
from farm.report.table import render_table

RENDERERS: dict[str, Callable[[Report], str]] = {
    "table": render_table,
    "json": report_json,
    "markdown": render_markdown,
    "html": render_html,
    "junit": render_junit,
}
FORMATS = tuple(RENDERERS)


def render(report: Report, fmt: str) -> str:
    """The report as text in ``fmt``, one of FORMATS."""
    try:
        renderer = RENDERERS[fmt]
    except KeyError:
        raise BadInput(
            f"rendering the report failed because {fmt!r} is not a report format",
            fix=f"use one of: {', '.join(FORMATS)}",
        ) from None
    return renderer(report)


__all__ = [
    "FORMATS",
    "REPORT_FILE",
    "Accuracy",
    "DataSummary",
    "InvalidReport",
    "Latency",
    "ModelSummary",
    "Report",
    "Runtime",
    "TargetResult",
    "TensorSummary",
    "Tolerance",
    "Variant",
    "load_report",
    "read_report",
    "render",
    "report_json",
    "validate",
    "validate_target",
]
