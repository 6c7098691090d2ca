"""``farm report``: one nightly page over many runs: the latest matrix, what changed since the run before (the
gate's rules, so the page and ``farm gate`` agree), and per target and variant the trend of accuracy and latency.

Runs are the ``report.json`` files found under the given folders (or given as files), ordered by their ``created``
time. A file that is not a farm report is left out and named on the page: one broken night does not hide the rest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.errors import BadInput
from farm.gate.budgets import TIMED
from farm.gate.policy import Policy
from farm.gate.rules import GateResult, evaluate
from farm.report import REPORT_FILE, html, plots
from farm.report import _format as fmt
from farm.report.model import Outcome, Report, TargetResult, load_report

TREND_SCHEMA = "farm.trend/1"
MEMORY_NOT_MEASURED = "Peak memory: not measured (no run's report has a profile: an older farm, or --no-profile)."
# Per variant and run; None where it did not run or was not measured (peak memory: no profile in that report).
_CELL_KEYS = ("outcome", "cosine", "p50_ms", "timing", "peak_rss_mib", "memory")


@dataclass(frozen=True, kw_only=True, slots=True)
class Run:
    source: str
    report: Report

    @property
    def name(self) -> str:
        label = self.report.run.label if self.report.run is not None else None
        return label or self.report.created


@dataclass(frozen=True, kw_only=True, slots=True)
class History:
    runs: tuple[Run, ...]
    # Files that were found but are not farm reports: (path, why).
    unreadable: tuple[tuple[str, str], ...] = ()

    @property
    def latest(self) -> Run:
        return self.runs[-1]

    def changes(self, policy: Policy) -> GateResult | None:
        """The gate's checks of the latest run against the one before it, or None for a single run."""
        if len(self.runs) < 2:
            return None
        before, latest = self.runs[-2], self.runs[-1]
        return evaluate(
            latest.report, policy, baseline=before.report, report_name=latest.name, baseline_name=before.name
        )

    def target_names(self) -> list[str]:
        names: dict[str, None] = {}
        for run in self.runs:
            names.update((t.name, None) for t in run.report.targets)
        return list(names)

    def variant_names(self, target: str) -> list[str]:
        names: dict[str, None] = {}
        for run in self.runs:
            found = _target(run.report, target)
            if found is not None:
                names.update((v.name, None) for v in found.variants)
        return list(names)


def collect(paths: Sequence[Path]) -> History:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.rglob(REPORT_FILE))
        elif path.is_file():
            files.append(path)
        else:
            raise BadInput(
                f"reading the history failed because {path} does not exist",
                fix="pass report.json files or folders that hold them (e.g. the nightly history folder)",
            )
    runs, unreadable = [], []
    for file in dict.fromkeys(f.resolve() for f in files):
        try:
            runs.append(Run(source=str(file), report=load_report(file.read_text(encoding="utf-8"))))
        except (OSError, UnicodeDecodeError, BadInput) as exc:
            unreadable.append((str(file), fmt.one_line(str(exc))))
    if not runs:
        raise BadInput(
            f"reading the history failed because no farm report was found in {', '.join(map(str, paths))}"
            + (f" ({len(unreadable)} unreadable)" if unreadable else ""),
            fix="pass the folders farm matrix --out wrote into, or their report.json files",
        )
    runs.sort(key=lambda r: (r.report.created, r.source))
    return History(runs=tuple(runs), unreadable=tuple(unreadable))


def _target(report: Report, name: str) -> TargetResult | None:
    return next((t for t in report.targets if t.name == name), None)


