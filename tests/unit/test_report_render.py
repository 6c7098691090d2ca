"""Each renderer shows what a reader needs, and nothing from the report can break its format."""

from __future__ import annotations

import dataclasses
import html
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest

from farm.errors import BadInput
from farm.job.codec import decode
from farm.report import FORMATS, Report, render
from farm.report._format import milliseconds, speed_lines
from farm.report.model import SYNTHETIC_WARNING
from farm.report.schema import validate
from farm.report.table import WIDTH
from tests.unit.report_sample import ARM64_LOG_TAIL, EXPECTED_JUNIT, GPU_REASON, sample_report_dict

SCRIPT = "<script>alert('x')</script>"


def _report(**changes: Any) -> Report:
    return decode(Report, sample_report_dict(**changes))


def _hostile_report() -> Report:
    """Reasons, errors and log tails as a tool could write them: markup, pipes, backticks, control characters."""
    document = sample_report_dict()
    document["targets"][3]["reason"] = f"{SCRIPT} | `x` & more"
    document["targets"][0]["variants"][6]["error"] = f"ConvInteger {SCRIPT} | bad"
    document["targets"][2]["log_tail"] = "\x1b[31mSegmentation fault\x1b[0m\x00\x07 </pre> ```\r\nend\n"
    document["warnings"].append(SCRIPT)
    return decode(Report, document)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_text_ending_in_one_newline(fmt: str) -> None:
    text = render(_report(), fmt)
    assert text.endswith("\n") and not text.endswith("\n\n")


@pytest.mark.parametrize("fmt", FORMATS)
def test_sparse_results_render_too(fmt: str) -> None:
    document = sample_report_dict()
    document["targets"][1]["variants"] = []  # ok, yet nothing to show
    bare = document["targets"][0]["variants"][0]
    bare.update(latency_ms=None, accuracy=None, size_bytes=None, within_tolerance=None, timing="none")
    document["targets"][2].update(reason=None, exit_code=None, log_tail=None, variants=[])
    document["targets"][3]["reason"] = None
    text = render(decode(Report, document), fmt)
    assert "x86-avx512-vnni" in text


def test_unknown_format_is_bad_input_naming_the_valid_ones() -> None:
    with pytest.raises(BadInput) as caught:
        render(_report(), "pdf")
    message = str(caught.value)
    assert "'pdf'" in message
    assert all(fmt in message for fmt in ("table", "json", "markdown", "html", "junit"))


def test_json_is_the_report_itself() -> None:
    document = sample_report_dict()
    assert json.loads(render(decode(Report, document), "json")) == document


# --- table -------------------------------------------------------------------------------------------------------


def test_table_fits_in_100_columns_with_long_reasons_and_names() -> None:
    document = sample_report_dict(synthetic=True)
    long_reason = "the host has no NVIDIA container runtime registered with the Docker engine " * 5
    document["targets"][3]["reason"] = long_reason
    document["targets"][2]["reason"] = "killed " + "x" * 150  # one unbreakable word
    document["targets"][0]["recommendation_reason"] = long_reason
    document["targets"][1]["warnings"] = [long_reason]
    document["targets"][1]["name"] = "x86-avx512-vnni-sapphire-rapids-long-name"
    document["targets"][0]["variants"][6]["error"] = long_reason
    text = render(decode(Report, document), "table")
    widest = max(text.splitlines(), key=len)
    assert len(widest) <= WIDTH, widest


def test_table_rows_marks_and_notes() -> None:
    text = render(_report(), "table")
    lines = text.splitlines()
    assert any(re.search(r"u8s8-qdq\+x64quantprecision ◀\s+ok\s+0\.9995", line) for line in lines)
    assert any(re.search(r"optimized ◀\s+ok", line) for line in lines)
    assert "3842*" in text  # emulated timing, marked
    assert "1.71" in text and "1.71*" not in text  # native timing, unmarked
    assert "* emulated under QEMU: not comparable" in text
    assert any(line.startswith("gpu-s8s8") and GPU_REASON.split(" and")[0] in line for line in lines)
    assert any("FAILED" in line for line in lines)
    assert "exit 139" in text
    assert "out-tol" in text
    assert "  x86-avx2: recommend u8s8-qdq+x64quantprecision: timings under QEMU" in text
    assert "  gpu-s8s8: skipped: needs an NVIDIA GPU" in text
    assert "WARNING" not in text


