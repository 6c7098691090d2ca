"""The deployment profile (Variant.profile) where people look: the table, Markdown, JUnit and HTML; and a report
without profiles renders as it did before profiles existed."""

from __future__ import annotations

import dataclasses
import html
import re
import xml.etree.ElementTree as ET

from farm.job.codec import decode
from farm.job.report import Profile, ThreadLatency
from farm.report import Report, render
from farm.report import _format as fmt
from farm.report.table import WIDTH
from tests.unit.report_sample import sample_report_dict

# The sample's table as farm rendered it before profiles (e5054f0): its header, rule and first rows.
_OLD_TABLE_HEAD = """\
target           variant                           status   cosine   top1    acc  p50 ms      size
---------------  --------------------------------  -------  ------  -----  -----  ------  --------
x86-avx2         fp32                              ok       1.0000  1.000  0.972   3842*    1.2 MB
(emulated)       optimized                         ok       1.0000  1.000  0.972   3702*    1.2 MB
"""


def _native_profile(index: int) -> Profile:
    """A native variant's profile: fp32 (index 0) the largest, two thread counts of which the second oversubscribed."""
    return Profile(
        memory="process",
        peak_rss_mib=48.0 - 4 * index,
        session_threads=1,
        session_create_ms=31.5 + index,
        first_run_ms=4.25 + index,
        timing="measured",
        threads=(
            ThreadLatency(threads=1, p50_ms=2.5 + index),
            ThreadLatency(threads=4, p50_ms=1.75 + index, oversubscribed=True),
        ),
    )


def _emulated_profile(index: int) -> Profile:
    return Profile(memory="guest-heap", peak_rss_mib=12.0 + index, rss_upper_bound_mib=250.0 + index, session_threads=1)


def _profiled(report: Report) -> Report:
    """The sample with profiles on every ok variant of x86-avx2 (emulated: guest heap) and x86-avx512-vnni (native);
    arm64's variants stay unprofiled."""
    makers = {"x86-avx2": _emulated_profile, "x86-avx512-vnni": _native_profile}
    targets = []
    for target in report.targets:
        make = makers.get(target.name)
        variants = tuple(
            dataclasses.replace(v, profile=make(i)) if make is not None and v.status == "ok" else v
            for i, v in enumerate(target.variants)
        )
        targets.append(dataclasses.replace(target, variants=variants))
    return dataclasses.replace(report, targets=tuple(targets))


def _report() -> Report:
    return decode(Report, sample_report_dict(run=True))


# --- a report without profiles -----------------------------------------------------------------------------------


def test_an_old_reports_table_is_unchanged() -> None:
    text = render(decode(Report, sample_report_dict()), "table")
    assert _OLD_TABLE_HEAD in text
    assert "peak" not in text and fmt.GUEST_HEAP_MARK not in text


def test_no_format_mentions_a_profile_the_report_lacks() -> None:
    report = _report()
    for name in ("table", "markdown", "html"):
        text = html.unescape(render(report, name))
        for absent in (fmt.PEAK_HEADER, fmt.SESSION_CREATE, fmt.FIRST_RUN, fmt.GUEST_HEAP_MARK, "memory:"):
            assert absent not in text, (name, absent)
    assert 'class="plot memory' not in render(report, "html")
    junit = ET.fromstring(render(report, "junit"))
    assert junit.findall(".//testcase/properties") == []


# --- table -------------------------------------------------------------------------------------------------------


