"""Plots drawn with matplotlib as inline SVG: the accuracy/speed trade-off per target and the trends over runs.

matplotlib rather than more hand-written SVG (farm/report/svg.py draws the bar charts): a scatter with labelled
points and a threshold, and line charts over runs, need axes, ticks, label placement and legends that a library
gets right. Its SVG backend writes text as ``<text>`` (``svg.fonttype = none``) with XML escaping, needs no
browser-side script or font, and stays inside the one HTML file. Mathtext is off: a name holding ``$`` is text.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib as mpl
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

from farm.report import _format as fmt
from farm.report.model import TargetResult, Variant

# The HTML report's colour for failures and thresholds (farm/report/html.py: .failed, .threshold).
FAILED = "#c62828"
_RC: dict[Any, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "farm",
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">", "h")
_PROLOGUE = re.compile(r"\A.*?(?=<svg)", re.S)
_ID_REFERENCE = re.compile(r'(\bid="|xlink:href="#|url\(#)([^")]+)')
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def _svg(figure: Figure, css_class: str) -> str:
    buffer = io.StringIO()
    FigureCanvasSVG(figure).print_svg(buffer, metadata={"Date": None})  # type: ignore[no-untyped-call]
    text = _METADATA.sub("", _PROLOGUE.sub("", buffer.getvalue(), count=1), count=1)
    # Every matplotlib SVG names its parts figure_1, axes_1, ...: inside one page each plot gets its own prefix (from
    # its content, so the page stays reproducible), and its stylesheet applies to this plot alone.
    prefix = "p" + hashlib.sha256(text.encode()).hexdigest()[:8]
    text = _ID_REFERENCE.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", text)
    text = text.replace('<style type="text/css">*{', f'<style type="text/css">svg.{prefix} *{{', 1)
    return text.replace("<svg ", f'<svg class="plot {css_class} {prefix}" role="img" ', 1)


def speedup(variant: Variant, fp32: Variant | None) -> float | None:
    """fp32's p50 over the variant's, on the same target; None when either was not timed, or timed under QEMU."""
    if fp32 is None or fp32.latency_ms is None or variant.latency_ms is None or variant.latency_ms.p50 <= 0:
        return None
    if "emulated" in (fp32.timing, variant.timing):
        return None
    return fp32.latency_ms.p50 / variant.latency_ms.p50


def tradeoff(target: TargetResult, min_cosine: float) -> str | None:
    """Cosine to fp32 against speedup over fp32, one point per variant, the tolerance drawn: the variants worth
    shipping sit top right of both lines. None when the target timed nothing (emulated, or it failed)."""
    fp32 = target.variant("fp32")
    points = [(v, speedup(v, fp32), v.accuracy.cosine) for v in target.variants if v.accuracy is not None]
    timed = [(v, x, y) for v, x, y in points if x is not None]
    if len(timed) < 2:
        return None
    with mpl.rc_context(_RC):
        figure = Figure(figsize=(7.4, 3.6), layout="constrained")
        axes = figure.add_subplot()
        # A legend rather than labels at the points: int8 variants sit on top of each other near cosine 1.
        for index, (variant, x, y) in enumerate(timed):
            inside = variant.outcome == "ok"
            colour = f"C{index % 10}"
            label = (
                variant.name
                + (" (recommended)" if variant.name == target.recommended else "")
                + ("" if inside else f" ({fmt.OUTCOME_LABEL[variant.outcome]})")
            )
            axes.scatter(
                [x],
                [y],
                s=44 if variant.name == target.recommended else 30,
                zorder=3,
                label=label,
                marker=_MARKERS[index % len(_MARKERS)],
                edgecolors=colour,
                facecolors=colour if inside else "none",
                linewidths=1.2,
            )
        axes.axhline(min_cosine, color=FAILED, linestyle="--", linewidth=1)
        axes.axvline(1.0, color="#888888", linestyle=":", linewidth=1)
        axes.text(1.0, min_cosine, f" tolerance {min_cosine}", color=FAILED, fontsize=7, va="bottom")
        low = min(min(y for _, _, y in timed), min_cosine)
        axes.set_ylim(max(-1.0, low - (1.0 - low) * 0.15 - 1e-4), 1.0 + (1.0 - low) * 0.08 + 1e-4)
        axes.set_xlabel("speedup over fp32 (fp32 p50 / variant p50)" + _timing_note(target))
        axes.set_ylabel("cosine to fp32")
        axes.set_title(f"{fmt.target_heading(target)}: accuracy against speed", fontsize=9, loc="left")
        axes.legend(
            fontsize=6.5,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
            title="hollow: out of tolerance",
            title_fontsize=6.5,
        )
        return _svg(figure, "tradeoff")


def _timing_note(target: TargetResult) -> str:
    return ", masked timings" if any(v.timing == "masked" for v in target.variants) else ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Series:
    """One line of a trend: a variant's value at each run (None where it did not run or was not measured)."""

    name: str
    values: tuple[float | None, ...]
    failed: tuple[bool, ...] = ()