def test_table_warns_prominently_about_synthetic_inputs() -> None:
    document = sample_report_dict(synthetic=True)
    document["warnings"].append(SYNTHETIC_WARNING)  # as farm.inputs.data adds it to a synthetic run's report
    text = render(decode(Report, document), "table")
    lines = text.splitlines()
    assert lines[0] == "!" * WIDTH
    assert lines[1].startswith("!! WARNING: inputs are synthetic")
    # Said once, in the banner, in the one wording farm.inputs.data gives it.
    assert " ".join(w for w in text.split() if w != "!!").count("accuracy figures may be meaningless") == 1


def test_table_of_an_empty_report() -> None:
    document = sample_report_dict()
    document["targets"] = []
    assert "Recommendations:" in render(decode(Report, document), "table")


# --- markdown ----------------------------------------------------------------------------------------------------


def test_markdown_has_a_table_per_target_and_the_recommendations() -> None:
    text = render(_report(), "markdown")
    assert text.startswith("# farm report: `models/paddle-cnn.onnx`\n")
    for heading in (
        "## x86-avx2 (emulated, Haswell, linux/amd64)",
        "## x86-avx512-vnni (native, linux/amd64)",
        "## arm64 (emulated, cortex-a72, linux/arm64)",
        "## gpu-s8s8 (unavailable, linux/amd64)",
    ):
        assert heading in text
    assert text.count("| variant | status |") == 3  # the skipped target has no variants to tabulate
    assert "**Recommended: `u8s8-qdq+x64quantprecision`**" in text
    assert "**Recommended: `optimized`**" in text
    assert "**skipped: needs an NVIDIA GPU and container runtime**" in text
    assert "3842\\*" in text
    assert "Segmentation fault" in text and "<details>" in text
    assert "[!WARNING]" not in text
    assert "[!WARNING]" in render(_report(synthetic=True), "markdown")


def test_markdown_rows_keep_their_column_count_whatever_the_text() -> None:
    text = render(_hostile_report(), "markdown")
    assert SCRIPT not in text
    for table in re.findall(r"(?:^\|.*\|$\n?)+", text, flags=re.M):
        rows = table.strip().splitlines()
        counts = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
        assert len(counts) == 1, rows


# --- html --------------------------------------------------------------------------------------------------------


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [value or "" for name, value in attrs if name in ("src", "href")]


def test_html_is_self_contained_with_matrix_and_charts() -> None:
    text = render(_report(), "html")
    parser = _Collector()
    parser.feed(text)
    assert "script" not in parser.tags
    assert parser.urls == []  # no external stylesheet, script, image or font
    # Latency for the 3 targets that ran, one cosine chart, and for the one natively timed target the trade-off
    # (matplotlib) and its speedups; the emulated target's timings make no trade-off.
    assert parser.tags.count("svg") == 6
    assert text.count('class="plot tradeoff ') == 1
    assert 'class="matrix"' in text
    for cell in ('class="ok rec"', 'class="out-of-tolerance"', 'class="failed"', 'class="skipped note"'):
        assert cell in text
    assert "url(#latency-0-hatch)" in text  # emulated bars are hatched
    assert "not comparable" in text
    assert "tolerance 0.99" in text
    assert GPU_REASON in text
    assert ARM64_LOG_TAIL.splitlines()[-1] in text


def test_html_charts_are_well_formed_svg() -> None:
    text = render(_report(), "html")
    charts = re.findall(r"<svg.*?</svg>", text, flags=re.S)
    # A page whose charts did not render must fail here, not pass over an empty list.
    assert len(charts) == 6, f"{len(charts)} SVG charts rendered"
    for svg in charts:
        root = ET.fromstring(svg)
        drawn = [e for e in root.iter() if e.tag.rsplit("}", 1)[-1] in ("rect", "path", "line", "polyline", "circle")]
        assert drawn, f"an SVG chart with nothing drawn in it: {svg[:200]}"


def test_html_escapes_every_text_from_the_report() -> None:
    text = render(_hostile_report(), "html")
    assert SCRIPT not in text
    assert "&lt;script&gt;" in text
    assert "\x1b" not in text and "\x00" not in text
    assert "</pre> ```" not in text
    assert "script" not in _tags(text)


