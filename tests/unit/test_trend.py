"""farm report's history logic on sample reports: what is left out, what is plotted, what counts as newly failing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from farm.errors import BadInput
from farm.gate import Policy
from farm.gate.trend import collect, render_trend_html, render_trend_markdown, trend_data
from tests.unit.report_sample import sample_report_dict

VNNI = "x86-avx512-vnni"


def night(history: Path, name: str, day: int, *, vnni_failed: bool = False) -> None:
    data = sample_report_dict(run=True)
    data["created"] = f"2026-12-0{day}T02:15:00Z"
    data["run"]["label"] = name
    if vnni_failed:
        vnni = next(t for t in data["targets"] if t["name"] == VNNI)
        vnni.update(
            status="failed",
            reason="was killed (SIGKILL, exit 137) from outside",
            exit_code=137,
            recommended=None,
            recommendation_reason=None,
        )
    (history / name).mkdir(parents=True)
    (history / name / "report.json").write_text(json.dumps(data))


def test_a_history_keeps_its_good_nights_names_the_bad_files_and_marks_only_new_failures(tmp_path: Path) -> None:
    night(tmp_path, "n2", 2, vnni_failed=True)
    night(tmp_path, "n1", 1)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "report.json").write_text('{"schema": "farm.report/2", "targ')
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.json").write_text('{"name": "not a farm report"}')
    history = collect([tmp_path])
    assert [r.name for r in history.runs] == ["n1", "n2"]  # by creation time, not by folder name
    assert sorted(Path(s).parent.name for s, _ in history.unreadable) == ["broken", "other"]
    changes = history.changes(Policy())
    data = trend_data(history, changes)
    # QEMU timings of older reports are not plotted as latencies; the native target's are.
    assert data["targets"]["x86-avx2"]["variants"]["fp32"]["p50_ms"] == [None, None]
    assert data["targets"][VNNI]["variants"]["fp32"]["p50_ms"][0] == 1.92
    assert data["targets"][VNNI]["status"] == ["ok", "failed"]
    page = render_trend_html(history, changes)
    # arm64 failed on both nights: failing, but not newly.
    assert f"Newly failing: {VNNI}</p>" in page
    assert "Files left out" in page and str(tmp_path / "broken" / "report.json") in page
    assert render_trend_markdown(history, changes).startswith("## farm nightly: 2 run(s), latest n2")


def test_no_report_at_all_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no farm report was found"):
        collect([tmp_path])
