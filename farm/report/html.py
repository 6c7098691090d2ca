"""One self-contained HTML page: the compatibility matrix, latency and cosine charts, and each target's details.

No script, stylesheet or font is fetched, so the file can be attached to a CI run and opened offline. Every piece of
text from the report goes through ``_esc``: reasons and log tails come from tools and may hold markup.
"""

from __future__ import annotations

import math
from html import escape

from farm.model.shapes import shape_text
from farm.report import _format as fmt
from farm.report import plots
from farm.report.model import SYNTHETIC_WARNING, Outcome, Report, TargetResult, TensorSummary, Variant
from farm.report.svg import Bar, bar_chart

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem; color: #1d232a; max-width: 1200px; }
h1 { font-size: 1.5rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ccd; }
code, pre, svg.chart text { font-family: ui-monospace, Menlo, Consolas, monospace; }
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
svg.chart { display: block; margin: 1rem 0; } svg.chart text { font-size: 12px; fill: #1d232a; }
figure.plot { margin: 1rem 0; } svg.plot { max-width: 100%; height: auto; }
svg.chart .chart-title, svg.chart .group { font-weight: 700; } svg.chart .small { font-size: 10px; }
svg.chart rect.ok { fill: #4caf50; } svg.chart rect.out-of-tolerance { fill: #f0a500; }
svg.chart .axis { stroke: #888; }
svg.chart .threshold { stroke: #c62828; stroke-dasharray: 4 3; }
pre { background: #f4f5f7; padding: .75rem; overflow-x: auto; }
"""
CELL_TEXT: dict[Outcome, str] = {
    "ok": "ok",
    "out-of-tolerance": "out of tolerance",
    "not-quantized": "not quantized",
    "failed": "failed",
    "skipped": "skipped",
}


def render_html(report: Report) -> str:
    title = f"farm report: {report.model.path}"
    body = [f"<h1>{esc(title)}</h1>"]
    incomplete = fmt.incomplete_text(report)
    if incomplete:
        body.append(f'<p class="banner">{esc(incomplete)}.</p>')
    if report.data.synthetic:
        body.append(f'<p class="banner">Warning: {esc(SYNTHETIC_WARNING)}.</p>')
    body += [about(report), "<h2>Compatibility</h2>", matrix_table(report), legend(report)]
    body += ["<h2>Accuracy against speed</h2>", *tradeoff_section(report)]
    if fmt.profiled(report):
        body += ["<h2>Memory against latency</h2>", *memory_section(report)]
    body += ["<h2>Latency (p50)</h2>", *_latency_charts(report)]
    body += ["<h2>Cosine similarity to fp32</h2>", _cosine_chart(report)]
    body += ["<h2>Targets</h2>", *(_target_details(t) for t in report.targets)]
    if fmt.listed_warnings(report):
        body += ["<h2>Warnings</h2>", _list(fmt.listed_warnings(report))]
    return page(title, body)


def page(title: str, body: list[str]) -> str:
    """One self-contained HTML document: no script, and nothing fetched."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def tradeoff_section(report: Report) -> list[str]:
    """Per timed target: cosine against speedup over fp32 (matplotlib), and the speedups as bars."""
    parts = []
    for index, target in enumerate(report.targets):
        scatter = plots.tradeoff(target, report.tolerance.cosine)
        if scatter is None:
            continue
        parts.append(f'<figure class="plot">{scatter}</figure>')
        fp32 = target.variant("fp32")
        speedups = [(v, plots.speedup(v, fp32)) for v in target.variants]
        bars = [
            Bar(label=v.name, value=x, css_class=v.outcome, note="" if x is not None else CELL_TEXT[v.outcome])
            for v, x in speedups
        ]
        top = max((b.value for b in bars if b.value is not None), default=1.0)
        parts.append(
            bar_chart(
                chart_id=f"speedup-{index}",
                title=f"{fmt.target_heading(target)}: speedup over fp32",
                bars=bars,
                domain=(0.0, max(top, 1.0) * 1.05),
                value_text=lambda v: f"{v:.2f}x",
                threshold=(1.0, "fp32"),
            )
        )
    return parts or [
        "<p>No target timed its variants (emulated targets are not timed), so there is no trade-off to draw.</p>"
    ]


def memory_section(report: Report) -> list[str]:
    """Per profiled target: peak memory against p50 at --threads, or against size where the target has no times a
    comparison may use (emulated, estimated); the plot's title and axes say which."""
    parts = []
    for target in report.targets:
        scatter = plots.memory(target)
        if scatter is not None:
            basis = fmt.memory_basis_line(target)
            caption = f"<figcaption>{esc(basis)}</figcaption>" if basis else ""
            parts.append(f'<figure class="plot">{scatter}{caption}</figure>')
    return parts or ["<p>No target has the peak memory of two variants or more, so there is no plot to draw.</p>"]


def about(report: Report) -> str:
    model, data = report.model, report.data
    labels = "with labels" if data.labels else "no labels"
    return (
        f"<p>sha256 <code>{esc(model.sha256)}</code> · IR {model.ir_version} · farm {esc(report.farm_version)} · "
        f"{esc(report.created)}<br>data: {data.samples} samples from {esc(data.source)}, {labels} · "
        f"tolerance: {esc(fmt.tolerance_text(report))}<br>inputs: {_tensors(model.inputs)}<br>"
        f"outputs: {_tensors(model.outputs)}{_run_line(report)}</p>"
    )


def _tensors(tensors: tuple[TensorSummary, ...]) -> str:
    # Names come from the model file: an exporter, or anyone who wrote it, chose them.
    return ", ".join(f"<code>{esc(t.name)}</code> {esc(t.dtype)} {esc(shape_text(t.shape))}" for t in tensors)


def _run_line(report: Report) -> str:
    run = report.run
    if run is None:
        return ""
    host = f"{run.host.summary}, {run.host.engine or 'engine unknown'}"
    label = f"run {esc(run.label)} · " if run.label else ""
    prepared = fmt.prepare_text(report)
    return (
        f"<br>{label}host: {esc(host)} · threads {run.settings.threads} · {run.settings.iterations} timed runs "
        f"in {run.settings.timing_rounds} rounds · calibration {esc(run.settings.calibration)} · "
        f"optimization {esc(run.settings.optimization_level)}" + (f"<br>{esc(prepared)}" if prepared else "")
    )


def matrix_table(report: Report) -> str:
    names = fmt.variant_names(report)
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    rows = []
    for target in report.targets:
        header = f'<th class="target">{esc(target.name)} <span class="reason">({esc(target.mode)})</span>'
        if not target.variants:
            summary = esc(fmt.target_summary(target))
            cells = f'<td class="{target.status} note" colspan="{max(len(names), 1)}">{summary}</td>'
        else:
            header += _target_status(target)
            cells = "".join(_matrix_cell(target, name) for name in names)
        header += "</th>"
        rows.append(f"<tr>{header}{cells}</tr>")
    return (
        f'<table class="matrix"><thead><tr><th>target</th>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def _target_status(target: TargetResult) -> str:
    if target.status == "ok":
        return ""
    return f'<span class="reason why">{esc(fmt.target_summary(target))}</span>'


def _matrix_cell(target: TargetResult, name: str) -> str:
    variant = target.variant(name)
    if variant is None:
        absent = "not reached" if target.status == "failed" else "n/a"
        return f'<td class="absent">{absent}</td>'
    classes = variant.outcome + (" rec" if name == target.recommended else "")
    details = [CELL_TEXT[variant.outcome]]
    if variant.accuracy is not None:
        worst = variant.accuracy.worst_output if fmt.worst_output(variant) else None
        details.append(f"cos {fmt.cosine(variant)}" + (f" ({worst})" if worst else ""))
    if variant.latency_ms is not None:
        details.append(f"{fmt.p50(variant)} ms")
    title = "; ".join(text for text in (variant.error, fmt.divergence_note(variant), fmt.stopped(variant)) if text)
    tooltip = f' title="{esc(title)}"' if title else ""
    return f'<td class="{classes}"{tooltip}>{"<br>".join(esc(d) for d in details)}</td>'


def legend(report: Report) -> str:
    notes = [f'<span class="{outcome}">{esc(text)}</span>' for outcome, text in CELL_TEXT.items()]
    notes.append('<span class="rec">recommended</span>')
    notes_by_mark = [*fmt.timing_notes(report), *fmt.memory_notes(report)]
    footnote = "".join(f"<br>{esc(mark)} {esc(note)}." for mark, note in notes_by_mark)
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
        charts.append(
            bar_chart(
                chart_id=f"latency-{index}",
                title=f"{fmt.target_heading(target)}: p50 ms{suffix}",
                bars=bars,
                domain=(0.0, top * 1.05),
                value_text=lambda v: f"{fmt.milliseconds(v)} ms",
            )
        )
    return charts or ["<p>No target measured any latency.</p>"]


def _latency_bar(variant: Variant) -> Bar:
    if variant.latency_ms is None:
        return Bar(label=variant.name, value=None, css_class=variant.outcome, note=CELL_TEXT[variant.outcome])
    emulated = variant.timing == "emulated"
    return Bar(
        label=variant.name,
        value=variant.latency_ms.p50,
        css_class=variant.outcome,
        note="emulated" if emulated else "",
        hatched=emulated,
    )


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
            bars.append(
                Bar(
                    label=variant.name,
                    value=cosine,
                    css_class=variant.outcome,
                    note="" if cosine is not None else CELL_TEXT[variant.outcome],
                )
            )
    if not bars:
        return "<p>No target measured any accuracy.</p>"
    # Starting the axis just below the worst value keeps a 0.99 against 0.999 difference visible.
    low = max(-1.0, math.floor((min(values) - 0.005) * 100) / 100)
    return bar_chart(
        chart_id="cosine",
        title="cosine to this target's fp32 (dashed: tolerance)",
        bars=bars,
        domain=(low, 1.0),
        value_text=lambda v: f"{v:.4f}",
        threshold=(report.tolerance.cosine, f"tolerance {report.tolerance.cosine}"),
    )


def _target_details(target: TargetResult) -> str:
    parts = [
        f"<h3>{esc(fmt.target_heading(target))}</h3>",
        f"<p><strong>{esc(fmt.target_summary(target))}</strong></p>",
    ]
    speed = fmt.speed_lines(target)
    if speed:
        parts.append(f'<p class="speed">{"<br>".join(esc(line) for line in speed)}</p>')
    facts = []
    if target.runtime is not None:
        facts.append(f"onnxruntime {target.runtime.onnxruntime} ({', '.join(target.runtime.providers)})")
    if target.image:
        facts.append(f"image {target.image}")
    if target.duration_s is not None:
        facts.append(f"{target.duration_s:.1f} s")
    if facts:
        parts.append(f"<p>{esc(' · '.join(facts))}</p>")
    errors = [f"{v.name}: {v.error}" for v in target.variants if v.error]
    notes = [
        f"{v.name}: {note}" for v in target.variants for note in (fmt.partly_quantized(v), fmt.metric_text(v)) if note
    ]
    if errors or notes or target.warnings:
        parts.append(_list([*target.warnings, *errors, *notes]))
    per_output = _per_output(target)
    if per_output:
        parts.append(per_output)
    parts += _profile(target)
    if target.log_tail:
        parts.append(f"<details open><summary>log tail</summary><pre>{esc(target.log_tail)}</pre></details>")
    return "\n".join(parts)


def _per_output(target: TargetResult) -> str:
    """Each output's figures per variant, for models whose verdict rests on more than one output."""
    names, rows = fmt.per_output(target)
    if not rows:
        return ""
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    body = "".join(
        f'<tr><th class="target">{esc(variant)}</th>'
        + "".join(f"<td>{'<strong>' + esc(c.text) + '</strong>' if c.drifted else esc(c.text)}</td>" for c in cells)
        + "</tr>"
        for variant, cells in rows
    )
    return f'<table class="matrix"><thead><tr><th>per output</th>{head}</tr></thead><tbody>{body}</tbody></table>'


def _profile(target: TargetResult) -> list[str]:
    """The target's deployment profile: what its memory figures count (one line), then per variant its peak memory,
    start-up times and p50 at each profiled thread count, the oversubscribed counts named in their header."""
    profiled = [v for v in target.variants if v.profile is not None]
    basis = fmt.memory_basis_line(target)
    if not profiled or basis is None:
        return []
    counts = fmt.thread_counts(target)
    bound = any(v.profile.rss_upper_bound_mib is not None for v in profiled if v.profile is not None)
    headers = [
        fmt.PEAK_HEADER,
        *(["upper bound MiB"] if bound else []),
        fmt.SESSION_CREATE,
        fmt.FIRST_RUN,
        *(f"p50 ms, {fmt.thread_header(n, over)}" for n, over in counts),
    ]
    rows = []
    for variant in profiled:
        cells = [
            fmt.peak_memory(variant),
            *([fmt.upper_bound(variant)] if bound else []),
            fmt.session_create(variant),
            fmt.first_run(variant),
            *(fmt.thread_p50(variant, n) for n, _ in counts),
        ]
        row = "".join(f"<td>{esc(c)}</td>" for c in cells)
        rows.append(f'<tr><th class="target">{esc(variant.name)}</th>{row}</tr>')
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    table = (
        f'<table class="matrix profile"><thead><tr><th>profile</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    notes = [basis, *([fmt.OVERSUBSCRIBED_NOTE] if any(over for _, over in counts) else [])]
    return [f'<p class="memory">{"<br>".join(esc(n) for n in notes)}</p>', table]


def _list(items: list[str] | tuple[str, ...]) -> str:
    return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>"


def esc(text: str) -> str:
    return escape(fmt.clean(text), quote=True)