def test_html_warns_about_synthetic_inputs() -> None:
    assert 'class="banner"' not in render(_report(), "html")
    assert 'class="banner"' in render(_report(synthetic=True), "html")


def _tags(text: str) -> list[str]:
    parser = _Collector()
    parser.feed(text)
    return parser.tags


# --- junit -------------------------------------------------------------------------------------------------------


def test_junit_counts_failures_errors_and_skips() -> None:
    root = ET.fromstring(render(_report(), "junit"))
    assert root.tag == "testsuites"
    assert {key: int(root.get(key, "-1")) for key in EXPECTED_JUNIT} == EXPECTED_JUNIT
    assert len(root.findall(".//testcase")) == EXPECTED_JUNIT["tests"]
    assert len(root.findall(".//failure")) == EXPECTED_JUNIT["failures"]
    assert len(root.findall(".//error")) == EXPECTED_JUNIT["errors"]
    assert len(root.findall(".//skipped")) == EXPECTED_JUNIT["skipped"]
    assert [suite.get("name") for suite in root.findall("testsuite")] == [
        "x86-avx2",
        "x86-avx512-vnni",
        "arm64",
        "gpu-s8s8",
    ]


def test_junit_cases_carry_the_reasons() -> None:
    root = ET.fromstring(render(_report(), "junit"))
    avx2 = root.find("testsuite[@name='x86-avx2']")
    assert avx2 is not None
    drift = avx2.find("testcase[@name='u8s8-qdq']/failure")
    assert drift is not None and drift.get("type") == "out-of-tolerance"
    assert "cosine 0.9660 < 0.99" in (drift.get("message") or "")
    crash = root.find("testsuite[@name='arm64']/testcase[@name='target']/error")
    assert crash is not None and "exit code 139" in (crash.get("message") or "")
    assert crash.text is not None and "Segmentation fault" in crash.text
    skipped = root.find("testsuite[@name='gpu-s8s8']/testcase[@name='target']/skipped")
    assert skipped is not None and skipped.get("message") == GPU_REASON
    properties = {p.get("name"): p.get("value") for p in avx2.iter("property")}
    assert properties["recommended"] == "u8s8-qdq+x64quantprecision"


def test_junit_stays_parseable_with_control_characters_and_markup() -> None:
    root = ET.fromstring(render(_hostile_report(), "junit"))
    crash = root.find(".//testcase[@name='target']/error")
    assert crash is not None and crash.text is not None
    assert "Segmentation fault" in crash.text and "\x1b" not in crash.text
    skipped = root.find("testsuite[@name='gpu-s8s8']/testcase/skipped")
    assert skipped is not None and SCRIPT in (skipped.get("message") or "")


def _real_model_report() -> Report:
    """The sample with what real exports bring: a second output that int8 leaves alone, a variant that drifted on
    its first output, and variants that quantized nothing because the compute sits in If branches."""
    from tests.unit.report_sample import quantization

    document = sample_report_dict()
    vnni = document["targets"][1]
    for entry in vnni["variants"]:
        accuracy = entry["accuracy"]
        if accuracy is None:
            continue
        accuracy["outputs"] = [
            dict(accuracy["outputs"][0], name="probs"),
            {"name": "state", "counted": True, "cosine": 0.99998, "max_abs": 0.001, "top1_agreement": None},
        ]
        accuracy["worst_output"] = "probs"
    drifted = vnni["variants"][2]  # s8s8-qdq, cosine 0.9966
    drifted["accuracy"]["top1_agreement"] = drifted["accuracy"]["outputs"][0]["top1_agreement"] = 0.9
    drifted["within_tolerance"] = False
    why = "not quantized: all 4 quantizable nodes sit inside If/Loop/Scan bodies, which this quantizer does not enter"
    for name in ("s8s8-qdq-pc", "u8s8-qdq-pc"):
        vnni["variants"].append(
            {
                "name": name,
                "status": "skipped",
                "error": why,
                "size_bytes": 9000,
                "latency_ms": None,
                "timing": "none",
                "accuracy": None,
                "within_tolerance": None,
                "quantization": quantization(name, 0, 4),
            }
        )
    return decode(Report, document)


