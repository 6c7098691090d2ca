"""GitHub-flavoured Markdown: an overview, then one table per target with its recommendation.

Meant for a pull-request comment or a CI job summary. Every piece of text from the report is escaped, because reasons
and errors come from tools and may hold ``|``, ``<`` or backticks that would break a table or inject markup.
"""

from __future__ import annotations

import re

from farm.report import _format as fmt
from farm.report.model import SYNTHETIC_WARNING, Report, TargetResult, Variant

_VARIANT_HEADERS = (
    "variant",
    "status",
    "cosine",
    "max abs",
    "top1",
    "acc",
    "p50 ms",
    "±",
    "p90 ms",
    "p99 ms",
    "int8 nodes",
    "size",
)
# Free text from a report as inert Markdown (farm/report/_format.py).
_text = fmt.markdown_text
# A profiled report's variants also show what a device asks first: memory and start-up (farm/report/_format.py).
_PROFILE_HEADERS = (fmt.PEAK_HEADER, fmt.SESSION_CREATE, fmt.FIRST_RUN)
# Every column but the variant and its status holds figures, right-aligned.
_NUMERIC = {*_VARIANT_HEADERS[2:], *_PROFILE_HEADERS}


def render_markdown(report: Report) -> str:
    blocks = [f"# farm report: {_code(report.model.path)}"]
    incomplete = fmt.incomplete_text(report)
    if incomplete:
        blocks.append(f"> [!CAUTION]\n> {_text(incomplete)}.")
    if report.data.synthetic:
        blocks.append(f"> [!WARNING]\n> **Synthetic inputs**: {_text(SYNTHETIC_WARNING)}.")
    blocks += [_about(report), _overview(report)]
    profiled = fmt.profiled(report)
    blocks += [_target_section(target, profiled) for target in report.targets]
    blocks += [f"{_text(mark)} {_text(note)}." for mark, note in (*fmt.timing_notes(report), *fmt.memory_notes(report))]
    if fmt.listed_warnings(report):
        blocks.append("## Warnings\n\n" + "\n".join(f"- {_text(w)}" for w in fmt.listed_warnings(report)))
    return "\n\n".join(blocks) + "\n"


def _about(report: Report) -> str:
    model, data = report.model, report.data
    opsets = ", ".join(f"{domain} {version}" for domain, version in model.opsets.items())
    labels = "with labels" if data.labels else "no labels"
    prepared = fmt.prepare_text(report)
    return (
        f"Model sha256 {_code(model.sha256[:12])} · IR {model.ir_version} · opsets {_text(opsets)} · "
        f"farm {_text(report.farm_version)} · {_text(report.created)}  \n"
        f"Data: {data.samples} samples from {_text(data.source)}, {labels} · "
        f"Tolerance: {_text(fmt.tolerance_text(report))}" + (f"  \n{_text(prepared)}" if prepared else "")
    )


def _overview(report: Report) -> str:
    rows = [
        [_code(t.name), _text(t.mode), _text(t.platform), _status(t), _code(t.recommended) if t.recommended else ""]
        for t in report.targets
    ]
    return "## Summary\n\n" + _table(("target", "mode", "platform", "status", "recommended"), rows)


def _target_section(target: TargetResult, profiled: bool) -> str:
    parts = [f"## {_text(fmt.target_heading(target))}"]
    if target.status == "ok" and target.recommended:
        because = f": {_text(target.recommendation_reason)}" if target.recommendation_reason else ""
        parts.append(f"**Recommended: {_code(target.recommended)}**{because}")
    else:
        parts.append(f"**{_text(fmt.target_summary(target))}**")
    speed = fmt.speed_lines(target)
    if speed:
        parts.append("\n".join(f"- {_text(line)}" for line in speed))
    if target.variants:
        rows = [_variant_row(v, target.recommended, profiled) for v in target.variants]
        parts.append(_table(_VARIANT_HEADERS + (_PROFILE_HEADERS if profiled else ()), rows))
        parts += _profile_parts(target)
        per_output = _per_output(target)
        if per_output:
            parts.append(per_output)
    if target.runtime:
        providers = ", ".join(target.runtime.providers)
        parts.append(f"onnxruntime {_text(target.runtime.onnxruntime)} ({_text(providers)})")
    if target.warnings:
        parts.append("\n".join(f"- ⚠ {_text(w)}" for w in target.warnings))
    if target.log_tail:
        parts.append(f"<details><summary>log tail</summary>\n\n{_fenced(target.log_tail)}\n\n</details>")
    return "\n\n".join(parts)


