"""Number and text formatting shared by the renderers, so every format shows the same figures the same way."""

from __future__ import annotations

import re
from dataclasses import dataclass

from farm.job.report import MemoryBasis, Profile, Timing
from farm.job.types import StopReason
from farm.report.model import SYNTHETIC_WARNING, Outcome, Report, TargetResult, Variant

NONE = "—"
EMULATED_MARK = "*"
EMULATED_NOTE = "emulated under QEMU: not comparable with native timings or across targets"
MASKED_MARK = "†"
MASKED_NOTE = (
    "masked: this host's CPU running the tier's kernels (CPUID masked to the tier), so int8 against fp32 on that "
    "target is a real comparison, but the milliseconds are not those of a CPU of the tier"
)
ESTIMATED_MARK = "≈"
ESTIMATED_NOTE = (
    "estimated: instructions counted under QEMU, turned into milliseconds by a per-CPU cost model; a speed claim "
    "rests on it only where farm validated the estimate against real hardware"
)
# The timing labels that need a footnote, with their mark; an estimate's mark goes before the figure, like ~.
TIMING_NOTES = {
    "emulated": (EMULATED_MARK, EMULATED_NOTE),
    "masked": (MASKED_MARK, MASKED_NOTE),
    "estimated": (ESTIMATED_MARK, ESTIMATED_NOTE),
}
# A latency whose adaptive timing stopped before the target's last round (Latency.stopped): its own mark, after the
# figure, and one line of why beside the variant.
STOPPED_MARK = "§"
STOPPED_NOTE = (
    "timing stopped early (farm matrix --timing adaptive): fewer alternating rounds than the target's other variants, "
    "so it makes no speed claim either way"
)
STOP_TEXT: dict[StopReason, str] = {
    "decided": "a round faster and a round slower than each baseline, so within noise of them whatever came next",
    "out-of-tolerance": "out of tolerance, so timed only for its p50",
}
# What each target's speed claims rest on (TargetResult.speed_evidence), as the reports say it.
EVIDENCE_TEXT = {
    "measured": "measured (timed on the target's own CPU)",
    "masked": "masked (timed on this host's CPU, masked to the tier)",
    "estimated": "estimated (instruction counts and a cost model validated against real hardware)",
    "none": "none (no speed claim is made: the baseline is recommended)",
}
OUTCOME_LABEL: dict[Outcome, str] = {
    "ok": "ok",
    "out-of-tolerance": "out-tol",
    "not-quantized": "not-q",
    "failed": "failed",
    "skipped": "skipped",
}
# XML 1.0 forbids these outright, and a container log tail is full of them (ANSI colours, carriage returns).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def clean(text: str) -> str:
    """Text safe to put in XML or HTML: ANSI escapes and control characters removed, line ends unified."""
    text = _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text)


def listed_warnings(report: Report) -> tuple[str, ...]:
    """The report's warnings, less the synthetic-data one when the banner already says it."""
    return tuple(w for w in report.warnings if not (report.data.synthetic and w == SYNTHETIC_WARNING))


def one_line(text: str) -> str:
    return " ".join(clean(text).split())


_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]|#~!])")


def markdown_text(text: str) -> str:
    """Free text for a Markdown paragraph or table cell: one line, markup characters escaped (no table break, link,
    image, emphasis or HTML survives)."""
    text = one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def ratio(value: float | None, digits: int = 3) -> str:
    return NONE if value is None else f"{value:.{digits}f}"


def cosine(variant: Variant) -> str:
    return NONE if variant.accuracy is None else f"{variant.accuracy.cosine:.4f}"


def top1(variant: Variant) -> str:
    return NONE if variant.accuracy is None else ratio(variant.accuracy.top1_agreement)


def accuracy(variant: Variant) -> str:
    return NONE if variant.accuracy is None else ratio(variant.accuracy.accuracy)


def milliseconds(value: float) -> str:
    # Three significant figures or so: latency noise makes more digits meaningless.
    if value < 1:
        return f"{value:.3g}"
    if value < 10:
        return f"{value:.2f}"
    if value < 1000:
        return f"{value:.1f}"
    return f"{value:.0f}"


def marked(variant: Variant, value: float) -> str:
    """``value`` ms of ``variant`` with its timing's mark: ``≈1.23`` estimated, ``1.23*`` emulated, ``1.23†`` masked."""
    return timed(variant.timing, value)


def timed(timing: Timing, value: float) -> str:
    """``value`` ms with the mark of what it rests on (an estimate's mark goes before the figure, like ~)."""
    text = milliseconds(value)
    mark = TIMING_NOTES[timing][0] if timing in TIMING_NOTES else ""
    return mark + text if timing == "estimated" else text + mark


