"""Release gating and nightly reports on real runs: farm gate on real reports (and on injected regressions), JUnit as
CI tools read it, both HTML reports in headless Chromium with no network, hostile names shown as text, and
scripts/nightly twice in a row.

Screenshots are kept under test-artifacts/ at the repository root, for CI to attach.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import onnx
import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from farm.controller.fleet import BuildResults, Fleet
from farm.gate.policy import Limits
from farm.report.schema import validate
from tests.browser import PageResult, chromium_path, open_page
from tests.conftest import ROOT, missing, outside_turn
from tests.farmcli import farm
from tests.integration.farmrun import farm_matrix, native_target, read_report, target, variant
from tests.modelgen import make_mlp_classifier

# Its farm commands take this host's turns (tests/conftest.py): each job that times has the host to itself.
pytestmark = [pytest.mark.docker, pytest.mark.farm_turns]
ARTIFACTS = ROOT / "test-artifacts"
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def runs(fleet: Fleet, built: BuildResults, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two real runs of the bundled model on the native target and arm64 (emulated), labelled."""
    folders = []
    for label in ("v1", "v2"):
        out = tmp_path_factory.mktemp(label)
        result = farm_matrix("--target", native_target(fleet), "--target", "arm64", "--label", label, out=out)
        assert result.returncode == 0, result.stderr + result.stdout
        folders.append(out)
    return folders


def gate(*args: str) -> subprocess.CompletedProcess[str]:
    return farm("gate", *args, env={"GITHUB_STEP_SUMMARY": ""})


def edited(source: Path, folder: Path, change: Any) -> Path:
    """A copy of source's report.json with ``change(report)`` applied, as another run would have written it."""
    report = read_report(source)
    change(report)
    validate(report)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def regression(report: dict[str, Any], name: str) -> float:
    """A factor that makes the target's fp32 a latency regression by the default policy: slower than the run's own
    spread between rounds (a microsecond model's rounds differ by tens of %) and than the noise between runs."""
    latency = variant(target(report, name), "fp32")["latency_ms"]
    floor = Limits().latency_noise_ms
    assert floor is not None
    rounds: list[float] = latency["rounds"]
    return max(1.5, 1.2 * max(rounds) / min(rounds), 1 + 2 * floor / float(latency["p50"]))


def slow_down(report: dict[str, Any], name: str, factor: float) -> None:
    latency = variant(target(report, name), "fp32")["latency_ms"]
    for key in ("p50", "p90", "p99"):
        latency[key] = round(latency[key] * factor, 4)
    latency["rounds"] = [round(r * factor, 4) for r in latency["rounds"]]


def test_the_report_records_the_run(runs: list[Path], fleet: Fleet) -> None:
    report = read_report(runs[0])
    assert report["schema"] == "farm.report/2"
    run = report["run"]
    assert run["label"] == "v1"
    assert run["host"]["arch"] == fleet.host.arch and run["host"]["cores"] == len(os.sched_getaffinity(0))
    assert set(run["host"]["cpu_flags"]) == set(fleet.host.cpu_flags)
    assert run["host"]["engine"].startswith("Docker ")
    assert run["settings"] == {
        "threads": 1,
        "iterations": 200,
        "timing_rounds": 10,
        "calibration": "minmax",
        "optimization_level": "all",
        "samples": 360,
        "timing_mode": "adaptive",
    }
    assert run["data_sha256"] == read_report(runs[1])["run"]["data_sha256"]
    assert all(t["image"] for t in report["targets"] if t["status"] == "ok")