def _variant_row(variant: Variant, recommended: str | None, profiled: bool) -> list[str]:
    name = _code(variant.name) + (" ◀ **recommended**" if variant.name == recommended else "")
    status = fmt.OUTCOME_LABEL[variant.outcome]
    notes = [
        variant.error,
        fmt.worst_output(variant),
        fmt.divergence_note(variant),
        fmt.partly_quantized(variant),
        fmt.metric_text(variant),
        fmt.stopped(variant),
    ]
    status += "".join(f": {_text(note)}" for note in notes if note)
    latency = variant.latency_ms
    times = (
        ["", "", "", ""]
        if latency is None
        else [
            _text(fmt.p50(variant)),
            fmt.milliseconds(latency.spread / 2) if latency.rounds else "",
            _text(fmt.marked(variant, latency.p90)),
            _text(fmt.marked(variant, latency.p99)),
        ]
    )
    max_abs = "" if variant.accuracy is None else f"{variant.accuracy.max_abs:.3g}"
    cells = [fmt.cosine(variant), max_abs, fmt.top1(variant), fmt.accuracy(variant)]
    profile = [fmt.peak_memory(variant), fmt.session_create(variant), fmt.first_run(variant)] if profiled else []
    return [
        name,
        status,
        *(_blank(c) for c in cells),
        *times,
        _blank(fmt.quantized_nodes(variant)),
        _blank(fmt.size(variant.size_bytes)),
        *(_blank(_text(c)) for c in profile),
    ]


def _profile_parts(target: TargetResult) -> list[str]:
    """What the target's peak figures count, and its variants' p50 at each profiled thread count."""
    parts = []
    basis = fmt.memory_basis_line(target)
    if basis:
        parts.append(_text(basis) + ".")
    counts = fmt.thread_counts(target)
    if counts:
        headers = ("p50 ms by threads", *(_text(fmt.thread_header(n, over)) for n, over in counts))
        rows = [
            [_code(v.name), *(_blank(_text(fmt.thread_p50(v, n))) for n, _ in counts)]
            for v in target.variants
            if v.profile is not None and v.profile.threads
        ]
        parts.append(_table(headers, rows, numeric=len(headers) - 1))
        if any(over for _, over in counts):
            parts.append(_text(fmt.OVERSUBSCRIBED_NOTE) + ".")
    return parts


def _per_output(target: TargetResult) -> str:
    """Each output's figures per variant, for models whose verdict rests on more than one output."""
    names, rows = fmt.per_output(target)
    if not rows:
        return ""
    table = [
        [_code(variant), *(f"**{_text(c.text)}**" if c.drifted else _text(c.text) for c in cells)]
        for variant, cells in rows
    ]
    return _table(("per output", *(_text(n) for n in names)), table)


def _status(target: TargetResult) -> str:
    if target.status == "ok":
        return "ok"
    return f"{target.status}: {_text(target.reason or 'no reason given')}"


def _table(headers: tuple[str, ...], rows: list[list[str]], numeric: int | None = None) -> str:
    """A GitHub table; its numeric columns (right-aligned) are those named in _NUMERIC, or the last ``numeric``."""
    if numeric is None:
        rule = ["---:" if h in _NUMERIC else "---" for h in headers]
    else:
        rule = ["---"] * (len(headers) - numeric) + ["---:"] * numeric
    lines = [_row(list(headers)), _row(rule), *(_row(r) for r in rows)]
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _blank(cell: str) -> str:
    return "" if cell == fmt.NONE else cell


def _code(text: str) -> str:
    # A code span needs a fence longer than any run of backticks inside it, and padding when the text starts or
    # ends with one (GitHub strips a single space each side). A pipe still ends a table cell inside a code span.
    text = fmt.one_line(text).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _fenced(text: str) -> str:
    text = fmt.clean(text).rstrip("\n")
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}text\n{text}\n{fence}"