def trend_data(history: History, changes: GateResult | None) -> dict[str, Any]:
    """Every figure the page plots, as JSON (``farm.trend/1``): per target and variant, one value per run."""
    targets: dict[str, Any] = {}
    for name in history.target_names():
        variants: dict[str, Any] = {}
        for variant in history.variant_names(name):
            cells = [_cell(run.report, name, variant) for run in history.runs]
            variants[variant] = {key: [c[key] for c in cells] for key in _CELL_KEYS}
        statuses = [None if (t := _target(r.report, name)) is None else t.status for r in history.runs]
        recommended = [None if (t := _target(r.report, name)) is None else t.recommended for r in history.runs]
        targets[name] = {"status": statuses, "recommended": recommended, "variants": variants}
    return {
        "schema": TREND_SCHEMA,
        "runs": [
            {
                "name": r.name,
                "created": r.report.created,
                "source": r.source,
                "farm_version": r.report.farm_version,
                "model_sha256": r.report.model.sha256,
            }
            for r in history.runs
        ],
        "targets": targets,
        "changes": None
        if changes is None
        else [
            {"rule": c.rule, "target": c.target, "variant": c.variant, "status": c.status, "message": c.message}
            for c in changes.shown
        ],
        "unreadable": [{"source": s, "why": w} for s, w in history.unreadable],
    }


def _cell(report: Report, target: str, variant: str) -> dict[str, Any]:
    found = _target(report, target)
    v = None if found is None else found.variant(variant)
    if v is None:
        return dict.fromkeys(_CELL_KEYS)
    return {
        "outcome": v.outcome,
        "cosine": None if v.accuracy is None else v.accuracy.cosine,
        "p50_ms": v.latency_ms.p50 if v.latency_ms is not None and v.timing in TIMED else None,
        "timing": v.timing,
        "peak_rss_mib": None if v.profile is None else v.profile.peak_rss_mib,
        "memory": None if v.profile is None else v.profile.memory,
    }


def render_trend_html(history: History, changes: GateResult | None, data: dict[str, Any] | None = None) -> str:
    latest = history.latest.report
    first, last = history.runs[0], history.latest
    title = f"farm nightly: {latest.model.path}"
    body = [
        f"<h1>{html.esc(title)}</h1>",
        f"<p>{len(history.runs)} run(s), {html.esc(first.name)} to {html.esc(last.name)}</p>",
    ]
    data = data if data is not None else trend_data(history, changes)
    body += ["<h2>Changes since the previous run</h2>", _changes(changes)]
    body += ["<h2>Runs</h2>", _runs_table(history)]
    body += [
        f"<h2>Latest run: {html.esc(last.name)}</h2>",
        html.about(latest),
        html.matrix_table(latest),
        html.legend(latest),
        *html.tradeoff_section(latest),
    ]
    body.append("<h2>Trends</h2>")
    # Numbered, and cut from the left: nightly labels share their commit prefix and differ in their time.
    names = [f"{i}: {_tail(r.name)}" for i, r in enumerate(history.runs, 1)]
    for target in history.target_names():
        body.append(f"<h3>{html.esc(target)}</h3>")
        body.append(_status_strip(history, target, data))
        variants = data["targets"][target]["variants"]
        cosine = plots.trend(
            title=f"{target}: cosine to fp32 per run",
            ylabel="cosine",
            runs=names,
            series=[
                plots.Series(name=v, values=tuple(d["cosine"]), failed=tuple(o == "failed" for o in d["outcome"]))
                for v, d in variants.items()
            ],
            threshold=latest.tolerance.cosine,
            css_class="trend cosine",
        )
        latency = _figure_trend(
            names,
            variants,
            "p50_ms",
            title=f"{target}: p50 ms per run (timed runs only)",
            ylabel="p50 ms",
            css="latency",
        )
        memory = _figure_trend(
            names,
            variants,
            "peak_rss_mib",
            title=f"{target}: peak memory MiB per run (guest heap under emulation)",
            ylabel="peak MiB",
            css="memory",
        )
        for plot in (cosine, latency, memory):
            if plot is not None:
                body.append(f'<figure class="plot">{plot}</figure>')
        if latency is None:
            body.append("<p>No run timed this target (emulated targets are not timed).</p>")
        if memory is None:
            body.append(f"<p>{MEMORY_NOT_MEASURED}</p>")
    if history.unreadable:
        body += [
            "<h2>Files left out</h2>",
            "<ul>"
            + "".join(f"<li><code>{html.esc(s)}</code>: {html.esc(w)}</li>" for s, w in history.unreadable)
            + "</ul>",
        ]
    return html.page(title, body)