def test_every_format_names_the_output_that_drifted_and_what_quantized_nothing() -> None:
    report = _real_model_report()
    table = render(report, "table")
    assert "drifted: probs (cosine 0.9966," in table  # wrapped to the column
    assert table.count("not-q") >= 2 and "(the same reason as above)" in table
    assert max(len(line) for line in table.splitlines()) <= WIDTH
    markdown = render(report, "markdown")
    assert "| per output | probs | state |" in markdown and "**0.9966 (top-1 0.900)**" in markdown
    assert "not-q: not quantized: all 4 quantizable nodes" in markdown and "| 0/4 |" in markdown
    html = render(report, "html")
    assert "<strong>0.9966 (top-1 0.900)</strong>" in html and "not quantized" in html
    junit = ET.fromstring(render(report, "junit"))
    case = junit.find(".//testsuite[@name='x86-avx512-vnni']/testcase[@name='s8s8-qdq']")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None and "drifted: probs" in failure.get("message", "")
    skipped = junit.find(".//testsuite[@name='x86-avx512-vnni']/testcase[@name='u8s8-qdq-pc']/skipped")
    assert skipped is not None and skipped.get("message", "").startswith("not quantized")


def _speed_report() -> Report:
    """The sample with farm's speed fields: the emulated x86-avx2 target without evidence, its variants carrying an
    untrusted estimate, and the native one measured."""
    document = sample_report_dict()
    avx2, native = document["targets"][0], document["targets"][1]
    avx2.update(speed_evidence="none", int8_if_needed="u8u8-qdq")
    avx2["estimate"] = {"cost_model": "haswell", "trusted": False, "error_p90": None, "basis": "instruction counts"}
    for entry in avx2["variants"]:
        if entry["latency_ms"] is not None:
            entry["timing"] = "estimated"
            entry["latency_ms"]["rounds"] = []
    native.update(speed_evidence="measured", int8_if_needed="u8u8-qdq")
    return decode(Report, document)


def test_every_format_shows_speed_evidence_int8_if_needed_and_how_to_measure() -> None:
    report = _speed_report()
    avx2 = report.targets[0]
    assert avx2.platform == "linux/amd64" and avx2.variants[0].latency_ms is not None
    estimated = "≈" + milliseconds(avx2.variants[0].latency_ms.p50)
    for fmt in ("table", "markdown", "html"):
        text = " ".join(html.unescape(render(report, fmt)).split())
        assert "speed evidence: none (no speed claim is made: the baseline is recommended)" in text, fmt
        assert "≈ estimate by cost model haswell (not validated on real hardware, so not evidence)" in text, fmt
        assert "speed evidence: measured (timed on the target's own CPU)" in text, fmt
        assert text.count("int8 if needed (for size or power): u8u8-qdq") == 2, fmt
        # Only the target without measured timings says how to get them.
        assert text.count("to measure speed on amd64: add a remote engine of that architecture") == 1, fmt
        assert estimated in text, fmt
    junit = ET.fromstring(render(report, "junit"))
    properties = {p.get("name"): p.get("value") for p in junit.iter("property")}
    assert properties["int8_if_needed"] == "u8u8-qdq"


def test_a_report_before_speed_evidence_renders_as_it_did() -> None:
    for fmt in ("table", "markdown", "html"):
        text = render(_report(), fmt)
        assert "speed evidence" not in text and "int8 if needed" not in text and "≈" not in text, fmt


def test_a_masked_target_is_told_to_time_a_cpu_of_its_tier() -> None:
    masked = dataclasses.replace(_speed_report().targets[0], mode="masked", speed_evidence="masked")
    lines = speed_lines(masked)
    assert lines[0] == "speed evidence: masked (timed on this host's CPU, masked to the tier); ≈ estimate by cost " + (
        "model haswell (not validated on real hardware, so not evidence)"
    )
    assert lines[-1].startswith("to measure speed on a CPU of the x86-avx2 tier (these milliseconds are this host's)")


