"""JUnit XML, so CI systems show the matrix as tests: one suite per target, one case per variant.

A variant that failed or drifted out of tolerance is a ``<failure>``; one that did not run is ``<skipped>``. A target
that did not run gets a single case named ``target``: ``<skipped>`` when it could not run here, ``<error>`` with the
log tail when it broke off.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from farm.job.report import Profile
from farm.report import _format as fmt
from farm.report.model import Report, TargetResult, Tolerance, Variant

TARGET_CASE = "target"
_COUNTED = {"failures": "failure", "errors": "error", "skipped": "skipped"}


def render_junit(report: Report) -> str:
    root = ET.Element("testsuites", name=f"farm {fmt.clean(report.model.path)}")
    root.extend(_suite(report, target) for target in report.targets)
    return document(root)


def count(suite: ET.Element) -> None:
    """Set a suite's tests, failures, errors and skipped from its cases."""
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    for key, tag in _COUNTED.items():
        suite.set(key, str(sum(1 for case in cases if case.find(tag) is not None)))


def document(root: ET.Element) -> str:
    """The XML text of a ``<testsuites>`` whose suites are counted, with its totals."""
    for key in ("tests", *_COUNTED):
        root.set(key, str(sum(int(suite.get(key, "0")) for suite in root.findall("testsuite"))))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _suite(report: Report, target: TargetResult) -> ET.Element:
    suite = ET.Element("testsuite", name=fmt.clean(target.name), timestamp=fmt.clean(report.created))
    if target.duration_s is not None:
        suite.set("time", f"{target.duration_s:.3f}")
    suite.append(_properties(target))
    classname = f"farm.{fmt.clean(target.name)}"
    cases = [_variant_case(v, classname, report.tolerance) for v in target.variants]
    if target.status != "ok":
        cases.append(_target_case(target, classname))
    suite.extend(cases)
    count(suite)
    return suite


def _properties(target: TargetResult) -> ET.Element:
    properties = ET.Element("properties")
    values = {
        "platform": target.platform,
        "mode": target.mode,
        "cpu_model": target.cpu_model,
        "onnxruntime": None if target.runtime is None else target.runtime.onnxruntime,
        "providers": None if target.runtime is None else ",".join(target.runtime.providers),
        "image": target.image,
        "recommended": target.recommended,
        "recommendation_reason": target.recommendation_reason,
        "speed_evidence": target.speed_evidence,
        "int8_if_needed": target.int8_if_needed,
    }
    for name, value in values.items():
        if value is not None:
            ET.SubElement(properties, "property", name=name, value=fmt.one_line(value))
    return properties


def _variant_case(variant: Variant, classname: str, tolerance: Tolerance) -> ET.Element:
    case = ET.Element("testcase", classname=classname, name=fmt.clean(variant.name))
    if variant.profile is not None:
        case.append(_profile_properties(variant.profile))
    if variant.status == "failed":
        _child(case, "failure", "failed", variant.error or "the variant failed without an error message")
    elif variant.status == "skipped":
        ET.SubElement(case, "skipped", message=fmt.one_line(variant.error or "skipped"))
    elif variant.outcome == "out-of-tolerance":
        _child(case, "failure", "out-of-tolerance", _drift(variant, tolerance))
    out = _metrics(variant)
    if out:
        ET.SubElement(case, "system-out").text = out
    return case


def _profile_properties(profile: Profile) -> ET.Element:
    """The variant's deployment profile as properties of its case (as pytest's record_property writes them), named
    as the report's keys: a CI dashboard can chart memory and start-up per variant without parsing text."""
    values: dict[str, object] = {
        "memory": profile.memory,
        "peak_rss_mib": profile.peak_rss_mib,
        "rss_upper_bound_mib": profile.rss_upper_bound_mib,
        "session_threads": profile.session_threads,
        "session_create_ms": profile.session_create_ms,
        "first_run_ms": profile.first_run_ms,
        "profile_timing": profile.timing,
        **{f"p50_ms_threads_{t.threads}": t.p50_ms for t in profile.threads},
        **{f"oversubscribed_threads_{t.threads}": "true" for t in profile.threads if t.oversubscribed},
    }
    properties = ET.Element("properties")
    for name, value in values.items():
        if value is not None:
            ET.SubElement(properties, "property", name=name, value=str(value))
    return properties


def _target_case(target: TargetResult, classname: str) -> ET.Element:
    case = ET.Element("testcase", classname=classname, name=TARGET_CASE)
    reason = target.reason or "no reason given"
    if target.status == "skipped":
        ET.SubElement(case, "skipped", message=fmt.one_line(reason))
    else:
        code = "" if target.exit_code is None else f" (exit code {target.exit_code})"
        element = _child(case, "error", "target-failed", f"the target failed{code}: {reason}")
        element.text = fmt.clean(target.log_tail or reason)
    return case


def _child(case: ET.Element, tag: str, kind: str, message: str) -> ET.Element:
    element = ET.SubElement(case, tag, message=fmt.one_line(message), type=kind)
    element.text = fmt.clean(message)
    return element


def _drift(variant: Variant, tolerance: Tolerance) -> str:
    accuracy = variant.accuracy
    if accuracy is None:
        return "outside tolerance"
    if accuracy.metric is not None:
        return f"outside tolerance: {fmt.metric_text(variant)} (--metric {tolerance.metric})"
    problems = []
    if accuracy.cosine < tolerance.cosine:
        problems.append(f"cosine {accuracy.cosine:.4f} < {tolerance.cosine}")
    if accuracy.top1_agreement is not None and accuracy.top1_agreement < tolerance.top1_agreement:
        problems.append(f"top-1 agreement {accuracy.top1_agreement:.4f} < {tolerance.top1_agreement}")
    worst = fmt.worst_output(variant)
    return "outside tolerance: " + ("; ".join(problems) or "as judged by the job") + (f"; {worst}" if worst else "")


def _metrics(variant: Variant) -> str:
    parts = []
    if variant.accuracy is not None:
        parts.append(
            f"cosine={variant.accuracy.cosine} max_abs={variant.accuracy.max_abs} "
            f"top1_agreement={variant.accuracy.top1_agreement} accuracy={variant.accuracy.accuracy}"
        )
        parts += [
            f"output {o.name}: cosine={o.cosine} max_abs={o.max_abs} top1_agreement={o.top1_agreement}"
            + ("" if o.counted else " (not counted)")
            for o in variant.accuracy.outputs
        ]
        metric = fmt.metric_text(variant)
        if metric:
            parts.append(metric)
    if variant.latency_ms is not None:
        latency = variant.latency_ms
        parts.append(f"latency_ms p50={latency.p50} p90={latency.p90} p99={latency.p99} ({variant.timing})")
        stopped = fmt.stopped(variant)
        if stopped:
            parts.append(stopped)
    if variant.size_bytes is not None:
        parts.append(f"size_bytes={variant.size_bytes}")
    if variant.profile is not None:
        profile = variant.profile
        parts.append(
            f"peak_rss_mib={profile.peak_rss_mib} ({profile.memory}) session_create_ms={profile.session_create_ms} "
            f"first_run_ms={profile.first_run_ms} ({profile.timing})"
        )
    if variant.quantization is not None and variant.quantization.nodes is not None:
        nodes = variant.quantization.nodes
        parts.append(f"quantized_nodes={nodes.quantized}/{nodes.quantizable}")
    return "\n".join(parts)
