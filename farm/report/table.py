"""The terminal view: one row per (target, variant), at most 100 columns wide.

The mode sits under the target's name rather than in a column of its own, and errors and reasons wrap inside the
variant column, because a 100-column budget has no room for either as a column.
"""

from __future__ import annotations

import textwrap

from tabulate import tabulate

from farm.report import _format as fmt
from farm.report.model import SYNTHETIC_WARNING, Report, TargetResult, Variant

WIDTH = 100
RECOMMENDED_MARK = " ◀"
_HEADERS = ("target", "variant", "status", "cosine", "top1", "acc", "p50 ms", "size")
_ALIGN = ("left", "left", "left", "right", "right", "right", "right", "right")
# A profiled report's peak memory beside size, its header on two lines (the unit under it): "peak MiB" on one line
# would cost the variant column, which the names of int8 variants with mitigations already fill.
_PEAK_HEADER = tuple(fmt.PEAK_HEADER.split())
_GAP = 2  # tabulate's "plain" format puts two spaces between columns
_TARGET_MAX = 20
_VARIANT_MIN = 24
_ERROR_LINES = 3
_REASON_LINES = 4

Row = list[str]


def render_table(report: Report) -> str:
    profiled = fmt.profiled(report)
    headers = _headers(profiled)
    target_width = min(_TARGET_MAX, max([len("(unavailable)"), *(len(t.name) for t in report.targets)]))
    # The metric columns are as wide as their widest figure; the variant column takes what is left.
    # A target's own row says "FAILED" or "skipped" in the status column, hence the extra row.
    metrics = [["skipped"], *(_metric_cells(v, profiled) for t in report.targets for v in t.variants)]
    fixed = sum(
        max([*(len(line) for line in header), *(len(cells[i]) for cells in metrics if i < len(cells))])
        for i, header in enumerate(headers[2:])
    )
    room = WIDTH - target_width - fixed - _GAP * (len(headers) - 1)
    longest = max([_VARIANT_MIN, *(len(n) + len(RECOMMENDED_MARK) for n in fmt.variant_names(report))])
    variant_width = min(room, longest)

    rows: list[Row] = []
    for index, target in enumerate(report.targets):
        if index:
            rows.append([""] * len(headers))
        rows.extend(_target_rows(target, target_width, variant_width, profiled))
    table = _tabulate(headers, rows)

    lines = [*_preamble(report), "", *table.splitlines(), "", *_legend(report), "", *_closing(report)]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _headers(profiled: bool) -> list[tuple[str, ...]]:
    """Each column's header lines, bottom-aligned: one line each, unless the peak column's two."""
    if not profiled:
        return [(header,) for header in _HEADERS]
    return [*(("", header) for header in _HEADERS), _PEAK_HEADER]


def _tabulate(headers: list[tuple[str, ...]], rows: list[Row]) -> str:
    # The rule under the headers is drawn here, because tabulate's own header handling pads every column by two
    # more characters, which the 100-column budget cannot spare.
    heads = [list(line) for line in zip(*headers, strict=True)]
    widths = [
        max(len(line) for cell in column for line in cell.splitlines() or [""])
        for column in zip(*heads, *rows, strict=True)
    ]
    rule = ["-" * width for width in widths]
    align = _ALIGN + ("right",) * (len(headers) - len(_ALIGN))
    return tabulate([*heads, rule, *rows], tablefmt="plain", disable_numparse=True, colalign=align)


def _target_rows(target: TargetResult, target_width: int, variant_width: int, profiled: bool) -> list[Row]:
    rows = []
    previous = None
    for variant in target.variants:
        # Several variants often fail or skip for one reason (nothing quantized, a missing kernel): say it once.
        repeated = variant.error is not None and variant.error == previous
        rows.append(_variant_row(variant, target.recommended, variant_width, profiled, repeated=repeated))
        previous = variant.error
    if target.status != "ok" or not rows:
        rows.append(_target_note_row(target, variant_width, profiled))
    name = _truncate(target.name, target_width)
    # A result --resume took from an earlier run says so where the reader looks for how it ran.
    mode = f"({target.mode}, reused)" if target.resumed_from else f"({target.mode})"
    if len(rows) == 1 or "\n" in rows[0][1]:
        rows[0][0] = f"{name}\n{mode}"
    else:
        rows[0][0], rows[1][0] = name, mode
    return rows


