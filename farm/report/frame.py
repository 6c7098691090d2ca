"""The report as farm.api returns it (MatrixReport): the job's Report (one definition on both sides of the container
boundary), with a table for pandas (one row per target and variant) and the matrix table for notebooks.

pandas is optional (``pip install 'farm[pandas]'``): only ``to_pandas`` imports it, and says so in one line where it
is missing."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farm.errors import EnvironmentProblem
from farm.job import report as contract
from farm.report import html
from farm.report.model import read_report

if TYPE_CHECKING:
    import pandas

# The columns of MatrixReport.to_pandas, in order (README "Python API"): one row per target and variant.
COLUMNS = (
    "target",
    "mode",
    "target_status",
    "variant",
    "status",
    "outcome",
    "recommended",
    "within_tolerance",
    "cosine",
    "top1_agreement",
    "max_abs",
    "p50_ms",
    "p90_ms",
    "timing",
    "size_bytes",
    "peak_rss_mib",
    "session_create_ms",
    "first_run_ms",
)
PANDAS_MISSING = "MatrixReport.to_pandas needs pandas, which is not installed"
PANDAS_FIX = "pip install 'farm[pandas]'"


@dataclass(frozen=True, kw_only=True, slots=True)
class MatrixReport(contract.Report):
    """farm's cross-target report (docs/contracts.md section 2), as farm.api.matrix and load_report return it: the
    report itself (farm.report.Report), with a table for pandas and one for notebooks."""

    @classmethod
    def of(cls, report: contract.Report) -> MatrixReport:
        return cls(**{f.name: getattr(report, f.name) for f in fields(report)})

    def rows(self) -> list[dict[str, Any]]:
        """One dict per target and variant, keyed by COLUMNS; None where the report has no figure."""
        return [_row(target, variant) for target in self.targets for variant in target.variants]

    def to_pandas(self) -> pandas.DataFrame:
        """rows() as a DataFrame with COLUMNS; raises EnvironmentProblem naming the extra where pandas is missing."""
        try:
            import pandas
        except ImportError:
            raise EnvironmentProblem(PANDAS_MISSING, fix=PANDAS_FIX) from None
        return pandas.DataFrame(self.rows(), columns=list(COLUMNS))

    def _repr_html_(self) -> str:
        """The HTML report's matrix table and legend, for a notebook's output cell."""
        return html.matrix_table(self) + "\n" + html.legend(self)


def load_report(path: str | Path) -> MatrixReport:
    """A report farm matrix wrote: report.json, or the folder that holds it."""
    return MatrixReport.of(read_report(Path(path)))


def _row(target: contract.TargetResult, variant: contract.Variant) -> dict[str, Any]:
    accuracy, latency, profile = variant.accuracy, variant.latency_ms, variant.profile
    return {
        "target": target.name,
        "mode": target.mode,
        "target_status": target.status,
        "variant": variant.name,
        "status": variant.status,
        "outcome": variant.outcome,
        "recommended": variant.name == target.recommended,
        "within_tolerance": variant.within_tolerance,
        "cosine": None if accuracy is None else accuracy.cosine,
        "top1_agreement": None if accuracy is None else accuracy.top1_agreement,
        "max_abs": None if accuracy is None else accuracy.max_abs,
        "p50_ms": None if latency is None else latency.p50,
        "p90_ms": None if latency is None else latency.p90,
        "timing": variant.timing,
        "size_bytes": variant.size_bytes,
        "peak_rss_mib": None if profile is None else profile.peak_rss_mib,
        "session_create_ms": None if profile is None else profile.session_create_ms,
        "first_run_ms": None if profile is None else profile.first_run_ms,
    }


__all__ = ["COLUMNS", "MatrixReport", "load_report"]
