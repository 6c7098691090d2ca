"""One self-contained HTML page: the compatibility matrix, latency and cosine charts, and each target's details.

No script, stylesheet or font is fetched, so the file can be attached to a CI run and opened offline. Every piece of
text from the report goes through ``_esc``: reasons and log tails come from tools and may hold markup.
"""

from __future__ import annotations

import math
from html import escape

from farm.report import _format as fmt
from farm.report.model import Outcome, Report, TargetResult, Variant
from farm.report.svg import Bar, bar_chart

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem; color: #1d232a; max-width: 1200px; }
h1 { font-size: 1.5rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ccd; }
code, pre, svg text { font-family: ui-monospace, Menlo, Consolas, monospace; }
.banner { background: #ffe08a; border: 2px solid #c77700; padding: .75rem 1rem; font-weight: 600; }
table.matrix { border-collapse: collapse; } .matrix th, .matrix td { border: 1px solid #c8ccd2; padding: .3rem .5rem; }
.matrix thead th { background: #eef0f3; font-size: .85rem; }
.matrix td { text-align: center; font-size: .85rem; white-space: nowrap; }
.matrix th.target { text-align: left; white-space: nowrap; } .reason { font-weight: 400; font-size: .8rem; }
.why { display: block; white-space: normal; max-width: 22rem; }
td.note { white-space: normal; text-align: left; }
.ok { background: #d6f0d8; } .out-of-tolerance { background: #ffe9a8; } .failed { background: #f7c9c9; }
.skipped, .not-quantized { background: #e4e4e4; color: #555; } .absent { background: #fafafa; color: #999; }
.rec { outline: 3px solid #1f6feb; outline-offset: -3px; font-weight: 700; }
.legend span { display: inline-block; padding: 0 .5rem; margin-right: .4rem; border: 1px solid #c8ccd2; }
svg.chart { display: block; margin: 1rem 0; } svg text { font-size: 12px; fill: #1d232a; }
svg .chart-title { font-weight: 700; } svg .group { font-weight: 700; } svg .small { font-size: 10px; }
svg rect.ok { fill: #4caf50; } svg rect.out-of-tolerance { fill: #f0a500; } svg .axis { stroke: #888; }
svg .threshold { stroke: #c62828; stroke-dasharray: 4 3; }
pre { background: #f4f5f7; padding: .75rem; overflow-x: auto; }
"""
_CELL_TEXT: dict[Outcome, str] = {
    "ok": "ok",
    "out-of-tolerance": "out of tolerance",
    "not-quantized": "not quantized",
    "failed": "failed",
    "skipped": "skipped",
}


def render_html(report: Report) -> str:
    title = f"farm report: {report.model.path}"
    body = [f"<h1>{_esc(title)}</h1>"]
    if report.data.synthetic:
        body.append(f'<p class="banner">Warning: {_esc(fmt.SYNTHETIC_WARNING)}.</p>')
    body += [_about(report), "<h2>Compatibility</h2>", _matrix(report), _legend(report)]
    body += ["<h2>Latency (p50)</h2>", *_latency_charts(report)]
    body += ["<h2>Cosine similarity to fp32</h2>", _cosine_chart(report)]
    body += ["<h2>Targets</h2>", *(_target_details(t) for t in report.targets)]
    if report.warnings:
        body += ["<h2>Warnings</h2>", _list(report.warnings)]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _about(report: Report) -> str:
    model, data = report.model, report.data
    labels = "with labels" if data.labels else "no labels"
    return (
        f"<p>sha256 <code>{_esc(model.sha256)}</code> · IR {model.ir_version} · farm {_esc(report.farm_version)} · "
        f"{_esc(report.created)}<br>data: {data.samples} samples from {_esc(data.source)}, {labels} · "
        f"tolerance: {_esc(fmt.tolerance_text(report))}</p>"
    )


def _matrix(report: Report) -> str:
    names = fmt.variant_names(report)
    head = "".join(f"<th>{_esc(n)}</th>" for n in names)
    rows = []
    for target in report.targets:
        header = f'<th class="target">{_esc(target.name)} <span class="reason">({_esc(target.mode)})</span>'
        if not target.variants:
            summary = _esc(fmt.target_summary(target))
            cells = f'<td class="{target.status} note" colspan="{max(len(names), 1)}">{summary}</td>'
        else:
            header += _target_status(target)
            cells = "".join(_matrix_cell(target, name) for name in names)
        header += "</th>"
        rows.append(f"<tr>{header}{cells}</tr>")
    return (f'<table class="matrix"><thead><tr><th>target</th>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody></table>")


def _target_status(target: TargetResult) -> str:
    if target.status == "ok":
        return ""
    return f'<span class="reason why">{_esc(fmt.target_summary(target))}</span>'


def _matrix_cell(target: TargetResult, name: str) -> str:
    variant = target.variant(name)
    if variant is None:
        absent = "not reached" if target.status == "failed" else "n/a"
        return f'<td class="absent">{absent}</td>'
    classes = variant.outcome + (" rec" if name == target.recommended else "")
    details = [_CELL_TEXT[variant.outcome]]
    if variant.accuracy is not None:
        worst = variant.accuracy.worst_output if fmt.worst_output(variant) else None
        details.append(f"cos {fmt.cosine(variant)}" + (f" ({worst})" if worst else ""))
    if variant.latency_ms is not None:
        details.append(f"{fmt.p50(variant)} ms")
    tooltip = f' title="{_esc(variant.error)}"' if variant.error else ""
    return f'<td class="{classes}"{tooltip}>{"<br>".join(_esc(d) for d in details)}</td>'


def _legend(report: Report) -> str:
    notes = [f'<span class="{outcome}">{_esc(text)}</span>' for outcome, text in _CELL_TEXT.items()]
    notes.append('<span class="rec">recommended</span>')
    footnote = "".join(f"<br>{_esc(mark)} {_esc(note)}." for mark, note in fmt.timing_notes(report))
    return f'<p class="legend">{"".join(notes)}{footnote}</p>'


def _latency_charts(report: Report) -> list[str]:
    # One chart per target: a shared axis would set QEMU's seconds beside native milliseconds.
    charts = []
    for index, target in enumerate(report.targets):
        if not target.variants:
            continue
        bars = [_latency_bar(v) for v in target.variants]
        top = max((b.value for b in bars if b.value is not None), default=1.0)
        emulated = any(v.timing == "emulated" for v in target.variants)
        suffix = " (emulated under QEMU: hatched, not comparable)" if emulated else ""
        charts.append(bar_chart(chart_id=f"latency-{index}", title=f"{fmt.target_heading(target)}: p50 ms{suffix}",
                                bars=bars, domain=(0.0, top * 1.05), value_text=lambda v: f"{fmt.milliseconds(v)} ms"))
    return charts or ["<p>No target measured any latency.</p>"]


def _latency_bar(variant: Variant) -> Bar:
    if variant.latency_ms is None:
        return Bar(label=variant.name, value=None, css_class=variant.outcome, note=_CELL_TEXT[variant.outcome])
    emulated = variant.timing == "emulated"
    return Bar(label=variant.name, value=variant.latency_ms.p50, css_class=variant.outcome,
               note="emulated" if emulated else "", hatched=emulated)


def _cosine_chart(report: Report) -> str:
    bars: list[Bar] = []
    values = [report.tolerance.cosine]
    for target in report.targets:
        if not target.variants:
            continue
        bars.append(Bar(label=fmt.target_heading(target), value=None, css_class="", heading=True))
        for variant in target.variants:
            cosine = None if variant.accuracy is None else variant.accuracy.cosine
            values += [] if cosine is None else [cosine]
            bars.append(Bar(label=variant.name, value=cosine, css_class=variant.outcome,
                            note="" if cosine is not None else _CELL_TEXT[variant.outcome]))
    if not bars:
        return "<p>No target measured any accuracy.</p>"
    # Starting the axis just below the worst value keeps a 0.99 against 0.999 difference visible.
    low = max(-1.0, math.floor((min(values) - 0.005) * 100) / 100)
    return bar_chart(chart_id="cosine", title="cosine to this target's fp32 (dashed: tolerance)", bars=bars,
                     domain=(low, 1.0), value_text=lambda v: f"{v:.4f}",
                     threshold=(report.tolerance.cosine, f"tolerance {report.tolerance.cosine}"))


def _target_details(target: TargetResult) -> str:
    parts = [f"<h3>{_esc(fmt.target_heading(target))}</h3>", f"<p><strong>{_esc(fmt.target_summary(target))}"
             "</strong></p>"]
    facts = []
    if target.runtime is not None:
        facts.append(f"onnxruntime {target.runtime.onnxruntime} ({', '.join(target.runtime.providers)})")
    if target.image:
        facts.append(f"image {target.image}")
    if target.duration_s is not None:
        facts.append(f"{target.duration_s:.1f} s")
    if facts:
        parts.append(f"<p>{_esc(' · '.join(facts))}</p>")
    errors = [f"{v.name}: {v.error}" for v in target.variants if v.error]
    notes = [f"{v.name}: {note}" for v in target.variants
             for note in (fmt.partly_quantized(v), fmt.metric_text(v)) if note]
    if errors or notes or target.warnings:
        parts.append(_list([*target.warnings, *errors, *notes]))
    per_output = _per_output(target)
    if per_output:
        parts.append(per_output)
    if target.log_tail:
        parts.append(f"<details open><summary>log tail</summary><pre>{_esc(target.log_tail)}</pre></details>")
    return "\n".join(parts)


def _per_output(target: TargetResult) -> str:
    """Each output's figures per variant, for models whose verdict rests on more than one output."""
    names, rows = fmt.per_output(target)
    if not rows:
        return ""
    head = "".join(f"<th>{_esc(n)}</th>" for n in names)
    body = "".join(
        f'<tr><th class="target">{_esc(variant)}</th>'
        + "".join(f"<td>{'<strong>' + _esc(c.text) + '</strong>' if c.drifted else _esc(c.text)}</td>" for c in cells)
        + "</tr>"
        for variant, cells in rows
    )
    return f'<table class="matrix"><thead><tr><th>per output</th>{head}</tr></thead><tbody>{body}</tbody></table>'


def _list(items: list[str] | tuple[str, ...]) -> str:
    return "<ul>" + "".join(f"<li>{_esc(item)}</li>" for item in items) + "</ul>"


def _esc(text: str) -> str:
    return escape(fmt.clean(text), quote=True)