def _figure_trend(
    names: list[str], variants: dict[str, Any], key: str, *, title: str, ylabel: str, css: str
) -> str | None:
    """One line per variant of one figure of trend.json (None where a run did not measure it)."""
    return plots.trend(
        title=title,
        ylabel=ylabel,
        runs=names,
        series=[plots.Series(name=v, values=tuple(d[key])) for v, d in variants.items()],
        css_class=f"trend {css}",
    )


def _tail(text: str, chars: int = 16) -> str:
    return text if len(text) <= chars else "…" + text[-(chars - 1) :]


def _changes(changes: GateResult | None) -> str:
    if changes is None:
        return "<p>The first run: nothing to compare with yet.</p>"
    shown = changes.shown
    if not shown:
        return (
            f"<p>No regression: {len(changes.checks)} checks of the default gate policy held against "
            f"{html.esc(changes.baseline or '')}.</p>"
        )
    css = {"failed": "failed", "warned": "out-of-tolerance", "not-compared": "skipped"}
    rows = "".join(
        f'<tr class="{css[c.status]}"><td>{html.esc(c.status)}</td><td>{html.esc(c.rule)}</td>'
        f'<td>{html.esc(c.target)}</td><td>{html.esc(c.variant or "")}</td><td class="note">{html.esc(c.message)}'
        "</td></tr>"
        for c in shown
    )
    # Newly: what ran ok in the run before (new-failure), not what has been failing for a while (target-runs).
    failing = sorted({c.target for c in shown if c.rule == "new-failure" and c.status == "failed"})
    banner = f'<p class="banner">Newly failing: {html.esc(", ".join(failing))}</p>' if failing else ""
    return (
        f'{banner}<table class="matrix changes"><thead><tr><th>status</th><th>rule</th><th>target</th>'
        f"<th>variant</th><th>detail</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _runs_table(history: History) -> str:
    rows = []
    for index, run in enumerate(history.runs, 1):
        report = run.report
        counts = {s: sum(1 for t in report.targets if t.status == s) for s in ("ok", "failed", "skipped")}
        host = "unknown (farm.report/1)" if report.run is None else report.run.host.summary
        rows.append(
            f"<tr><td>{index}</td><td>{html.esc(run.name)}</td><td>{html.esc(report.created)}</td>"
            f"<td>{html.esc(report.farm_version)}</td><td>{html.esc(host)}</td>"
            f"<td>{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped</td></tr>"
        )
    return (
        '<table class="matrix runs"><thead><tr><th>#</th><th>run</th><th>created</th><th>farm</th><th>host</th>'
        f"<th>targets</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _status_strip(history: History, target: str, data: dict[str, Any]) -> str:
    """Each variant's outcome per run, coloured as in the matrix, so a variant that started failing stands out."""
    head = "".join(f"<th>{html.esc(r.name)}</th>" for r in history.runs)
    rows = []
    for variant, values in data["targets"][target]["variants"].items():
        cells = []
        for outcome, cosine in zip(values["outcome"], values["cosine"], strict=True):
            if outcome is None:
                cells.append('<td class="absent">—</td>')
                continue
            kind: Outcome = outcome
            text = html.CELL_TEXT[kind] + (f"<br>cos {cosine:.4f}" if cosine is not None else "")
            cells.append(f'<td class="{kind}">{text}</td>')
        rows.append(f'<tr><th class="target">{html.esc(variant)}</th>{"".join(cells)}</tr>')
    return (
        f'<table class="matrix strip"><thead><tr><th>variant</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
        "</table>"
    )


def render_trend_markdown(history: History, changes: GateResult | None) -> str:
    lines = [f"## farm nightly: {len(history.runs)} run(s), latest {fmt.markdown_text(history.latest.name)}", ""]
    if changes is None:
        lines.append("The first run: nothing to compare with yet.")
    else:
        shown = changes.shown
        lines += [f"- {c.status}: {fmt.markdown_text(c.message)}" for c in shown] or [
            "No regression since the run before."
        ]
    return "\n".join(lines) + "\n"


def write_trend(history: History, out: Path, changes: GateResult | None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    data = trend_data(history, changes)
    for name, text in (
        ("index.html", render_trend_html(history, changes, data)),
        ("trend.json", json.dumps(data, indent=1, ensure_ascii=False) + "\n"),
        ("summary.md", render_trend_markdown(history, changes)),
    ):
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