def trend(
    *,
    title: str,
    ylabel: str,
    runs: Sequence[str],
    series: Sequence[Series],
    threshold: float | None = None,
    css_class: str = "trend",
) -> str | None:
    """Values over runs, one line per series; a failed run is a red cross on its line's level (or at the bottom)."""
    if not runs or not any(v is not None for s in series for v in s.values):
        return None
    with mpl.rc_context(_RC):
        figure = Figure(figsize=(6.4, 3.0), layout="constrained")
        axes = figure.add_subplot()
        xs = list(range(len(runs)))
        known = [v for s in series for v in s.values if v is not None]
        floor = min(known)
        for line in series:
            points = [(x, v) for x, v in zip(xs, line.values, strict=True) if v is not None]
            if points:
                axes.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    marker="o",
                    markersize=3,
                    linewidth=1.2,
                    label=line.name,
                )
            crosses = [x for x, bad in zip(xs, line.failed, strict=False) if bad]
            if crosses:
                axes.scatter(crosses, [floor] * len(crosses), marker="x", color=FAILED, zorder=3)
        if threshold is not None:
            axes.axhline(threshold, color=FAILED, linestyle="--", linewidth=1)
        axes.set_xticks(xs, [fmt.one_line(r)[:18] for r in runs], rotation=30, ha="right", fontsize=7)
        axes.set_ylabel(ylabel)
        axes.set_title(title, fontsize=9, loc="left")
        if len(series) > 1:
            axes.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        return _svg(figure, css_class)


# What a memory plot's x axis is, by whether the target's profiled variants have times that a comparison may use.
_TIMED = ("measured", "masked")


def memory_basis(target: TargetResult) -> str:
    """``latency`` when every profiled variant of ``target`` was timed on a real CPU (native or masked), else ``size``:
    QEMU wall times are not comparable and an estimate may not be evidence, so such targets plot memory against the
    model's size on disk (which also answers whether an int8 variant smaller on disk is smaller in memory)."""
    profiled = [v for v in target.variants if _peak(v) is not None]
    timed = all(v.latency_ms is not None and v.timing in _TIMED for v in profiled)
    return "latency" if timed else "size"


def memory(target: TargetResult) -> str | None:
    """Peak memory against p50 at --threads (or against size, see memory_basis), one labelled point per variant;
    None when fewer than two variants have a peak figure."""
    basis = memory_basis(target)
    points = [(v, _memory_x(v, basis), _peak(v)) for v in target.variants]
    drawn = [(v, x, y) for v, x, y in points if x is not None and y is not None]
    if len(drawn) < 2:
        return None
    guest = any(v.profile is not None and v.profile.memory == "guest-heap" for v, _, _ in drawn)
    with mpl.rc_context(_RC):
        figure = Figure(figsize=(6.4, 3.4), layout="constrained")
        axes = figure.add_subplot()
        for index, (variant, x, y) in enumerate(drawn):
            colour = f"C{index % 10}"
            recommended = variant.name == target.recommended
            axes.scatter([x], [y], s=44 if recommended else 26, zorder=3, color=colour, marker=_MARKERS[0])
            label = variant.name + (" (recommended)" if recommended else "")
            axes.annotate(label, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=6.5, color=colour)
        axes.set_xlabel("p50 ms at --threads" + _timing_note(target) if basis == "latency" else "size on disk (MB)")
        axes.set_ylabel("guest heap MiB (under QEMU)" if guest else "peak MiB")
        # From zero, so a reader sees ratios; room on the right for the labels of the slowest (or largest) variants.
        axes.set_ylim(0, max(y for _, _, y in drawn) * 1.1)
        axes.set_xlim(0, max(x for _, x, _ in drawn) * 1.25)
        against = "latency" if basis == "latency" else "size (no comparable times)"
        axes.set_title(f"{fmt.target_heading(target)}: memory against {against}", fontsize=9, loc="left")
        return _svg(figure, "memory")


def _peak(variant: Variant) -> float | None:
    return None if variant.status != "ok" or variant.profile is None else variant.profile.peak_rss_mib


def _memory_x(variant: Variant, basis: str) -> float | None:
    if basis == "latency":
        return None if variant.latency_ms is None else variant.latency_ms.p50
    return None if variant.size_bytes is None else variant.size_bytes / 1e6