def p50(variant: Variant) -> str:
    """The variant's p50 with its timing's mark, and ``§`` when its timing stopped early."""
    latency = variant.latency_ms
    if latency is None:
        return NONE
    return marked(variant, latency.p50) + (STOPPED_MARK if latency.stopped is not None else "")


def stopped(variant: Variant) -> str | None:
    """``timing stopped after 3 rounds: out of tolerance, ...``, for a variant whose adaptive timing stopped early."""
    latency = variant.latency_ms
    if latency is None or latency.stopped is None:
        return None
    count = len(latency.rounds)
    return f"timing stopped after {count} round{'s' if count != 1 else ''}: {STOP_TEXT[latency.stopped]}"


def output_names(target: TargetResult) -> list[str]:
    """The outputs the target's variants report figures for, in the model's order."""
    names: dict[str, None] = {}
    for variant in target.variants:
        for output in () if variant.accuracy is None else variant.accuracy.outputs:
            names.setdefault(output.name)
    return list(names)


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputCell:
    """One output's figures for one variant, as every format shows them; ``drifted`` marks the one to look at."""

    text: str
    drifted: bool


def per_output(target: TargetResult) -> tuple[list[str], list[tuple[str, list[OutputCell]]]]:
    """``(output names, [(variant, cells)])`` for a target whose variants report more than one output; else empty."""
    names = output_names(target)
    if len(names) < 2:
        return [], []
    rows = []
    for variant in target.variants:
        if variant.accuracy is None:
            continue
        figures = {o.name: o for o in variant.accuracy.outputs}
        cells = []
        for name in names:
            output = figures.get(name)
            text = NONE if output is None or output.cosine is None else f"{output.cosine:.4f}"
            if output is not None and output.top1_agreement is not None:
                text += f" (top-1 {output.top1_agreement:.3f})"
            drifted = name == variant.accuracy.worst_output and worst_output(variant) is not None
            cells.append(OutputCell(text=text, drifted=drifted))
        rows.append((variant.name, cells))
    return names, rows


def worst_output(variant: Variant) -> str | None:
    """``drifted: probs (cosine 0.9993, top-1 0.875)``: the output that took a variant out of tolerance, when its
    verdict rests on several outputs."""
    accuracy = variant.accuracy
    if accuracy is None or accuracy.worst_output is None or sum(o.counted for o in accuracy.outputs) < 2:
        return None
    if variant.within_tolerance is not False or accuracy.metric is not None:
        return None
    output = next((o for o in accuracy.outputs if o.name == accuracy.worst_output), None)
    if output is None:
        return None
    if output.cosine is None:
        return f"drifted: {output.name} (its shape changed against fp32)"
    top1 = "" if output.top1_agreement is None else f", top-1 {output.top1_agreement:.3f}"
    return f"drifted: {output.name} (cosine {output.cosine:.4f}{top1})"


def divergence_note(variant: Variant) -> str | None:
    """``leaves fp32 at conv2 (Conv, 0.0 dB); worst alone: conv2 0.0 dB, conv3 40.4 dB``: where an out-of-tolerance
    variant drifts (``--divergence``), when it was looked for."""
    found = variant.divergence
    if found is None:
        return None
    where = (
        f"leaves fp32 at {found.first_node} ({found.op}, {found.sqnr_db:.1f} dB)"
        if found.first_node is not None and found.sqnr_db is not None
        else f"no node below {found.threshold_db:g} dB: the loss builds up"
    )
    worst = ", ".join(f"{n.node} {n.local_db:.1f} dB" for n in found.worst if n.local_db is not None)
    return where + (f"; worst alone: {worst}" if worst else "")


def quantized_nodes(variant: Variant) -> str:
    """``3/12``: quantized of quantizable nodes, or — for fp32 and optimized."""
    nodes = None if variant.quantization is None else variant.quantization.nodes
    return NONE if nodes is None else f"{nodes.quantized}/{nodes.quantizable}"


def partly_quantized(variant: Variant) -> str | None:
    nodes = None if variant.quantization is None else variant.quantization.nodes
    if nodes is None or nodes.quantized in (0, nodes.quantizable):
        return None
    return f"quantized {nodes.quantized} of {nodes.quantizable} nodes"


def metric_text(variant: Variant) -> str | None:
    metric = None if variant.accuracy is None else variant.accuracy.metric
    if metric is None:
        return None
    scores = ", ".join(f"{name} {value:.4g}" for name, value in metric.scores.items())
    return f"metric {'passed' if metric.passed else 'failed'}" + (f": {scores}" if scores else "")


def size(size_bytes: int | None) -> str:
    if size_bytes is None:
        return NONE
    value = float(size_bytes)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def target_heading(target: TargetResult) -> str:
    """``x86-avx2 (emulated, Haswell, linux/amd64)``, and where its result came from when --resume reused it."""
    details = [target.mode, *([target.cpu_model] if target.cpu_model else []), target.platform]
    if target.resumed_from:
        details.append(f"reused from the run of {target.resumed_from}")
    return f"{target.name} ({', '.join(details)})"