def _variant_row(
    variant: Variant, recommended: str | None, width: int, profiled: bool, *, repeated: bool = False
) -> Row:
    mark = RECOMMENDED_MARK if variant.name == recommended else ""
    label = _truncate(variant.name, width - len(mark)) + mark
    if variant.status != "ok" and variant.error:
        label += "\n" + (
            "  (the same reason as above)" if repeated else _wrap(variant.error, width, _ERROR_LINES, indent="  ")
        )
    notes = (
        fmt.worst_output(variant),
        fmt.divergence_note(variant),
        fmt.partly_quantized(variant),
        fmt.metric_text(variant),
        fmt.stopped(variant),
    )
    for note in notes:
        if note:
            label += "\n" + _wrap(note, width, _ERROR_LINES, indent="  ")
    return ["", label, *_metric_cells(variant, profiled)]


def _metric_cells(variant: Variant, profiled: bool) -> Row:
    cells = [
        fmt.OUTCOME_LABEL[variant.outcome],
        fmt.cosine(variant),
        fmt.top1(variant),
        fmt.accuracy(variant),
        fmt.p50(variant),
        fmt.size(variant.size_bytes),
    ]
    return [*cells, fmt.peak_memory(variant)] if profiled else cells


def _target_note_row(target: TargetResult, width: int, profiled: bool) -> Row:
    if target.status == "failed":
        code = "" if target.exit_code is None else f"exit {target.exit_code}: "
        note = f"target failed, {code}{target.reason or 'no reason given'}"
    elif target.status == "skipped":
        note = target.reason or "no reason given"
    else:
        note = target.reason or "no variant results"
    status = "FAILED" if target.status == "failed" else target.status
    return ["", _wrap(note, width, _REASON_LINES), status, *[""] * (len(_HEADERS) - 3 + profiled)]


def _preamble(report: Report) -> list[str]:
    lines: list[str] = []
    incomplete = fmt.incomplete_text(report)
    if incomplete:
        lines += ["!" * WIDTH, *textwrap.wrap(f"!! {incomplete}", WIDTH, subsequent_indent="!! "), "!" * WIDTH, ""]
    if report.data.synthetic:
        banner = "!" * WIDTH
        lines += [
            banner,
            *textwrap.wrap(f"!! WARNING: {SYNTHETIC_WARNING}", WIDTH, subsequent_indent="!! "),
            banner,
            "",
        ]
    model = report.model
    data = report.data
    labels = "with labels" if data.labels else "no labels"
    lines += textwrap.wrap(f"farm report for {model.path} (sha256 {model.sha256[:12]}, IR {model.ir_version})", WIDTH)
    lines += textwrap.wrap(
        f"data: {data.samples} samples from {data.source}, {labels}; tolerance: {fmt.tolerance_text(report)}", WIDTH
    )
    prepared = fmt.prepare_text(report)
    return lines + textwrap.wrap(prepared, WIDTH, subsequent_indent="  ") if prepared else lines


def _legend(report: Report) -> list[str]:
    lines = []
    lines += [f"{mark} {note}" for mark, note in fmt.timing_notes(report)]
    lines += [f"{mark} {note}" for mark, note in fmt.memory_notes(report)]
    lines.append(
        f"{RECOMMENDED_MARK.strip()} recommended · out-tol: ran, but outside tolerance ({fmt.tolerance_text(report)})"
    )
    return [wrapped for line in lines for wrapped in textwrap.wrap(line, WIDTH, subsequent_indent="  ")]


def _closing(report: Report) -> list[str]:
    lines = ["Recommendations:"]
    for target in report.targets:
        lines += textwrap.wrap(
            f"{target.name}: {fmt.one_line(fmt.target_summary(target))}",
            WIDTH,
            initial_indent="  ",
            subsequent_indent="      ",
        )
        for line in fmt.speed_lines(target):
            lines += textwrap.wrap(line, WIDTH, initial_indent="    ", subsequent_indent="      ")
    warnings = [*fmt.listed_warnings(report), *(f"{t.name}: {w}" for t in report.targets for w in t.warnings)]
    if warnings:
        lines.append("Warnings:")
        for warning in warnings:
            lines += textwrap.wrap(fmt.one_line(warning), WIDTH, initial_indent="  - ", subsequent_indent="    ")
    return lines


def _wrap(text: str, width: int, max_lines: int, indent: str = "") -> str:
    return "\n".join(
        textwrap.wrap(
            fmt.one_line(text),
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            max_lines=max_lines,
            placeholder=" …",
            break_long_words=True,
        )
    )


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
