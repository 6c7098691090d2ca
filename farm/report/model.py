"""The report as typed, immutable values (``farm.report/2``, docs/contracts.md section 2), as the controller reads
and writes it.

The classes are the job's (farm.job.report): one definition on both sides of the container boundary, written with
``farm.job.codec.encode`` and read with ``decode``. Here: reading a report file (JSON, then the schema, then the
types) and writing one, in the contract's key order.
"""

from __future__ import annotations

import json
from pathlib import Path

from farm.errors import BadInput
from farm.job.codec import ContractError, decode, encode
from farm.job.report import (
    SYNTHETIC_WARNING,
    CalibrationUsed,
    DataSource,
    DataSummary,
    ExportCheck,
    HostSummary,
    LoadRefusal,
    Mode,
    ModelSummary,
    Outcome,
    Quantization,
    Report,
    RunInfo,
    RunSettings,
    Runtime,
    Status,
    TargetBackend,
    TargetResult,
    TensorSummary,
    Timing,
    Tolerance,
    Variant,
)
from farm.report.schema import InvalidReport, validate


def load_report(text: str) -> Report:
    """Parse and validate a report read from a file; raises InvalidReport (a BadInput) when it is not one."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidReport("$", f"not JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    validate(document)
    try:
        return decode(Report, document)
    except ContractError as error:
        # Without jsonschema (an install without [dev]) only the top level was checked: a broken file ends here.
        raise InvalidReport("$", f"not a farm report ({error})") from None


def report_json(report: Report) -> str:
    """The report as report.json holds it."""
    # Key order is the contract's, which reads better than sorted; the trailing newline makes it a proper file.
    return json.dumps(encode(report), indent=2, ensure_ascii=False) + "\n"


__all__ = [
    "REPORT_FILE",
    "SYNTHETIC_WARNING",
    "CalibrationUsed",
    "DataSource",
    "DataSummary",
    "ExportCheck",
    "HostSummary",
    "LoadRefusal",
    "Mode",
    "ModelSummary",
    "Outcome",
    "Quantization",
    "Report",
    "RunInfo",
    "RunSettings",
    "Runtime",
    "Status",
    "TargetBackend",
    "TargetResult",
    "TensorSummary",
    "Timing",
    "Tolerance",
    "Variant",
    "load_report",
    "read_report",
    "report_json",
]


# The file farm matrix writes the report to, in its --out folder; farm gate, farm report and farm.api look for it there.
REPORT_FILE = "report.json"


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