def _stopped_report() -> Report:
    """The sample's native target timed adaptively: s8s8-qdq stopped as decided after 2 rounds, u8u8-qdq out of
    tolerance after 3."""
    document = sample_report_dict(run=True)
    document["run"]["settings"]["timing_mode"] = "adaptive"
    native = next(t for t in document["targets"] if t["name"] == "x86-avx512-vnni")
    for entry in native["variants"]:
        why = {"s8s8-qdq": ("decided", 2), "u8u8-qdq": ("out-of-tolerance", 3)}.get(entry["name"])
        if why is not None:
            entry["latency_ms"]["stopped"] = why[0]
            entry["latency_ms"]["rounds"] = entry["latency_ms"]["rounds"][: why[1]]
    return decode(Report, document)


def test_every_format_marks_a_variant_whose_timing_stopped_early_and_says_why() -> None:
    report = _stopped_report()
    assert report.run is not None and report.run.settings.timing_mode == "adaptive"
    decided = "timing stopped after 2 rounds: a round faster and a round slower than each baseline"
    drifted = "timing stopped after 3 rounds: out of tolerance, so timed only for its p50"
    legend = "§ timing stopped early (farm matrix --timing adaptive)"
    for fmt in ("table", "markdown", "html"):
        text = " ".join(html.unescape(render(report, fmt)).split())
        assert "3.12§" in text and "3.84§" in text and "2.91§" not in text and "1.71§" not in text, fmt
        assert legend in text, fmt
        assert decided in text and drifted in text, fmt
    assert max(len(line) for line in render(report, "table").splitlines()) <= WIDTH
    junit = render(report, "junit")
    assert decided in junit and drifted in junit
    # A report without a stopped variant (every fixed one) has neither mark nor legend.
    for fmt in ("table", "markdown", "html"):
        assert "§" not in render(_report(), fmt), fmt


def test_every_format_says_whether_the_int8_artifacts_were_made_or_reused() -> None:
    document = sample_report_dict(run=True)
    key = "ab12" * 16
    document["run"]["prepare"] = [
        {
            "toolchain": "onnxruntime==1.31.1 onnx==1.20.1 ml_dtypes==0.6.0 sympy==1.14.0",
            "targets": ["x86-avx2", "arm64"],
            "artifacts": "reused",
            "maker": "x86-avx2",
            "key": key,
            "cached": True,
        },
        {
            "toolchain": "onnxruntime==1.17.3 onnx==1.15.0",
            "targets": ["x86-ort117"],
            "artifacts": "made",
            "maker": "x86-ort117",
            "key": "cd34" * 16,
            "cached": True,
        },
    ]
    validate(document)
    report = decode(Report, document)
    said = (
        "int8 artifacts: reused from the artifact cache (made in x86-avx2) for x86-avx2, arm64, key ab12ab12ab12; "
        "made in x86-ort117 for x86-ort117, key cd34cd34cd34"
    )
    for fmt in ("table", "markdown", "html"):
        assert said in " ".join(html.unescape(render(report, fmt)).split()), fmt
    # A report from before the cache says nothing of it.
    for fmt in ("table", "markdown", "html"):
        assert "int8 artifacts:" not in render(_report(), fmt), fmt


def test_a_variant_s_divergence_is_in_the_schema_and_in_the_table_and_markdown() -> None:
    data = sample_report_dict()
    avx2 = next(t for t in data["targets"] if t["name"] == "x86-avx2")
    drifted = next(v for v in avx2["variants"] if v["name"] == "u8s8-qdq")
    node = {"node": "conv2", "op": "Conv", "tensor": "r2", "sqnr_db": 0.04, "cosine": 0.01, "local_db": 0.04}
    after = {**node, "node": "conv3", "tensor": "r3", "sqnr_db": 3.4, "cosine": 0.79, "local_db": 40.4}
    drifted["divergence"] = {
        "first_node": "conv2",
        "op": "Conv",
        "sqnr_db": 0.04,
        "threshold_db": 30.0,
        "worst": [node, after],
        "reproduced": True,
        "seconds": 0.8,
    }
    validate(data)
    report = decode(Report, data)
    note = "leaves fp32 at conv2 (Conv, 0.0 dB); worst alone: conv2 0.0 dB, conv3 40.4 dB"
    for fmt in ("table", "markdown"):
        assert note in " ".join(render(report, fmt).split()), fmt
    assert "conv2" in render(report, "html")
    drifted["divergence"]["worst"] = [{**node, "extra": 1}]
    with pytest.raises(Exception, match="extra"):
        validate(data)
