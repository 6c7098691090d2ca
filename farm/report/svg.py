"""Horizontal bar charts as inline SVG, so the HTML report needs no script and no external file.

Horizontal bars, because variant names are long and must stay readable as labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from farm.report._format import clean

_LABEL_W = 250
_BAR_W = 380
_VALUE_W = 170
_ROW_H = 20
_TOP = 30
_BOTTOM = 14
_CHAR_W = 7  # of the 12px monospace font, to keep labels inside their column


@dataclass(frozen=True, kw_only=True, slots=True)
class Bar:
    """One row of a chart. ``value`` None draws no bar and shows ``note`` instead (a variant that did not run)."""

    label: str
    value: float | None
    css_class: str
    note: str = ""
    hatched: bool = False
    heading: bool = False  # a group title row (the target), not a bar


def bar_chart(
    *,
    chart_id: str,
    title: str,
    bars: Sequence[Bar],
    domain: tuple[float, float],
    value_text: Callable[[float], str],
    threshold: tuple[float, str] | None = None,
) -> str:
    """An ``<svg>`` element; ``chart_id`` keeps its pattern ids apart from other charts in the same page."""
    low, high = domain
    span = (high - low) or 1.0
    width = _LABEL_W + _BAR_W + _VALUE_W
    height = _TOP + _ROW_H * len(bars) + _BOTTOM

    def x(value: float) -> float:
        return _LABEL_W + _BAR_W * min(max((value - low) / span, 0.0), 1.0)

    hatch = f"{chart_id}-hatch"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-labelledby="{chart_id}-title">',
        f'<title id="{chart_id}-title">{_esc(title)}</title>',
        f'<defs><pattern id="{hatch}" patternUnits="userSpaceOnUse" width="6" height="6" '
        'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#fff" stroke-width="2.5" '
        'stroke-opacity="0.75"/></pattern></defs>',
        f'<text x="0" y="16" class="chart-title">{_esc(_fit(title, width // _CHAR_W))}</text>',
        f'<line x1="{_LABEL_W}" y1="{_TOP - 4}" x2="{_LABEL_W}" y2="{height - _BOTTOM}" class="axis"/>',
    ]
    for row, bar in enumerate(bars):
        top = _TOP + row * _ROW_H
        middle = top + _ROW_H / 2 + 4
        if bar.heading:
            parts.append(f'<text x="0" y="{middle:.1f}" class="group">{_esc(_fit(bar.label, width // _CHAR_W))}</text>')
            continue
        parts.append(
            f'<text x="{_LABEL_W - 6}" y="{middle:.1f}" text-anchor="end">'
            f"{_esc(_fit(bar.label, _LABEL_W // _CHAR_W - 1))}</text>"
        )
        text = bar.note
        if bar.value is not None:
            end = x(bar.value)
            rect = f'<rect x="{_LABEL_W}" y="{top + 3}" width="{max(end - _LABEL_W, 1.0):.1f}" height="{_ROW_H - 6}"'
            parts.append(f'{rect} class="{bar.css_class}"/>')
            if bar.hatched:
                # Stripes over the outcome colour rather than instead of it; an inline style, because the page's
                # class rules would override a fill attribute.
                parts.append(f'{rect} style="fill:url(#{hatch})"/>')
            text = f"{value_text(bar.value)} {bar.note}".strip()
            value_x = end + 6
        else:
            value_x = _LABEL_W + 6
        parts.append(f'<text x="{value_x:.1f}" y="{middle:.1f}">{_esc(text)}</text>')
    if threshold is not None:
        at, label = threshold
        tx = x(at)
        parts.append(
            f'<line x1="{tx:.1f}" y1="{_TOP - 4}" x2="{tx:.1f}" y2="{height - _BOTTOM}" class="threshold"/>'
            f'<text x="{tx:.1f}" y="{height - 2}" text-anchor="middle" class="small">{_esc(label)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _fit(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _esc(text: str) -> str:
    return escape(clean(text), quote=True)
