"""What `farm matrix --resume` may reuse from the report already in --out (farm/controller/resume.py)."""

from __future__ import annotations

import json
from pathlib import Path

from farm.controller.resume import read_earlier, resume_key
from farm.job.codec import encode
from tests.unit.report_sample import sample_report_dict


def test_the_key_covers_its_material_whatever_the_order() -> None:
    material = {"model": "a" * 64, "spec": {"candidates": ["u8s8-qdq"], "threads": 1}, "image": "farm/x:1"}
    assert resume_key(material) == resume_key(dict(reversed(material.items())))
    assert resume_key(material) != resume_key({**material, "spec": {"candidates": ["u8s8-qdq"], "threads": 2}})
    assert resume_key(material) != resume_key({**material, "image": "farm/x:2"})


def test_only_entries_with_a_matching_key_are_reusable(tmp_path: Path) -> None:
    report = sample_report_dict(run=True)
    report["targets"][0]["resume_key"] = "k0"
    report["targets"][1]["resume_key"] = "k1"
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    earlier = read_earlier(path)
    assert earlier.note is None and earlier.created == report["created"]
    assert encode(earlier.reusable(report["targets"][0]["name"], "k0")) == report["targets"][0]
    assert earlier.reusable(report["targets"][0]["name"], "k1") is None  # another key: something changed
    assert earlier.reusable(report["targets"][2]["name"], "k0") is None  # no key: farm stopped it, or it never ran
    assert earlier.warnings == tuple(report["warnings"])


def test_a_missing_or_broken_earlier_report_offers_nothing_and_says_why(tmp_path: Path) -> None:
    missing = read_earlier(tmp_path / "report.json")
    assert not missing.targets and missing.note and "no earlier report" in missing.note
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "farm.report/2", "targets": [')
    found = read_earlier(broken)
    assert not found.targets and found.note and "cannot be read" in found.note and str(broken) in found.note