def test_gate_passes_on_two_reports_of_the_same_run(runs: list[Path], tmp_path: Path) -> None:
    copy_ = edited(runs[0], tmp_path / "copy", lambda r: None)
    result = gate(str(runs[0]), "--baseline", str(copy_), "--junit", str(tmp_path / "gate.xml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith(": passed")
    assert "0 failed" in result.stdout


def test_gate_fails_on_an_injected_accuracy_drop_naming_target_variant_rule_and_values(
    runs: list[Path], fleet: Fleet, tmp_path: Path
) -> None:
    name = native_target(fleet)
    chosen = target(read_report(runs[0]), name)["recommended"]
    before = variant(target(read_report(runs[0]), name), chosen)["accuracy"]["cosine"]

    def drop(report: dict[str, Any]) -> None:
        variant(target(report, name), chosen)["accuracy"]["cosine"] = round(before - 0.05, 4)

    worse = edited(runs[0], tmp_path / "worse", drop)
    result = gate(str(worse), "--baseline", str(runs[0]))
    assert result.returncode == 6, result.stdout + result.stderr
    line = next(ln for ln in result.stdout.splitlines() if "cosine-drop" in ln and "FAIL" in ln)
    assert f"{name} / {chosen}: cosine-drop: cosine {before - 0.05:.4f} vs baseline {before:.4f}" in line, line
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: the gate failed on") and "Traceback" not in result.stderr


def test_gate_fails_on_an_injected_latency_regression_beyond_noise(
    runs: list[Path], fleet: Fleet, tmp_path: Path
) -> None:
    name = native_target(fleet)
    factor = regression(read_report(runs[0]), name)

    def slower(report: dict[str, Any]) -> None:
        slow_down(report, name, factor)

    result = gate(str(edited(runs[0], tmp_path / "slower", slower)), "--baseline", str(runs[0]))
    assert result.returncode == 6, result.stdout + result.stderr
    line = next(ln for ln in result.stdout.splitlines() if "latency-regression" in ln and "FAIL" in ln)
    assert f"{name} / fp32: latency-regression: p50" in line and "limit +10%, beyond noise" in line, line
    # The injected factor, give or take the rounding of microsecond timings to 4 decimals of a millisecond.
    assert abs(float(line.split("ms (+")[1].split("%")[0]) - (factor - 1) * 100) < 5, (factor, line)
    # 5 % slower is within the default policy's 10 %.
    factor = 1.05
    result = gate(str(edited(runs[0], tmp_path / "a-little", slower)), "--baseline", str(runs[0]))
    assert result.returncode == 0, result.stdout


def test_gate_refuses_to_compare_latencies_from_another_host_or_settings(
    runs: list[Path], fleet: Fleet, tmp_path: Path
) -> None:
    def elsewhere(report: dict[str, Any]) -> None:
        report["run"]["host"]["cpu_model"] = "Some Other CPU @ 1.0GHz"
        report["run"]["settings"]["threads"] = 4

    result = gate(str(runs[0]), "--baseline", str(edited(runs[0], tmp_path / "other", elsewhere)))
    assert result.returncode == 0, result.stdout + result.stderr
    refused = [ln for ln in result.stdout.splitlines() if "latency not compared" in ln]
    assert any(
        native_target(fleet) in ln
        and "runs differ in CPU" in ln
        and "'Some Other CPU @ 1.0GHz'" in ln
        and "threads 1 vs baseline 4" in ln
        for ln in refused
    ), result.stdout


def test_junit_of_matrix_and_gate_parse_as_ci_tools_read_them(runs: list[Path], tmp_path: Path) -> None:
    matrix = JUnitXml.fromfile(str(runs[0] / "junit.xml"))
    cases = [case for suite in matrix for case in suite]
    assert matrix.tests == len(cases) > 0
    assert {suite.name for suite in matrix} == {t["name"] for t in read_report(runs[0])["targets"]}
    assert all(case.classname.startswith("farm.") and case.name for case in cases)
    assert matrix.failures == sum(1 for c in cases if c.result and isinstance(c.result[0], Failure))
    assert matrix.errors == sum(1 for c in cases if c.result and isinstance(c.result[0], Error))
    report_gate = tmp_path / "gate.xml"
    result = gate(
        str(runs[0]),
        "--baseline",
        str(edited(runs[0], tmp_path / "copy", lambda r: None)),
        "--junit",
        str(report_gate),
        "--markdown",
        str(tmp_path / "gate.md"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    xml = JUnitXml.fromfile(str(report_gate))
    pairs = [(case.classname, case.name) for suite in xml for case in suite]
    assert len(pairs) == len(set(pairs)) == xml.tests > 0  # one testcase per rule and target
    assert (xml.failures, xml.errors) == (0, 0)
    skipped = [case for suite in xml for case in suite if case.result and isinstance(case.result[0], Skipped)]
    # arm64 runs emulated: its latencies are never compared, and the skip says why.
    assert any(c.classname == "farm.gate.arm64" and "emulated" in c.result[0].message for c in skipped)
    assert (tmp_path / "gate.md").read_text().startswith("## farm gate: ")


def browse(html: Path, name: str) -> PageResult:
    if chromium_path() is None:
        missing("Debian's chromium is not installed: scripts/setup installs it")
    result = open_page(html, ARTIFACTS / f"{name}.png")
    problems = [*result.console_errors, *result.exceptions, *result.failed_loads, *result.requests, *result.dialogs]
    assert not problems, problems
    assert result.svg_count > 0, "no SVG chart rendered on the page"
    assert result.svgs_with_size == result.svg_count, "every plot has a size on the page"
    assert result.screenshot.stat().st_size > 10_000
    return result


def test_both_html_reports_render_offline_with_every_plot(runs: list[Path], fleet: Fleet, tmp_path: Path) -> None:
    page = browse(runs[0] / "report.html", "report")
    assert page.tables >= 1 and "Compatibility" in page.text and "Accuracy against speed" in page.text
    # The native target's trade-off scatter and speedup bars, plus the latency and cosine bar charts.
    assert page.svg_count >= 4
    history = tmp_path / "history"
    five = _five_runs(runs, history, native_target(fleet))
    out = tmp_path / "trend"
    result = farm("report", str(history), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "5 run(s), latest v5" in result.stdout
    trend = json.loads((out / "trend.json").read_text())
    assert [r["name"] for r in trend["runs"]] == five
    page = browse(out / "index.html", "trend-5-runs")
    # Two trend plots per timed target, one for the emulated one, and the latest run's trade-off and speedups.
    assert page.svg_count >= 2 + 1 + 2
    assert "Newly failing: arm64" in page.text
    assert any(c["rule"] == "latency-regression" and c["status"] == "failed" for c in trend["changes"])


def _five_runs(runs: list[Path], history: Path, native: str) -> list[str]:
    """Runs 1 and 2 as they ran; 3 to 5 derived from run 2 as later nights would differ: 5 is slower (by more than
    the spread of the run's own timing rounds) and its arm64 target broke off."""
    factor = regression(read_report(runs[1]), native)
    labels = []
    for index in range(5):
        label = f"v{index + 1}"

        def later(report: dict[str, Any], index: int = index, label: str = label) -> None:
            report["run"]["label"] = label
            report["created"] = f"2026-12-0{index + 1}T02:15:00Z"
            if index == 4:
                slow_down(report, native, factor)
                arm = target(report, "arm64")
                arm.update(
                    status="failed",
                    reason="was killed (SIGKILL, exit 137) from outside",
                    exit_code=137,
                    recommended=None,
                    recommendation_reason=None,
                )

        edited(runs[min(index, 1)], history / label, later)
        labels.append(label)
    return labels


def test_a_hostile_input_name_is_text_in_both_html_reports(fleet: Fleet, built: BuildResults, tmp_path: Path) -> None:
    model = make_mlp_classifier(tmp_path / "model.onnx")
    proto = onnx.load(str(model.path))
    old = proto.graph.input[0].name
    proto.graph.input[0].name = HOSTILE
    for node in proto.graph.node:
        node.input[:] = [HOSTILE if name == old else name for name in node.input]
    onnx.save(proto, str(model.path))
    out = tmp_path / "out"
    result = farm_matrix(str(model.path), "--target", native_target(fleet), out=out)
    assert result.returncode == 0, result.stderr
    trend = tmp_path / "trend"
    assert farm("report", str(out), "--out", str(trend)).returncode == 0
    for html, name in ((out / "report.html", "hostile-report"), (trend / "index.html", "hostile-trend")):
        text = html.read_text()
        assert HOSTILE not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        page = browse(html, name)  # no dialog opened: the name never ran
        assert HOSTILE in page.text


def test_nightly_twice_gives_a_trend_with_two_points_per_target_and_variant(
    fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    history, trend = tmp_path / "history", tmp_path / "trend"
    # Two real nights of the same model differ only in timing: with a timing-made recommendation out of the policy,
    # the second night's gate against the first must pass, latency included (the default latency_noise_ms holds the
    # noise between separate runs, up to +50 % on this microsecond model).
    policy = tmp_path / "gate.toml"
    policy.write_text('recommendation_change = "warn"\n')
    for night in (1, 2):
        with outside_turn():
            result = subprocess.run(
                [
                    str(ROOT / "scripts" / "nightly"),
                    "--history",
                    str(history),
                    "--trend",
                    str(trend),
                    "--policy",
                    str(policy),
                    "--",
                    "--target",
                    native_target(fleet),
                    "--target",
                    "arm64",
                ],
                capture_output=True,
                text=True,
                timeout=900,
                cwd=tmp_path,
            )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{night} run(s)" in result.stdout, result.stdout
    data = json.loads((trend / "trend.json").read_text())
    assert len(data["runs"]) == 2
    assert set(data["targets"]) == {native_target(fleet), "arm64"}
    for name, entry in data["targets"].items():
        assert entry["status"] == ["ok", "ok"], name
        for variant_name, values in entry["variants"].items():
            assert len(values["cosine"]) == 2 and None not in values["cosine"], (name, variant_name)
    runs = sorted(p for p in history.iterdir() if p.is_dir())
    assert len(runs) == 2 and all((r / "report.json").is_file() and (r / "gate.xml").is_file() for r in runs)
    # Both nights passed, so the second was gated against the first.
    assert all((r / "GOOD").is_file() for r in runs)
    assert f"against {runs[0]}" in (runs[1] / "gate.txt").read_text()
    assert (trend / "index.html").is_file() and (trend / "summary.md").read_text().startswith("## farm nightly: 2")