def prepare_text(report: Report) -> str | None:
    """One line on how each toolchain's int8 artifacts came about: made by a prepare job in this run, or reused
    from farm's artifact cache; None for a report that does not say."""
    stages = None if report.run is None else report.run.prepare
    if not stages:
        return None
    parts = []
    for stage in stages:
        how = {
            "made": f"made in {stage.maker}",
            "reused": f"reused from the artifact cache (made in {stage.maker})",
            "failed": f"not made (prepare failed in {stage.maker})",
        }[stage.artifacts]
        parts.append(f"{how} for {', '.join(stage.targets)}, key {stage.short_key}")
    return "int8 artifacts: " + "; ".join(parts)


def incomplete_text(report: Report) -> str | None:
    """The banner of a report whose run stopped early, or None when it finished."""
    if report.incomplete is None:
        return None
    return (
        f"INCOMPLETE: {report.incomplete}; the targets it did not finish are failed. "
        "Run farm matrix --resume with the same arguments to finish it"
    )


def target_summary(target: TargetResult) -> str:
    """One sentence a reader acts on: what to ship on this target, or why there is nothing to ship."""
    if target.status == "skipped":
        return f"skipped: {target.reason or 'no reason given'}"
    if target.status == "failed":
        code = "" if target.exit_code is None else f" (exit code {target.exit_code})"
        return f"failed{code}: {target.reason or 'no reason given'}"
    if target.recommended is None:
        because = f": {target.recommendation_reason}" if target.recommendation_reason else ""
        return f"no recommendation{because}"
    because = f": {target.recommendation_reason}" if target.recommendation_reason else ""
    return f"recommend {target.recommended}{because}"


def speed_lines(target: TargetResult) -> list[str]:
    """What the target's speed claims rest on, the int8 variant to ship if int8 is needed, and, without measured
    timings, how to get them: one line each, for a target that recorded them (reports before farm.report/2's
    ``speed_evidence`` did not)."""
    if target.status != "ok" or target.speed_evidence is None:
        return []
    evidence = EVIDENCE_TEXT[target.speed_evidence]
    if target.estimate is not None and target.speed_evidence != "estimated":
        trusted = "trusted" if target.estimate.trusted else "not validated on real hardware, so not evidence"
        evidence += f"; ≈ estimate by cost model {target.estimate.cost_model} ({trusted})"
    lines = [f"speed evidence: {evidence}"]
    if target.int8_if_needed is not None:
        lines.append(f"int8 if needed (for size or power): {target.int8_if_needed}")
    if target.speed_evidence != "measured":
        lines.append(how_to_measure(target))
    return lines


def how_to_measure(target: TargetResult) -> str:
    """The one line that says how to get measured timings for ``target``: a machine of its architecture."""
    arch = target.platform.rsplit("/", 1)[-1]
    if target.mode == "masked":
        return (
            f"to measure speed on a CPU of the {target.name} tier (these milliseconds are this host's): add a remote "
            "engine with such a CPU to targets.toml, with the tier's cpu_features, like avx2-box in the README "
            "(Targets on other machines)"
        )
    return (
        f"to measure speed on {arch}: add a remote engine of that architecture to targets.toml, e.g. "
        f'[targets.{arch}-box] platform = "{target.platform}" engine = "ssh://user@{arch}-box" '
        "(README: Targets on other machines)"
    )


def variant_names(report: Report) -> list[str]:
    """Every variant name in the report, in the order the targets first list them."""
    names: dict[str, None] = {}
    for target in report.targets:
        for variant in target.variants:
            names.setdefault(variant.name)
    return list(names)


def timing_notes(report: Report) -> list[tuple[str, str]]:
    """``(mark, note)`` for each timing label in the report that needs one."""
    latencies = [(v.timing, v.latency_ms) for t in report.targets for v in t.variants if v.latency_ms is not None]
    labels = {timing for timing, _ in latencies}
    notes = [note for label, note in TIMING_NOTES.items() if label in labels]
    if any(latency.stopped is not None for _, latency in latencies):
        notes.append((STOPPED_MARK, STOPPED_NOTE))
    return notes


def tolerance_text(report: Report) -> str:
    tolerance = report.tolerance
    if tolerance.metric is not None:
        text = f"--metric {tolerance.metric} decides (cosine and top-1 shown only)"
    else:
        text = f"cosine ≥ {tolerance.cosine}, top-1 agreement ≥ {tolerance.top1_agreement}"
    if tolerance.outputs is not None:
        text += f"; outputs counted: {', '.join(tolerance.outputs)}"
    return text


# --- the deployment profile (Variant.profile): one wording for every renderer ----------------------------------------