def _row(text: str, variant: str, after: str) -> str:
    """The table line of ``variant`` in the block that starts at the target named ``after``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(after))
    return next(line for line in lines[start:] if re.match(rf"\S*\s+{re.escape(variant)}\s", line))


def test_the_table_shows_peak_memory_beside_size_and_marks_the_guest_heap() -> None:
    text = render(_profiled(_report()), "table")
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("target"))
    assert lines[header - 1].rstrip().endswith("peak") and lines[header].rstrip().endswith("size   MiB")
    assert _row(text, "fp32", "x86-avx512-vnni").split()[-3:] == ["1.2", "MB", "48"]
    assert _row(text, "u8u8-qdq", "x86-avx512-vnni").split()[-1] == "28"  # index 5: 48 - 20
    assert _row(text, "fp32", "x86-avx2").split()[-1] == "12" + fmt.GUEST_HEAP_MARK
    assert _row(text, "fp32", "arm64").split()[-1] == fmt.NONE  # not profiled
    assert _row(text, "u8s8-dynamic", "x86-avx512-vnni").split()[-1] == fmt.NONE  # failed: no profile
    assert f"{fmt.GUEST_HEAP_MARK} guest heap under QEMU" in text
    assert f"{fmt.PEAK_HEADER}: peak resident growth of a process that opened only this variant" in text
    assert max(len(line) for line in lines) <= WIDTH


def test_a_table_of_native_profiles_only_has_no_guest_heap_note() -> None:
    report = _profiled(_report())
    native = dataclasses.replace(report, targets=(report.targets[1],))
    text = render(native, "table")
    assert fmt.GUEST_HEAP_MARK not in text and "peak resident growth" in text


# --- markdown and junit ------------------------------------------------------------------------------------------


def test_markdown_carries_peak_memory_start_up_and_threads() -> None:
    text = render(_profiled(_report()), "markdown")
    assert f"| size | {fmt.PEAK_HEADER} | {fmt.SESSION_CREATE} | {fmt.FIRST_RUN} |" in text
    assert re.search(r"\| `fp32` \|.*\| 1\.2 MB \| 48 \| 31\.5 \| 4\.25 \|", text)
    # Under emulation no start-up times: blank cells, as Markdown shows every figure not measured.
    assert f"| 1.2 MB | 12{fmt.GUEST_HEAP_MARK} |  |  |" in text
    assert "| p50 ms by threads | 1 thread | 4 threads (oversubscribed) |" in text
    assert "| `s8s8-qdq` | 4.50 | 3.75 |" in text
    assert "memory: peak resident growth of a process that opened only this variant" in text
    assert "upper bound (the QEMU process's resident growth) up to 258 MiB" in text
    for table in re.findall(r"(?:^\|.*\|$\n?)+", text, flags=re.M):
        rows = table.strip().splitlines()
        assert len({len(re.findall(r"(?<!\\)\|", row)) for row in rows}) == 1, rows


def test_junit_carries_the_profile_as_testcase_properties() -> None:
    root = ET.fromstring(render(_profiled(_report()), "junit"))
    case = root.find("testsuite[@name='x86-avx512-vnni']/testcase[@name='optimized']")
    assert case is not None
    properties = {p.get("name"): p.get("value") for p in case.findall("properties/property")}
    assert properties["peak_rss_mib"] == "44.0" and properties["memory"] == "process"
    assert properties["session_create_ms"] == "32.5" and properties["first_run_ms"] == "5.25"
    assert properties["p50_ms_threads_1"] == "3.5" and properties["p50_ms_threads_4"] == "2.75"
    assert properties["oversubscribed_threads_4"] == "true" and "oversubscribed_threads_1" not in properties
    assert "peak_rss_mib=44.0 (process) session_create_ms=32.5 first_run_ms=5.25" in (case.findtext("system-out") or "")
    emulated = root.find("testsuite[@name='x86-avx2']/testcase[@name='fp32']")
    assert emulated is not None
    figures = {p.get("name"): p.get("value") for p in emulated.findall("properties/property")}
    assert figures["memory"] == "guest-heap" and figures["rss_upper_bound_mib"] == "250.0"
    assert "session_create_ms" not in figures  # no times under emulation
    unprofiled = root.find("testsuite[@name='arm64']/testcase[@name='fp32']")
    assert unprofiled is not None and unprofiled.find("properties") is None


# --- html --------------------------------------------------------------------------------------------------------


def test_html_plots_memory_per_profiled_target_and_shows_the_profile() -> None:
    text = render(_profiled(_report()), "html")
    plots = re.findall(r'<svg class="plot memory .*?</svg>', text, flags=re.S)
    assert len(plots) == 2  # x86-avx512-vnni and x86-avx2; arm64 was not profiled
    native = next(p for p in plots if "x86-avx512-vnni" in p)
    assert "memory against latency" in native and "p50 ms at --threads" in native
    assert all(name in native for name in ("fp32", "optimized (recommended)", "u8u8-qdq"))
    emulated = next(p for p in plots if "x86-avx2" in p)
    assert "memory against size (no comparable times)" in emulated and "guest heap MiB" in emulated
    for svg in plots:
        ET.fromstring(svg)
    plain = html.unescape(text)
    assert "<th>p50 ms, 1 thread</th><th>p50 ms, 4 threads (oversubscribed)</th>" in plain
    assert "<th>session create ms</th><th>first run ms</th>" in plain
    assert '<th class="target">fp32</th><td>48</td><td>31.5</td><td>4.25</td><td>2.50</td><td>1.75</td>' in plain
    assert f'<th class="target">fp32</th><td>12{fmt.GUEST_HEAP_MARK}</td><td>250</td><td>—</td>' in plain
    assert fmt.MEMORY_BASIS_TEXT["process"] in plain and fmt.MEMORY_BASIS_TEXT["guest-heap"] in plain
    assert fmt.OVERSUBSCRIBED_NOTE in plain


def test_html_says_why_there_is_no_memory_plot() -> None:
    report = _report()
    fp32 = dataclasses.replace(report.targets[1].variants[0], profile=_native_profile(0))
    one = dataclasses.replace(report.targets[1], variants=(fp32,))
    text = render(dataclasses.replace(report, targets=(one,)), "html")
    assert 'class="plot memory' not in text
    assert "No target has the peak memory of two variants or more" in text


def test_a_profiled_table_fits_in_100_columns_with_long_names() -> None:
    report = _profiled(_report())
    long = dataclasses.replace(report.targets[1], name="x86-avx512-vnni-sapphire-rapids-long-name")
    text = render(dataclasses.replace(report, targets=(report.targets[0], long)), "table")
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    assert "x86-avx512-vnni-sap…" in text