# A guest-heap figure is not the resident memory a native figure is: it carries its own mark, next in the footnote
# sequence after * and †, everywhere a peak figure is shown.
GUEST_HEAP_MARK = "‡"
MEMORY_BASIS_TEXT: dict[MemoryBasis, str] = {
    "process": "peak resident growth of a process that opened only this variant (after importing onnxruntime)",
    "guest-heap": (
        "guest heap under QEMU: the emulated process's resident memory is mostly QEMU's own, so the figure is the "
        "guest's malloc heap growth"
    ),
}
GUEST_HEAP_NOTE = MEMORY_BASIS_TEXT["guest-heap"] + "; the QEMU process's resident growth is its upper bound"
PEAK_HEADER = "peak MiB"
SESSION_CREATE = "session create ms"
FIRST_RUN = "first run ms"


def profiled(report: Report) -> bool:
    """Whether any variant carries a profile: a report without one renders exactly as before profiles existed."""
    return any(v.profile is not None for t in report.targets for v in t.variants)


def memory_notes(report: Report) -> list[tuple[str, str]]:
    """``(mark, note)`` for the peak memory figures in the report: what an unmarked one counts, and the guest-heap
    mark where emulated targets have one; none for a report without profiles."""
    bases = {v.profile.memory for t in report.targets for v in t.variants if v.profile is not None}
    notes = [(f"{PEAK_HEADER}:", MEMORY_BASIS_TEXT["process"])] if bases else []
    if "guest-heap" in bases:
        notes.append((GUEST_HEAP_MARK, GUEST_HEAP_NOTE))
    return notes


def mebibytes(value: float) -> str:
    # Memory figures move by a few percent between runs: whole MiB above 10 say all there is.
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def peak_memory(variant: Variant) -> str:
    """``45`` (the variant's own process), ``12‡`` (the guest heap under QEMU), or — when not measured."""
    profile = variant.profile
    if profile is None or profile.peak_rss_mib is None:
        return NONE
    mark = GUEST_HEAP_MARK if profile.memory == "guest-heap" else ""
    return mebibytes(profile.peak_rss_mib) + mark


def upper_bound(variant: Variant) -> str:
    """The QEMU process's resident growth of an emulated variant (its guest heap's upper bound), or —."""
    profile = variant.profile
    if profile is None or profile.rss_upper_bound_mib is None:
        return NONE
    return mebibytes(profile.rss_upper_bound_mib)


def profile_ms(profile: Profile | None, value: float | None) -> str:
    """A start-up time with its timing's mark (``12.3†`` masked), or — when not measured (e.g. under QEMU)."""
    return NONE if profile is None or value is None else timed(profile.timing, value)


def session_create(variant: Variant) -> str:
    profile = variant.profile
    return profile_ms(profile, None if profile is None else profile.session_create_ms)


def first_run(variant: Variant) -> str:
    profile = variant.profile
    return profile_ms(profile, None if profile is None else profile.first_run_ms)


def memory_basis_line(target: TargetResult) -> str | None:
    """One line saying what the target's peak figures count, or None when none of its variants was profiled."""
    profiles = [v.profile for v in target.variants if v.profile is not None]
    if not profiles:
        return None
    bases = dict.fromkeys(p.memory for p in profiles)
    line = "memory: " + "; ".join(MEMORY_BASIS_TEXT[basis] for basis in bases)
    bounds = [p.rss_upper_bound_mib for p in profiles if p.rss_upper_bound_mib is not None]
    if bounds:
        line += f"; upper bound (the QEMU process's resident growth) up to {mebibytes(max(bounds))} MiB"
    return line


def thread_counts(target: TargetResult) -> list[tuple[int, bool]]:
    """``(threads, oversubscribed)`` for each count the target's variants were timed at, in ascending order."""
    counts: dict[int, bool] = {}
    for variant in target.variants:
        for timed in () if variant.profile is None else variant.profile.threads:
            counts[timed.threads] = counts.get(timed.threads, False) or timed.oversubscribed
    return sorted(counts.items())


def thread_header(threads: int, oversubscribed: bool) -> str:
    """``2 threads``, or ``4 threads (oversubscribed)`` for more threads than the target's cores."""
    return f"{threads} thread{'s' if threads != 1 else ''}" + (" (oversubscribed)" if oversubscribed else "")


OVERSUBSCRIBED_NOTE = "oversubscribed: more threads than the cores the target's process may use, so the p50 says little"


def thread_p50(variant: Variant, threads: int) -> str:
    """The variant's p50 at ``threads`` (profile only), marked as its start-up times are, or —."""
    profile = variant.profile
    timed = None if profile is None else next((t for t in profile.threads if t.threads == threads), None)
    return NONE if timed is None else profile_ms(profile, timed.p50_ms)
