"""`farm matrix` in a subprocess, as a user runs it, and readers of the report it writes: what the integration tests
share. Also the targets files they write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from farm.controller.fleet import Fleet
from tests.conftest import ROOT, outside_turn


def farm_matrix(*args: str, out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``env``: variables to set beside this process's own."""
    with outside_turn():
        return subprocess.run(
            [sys.executable, "-m", "farm", "matrix", "--quiet", "--out", str(out), *args],
            capture_output=True,
            text=True,
            timeout=1500,
            cwd=ROOT,
            env=None if env is None else {**os.environ, **env},
        )


def start_matrix(*args: str, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "farm", "matrix", "--quiet", "--out", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def words(text: str) -> str:
    """Rendered text with its line wraps undone: where a table wraps depends on its widest cell (a target's name)."""
    return " ".join(text.split())


def read_report(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def target(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in report["targets"] if t["name"] == name)
    return found


def variant(entry: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(v for v in entry["variants"] if v["name"] == name)
    return found


def native_target(fleet: Fleet) -> str:
    """The default CPU target whose timings are this CPU's own: native where one is, else masked (on a CPU with
    AMX every default x86 tier is masked, and only the on-request x86-ort117 would be native)."""
    default = [t for t in fleet.config.targets if t.image == "cpu" and not t.on_request]
    for mode in ("native", "masked"):
        found = next((t.name for t in default if fleet.placements[t.name].mode == mode), None)
        if found is not None:
            return found
    raise AssertionError(f"no default CPU target runs natively or masked here: {dict(fleet.placements)}")


def x86_targets(path: Path, tables: dict[str, dict[str, Any]]) -> Path:
    """A targets file with the default file's defaults, of bare linux/amd64 targets (native on every x86 host)
    unless a table names another platform.

    Their images have the default content, so they are tagged, not built, unless a table changes packages.
    """
    defaults = tomllib.loads((ROOT / "targets.toml").read_text())["defaults"]
    lines = ["[defaults]", *(f"{key} = {json.dumps(value)}" for key, value in defaults.items())]
    for name, table in tables.items():
        table = {"platform": "linux/amd64", **table}
        lines += ["", f"[targets.{name}]", *(f"{key} = {json.dumps(value)}" for key, value in table.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def with_candidates(path: Path, candidates: list[str]) -> Path:
    """The default targets file with the int8 candidates of its defaults replaced (fewer variants, a cheaper matrix)."""
    text = (ROOT / "targets.toml").read_text()
    default = tomllib.loads(text)["defaults"]["candidates"]
    old = "\ncandidates = " + json.dumps(default)
    assert old in text, f"targets.toml no longer writes its candidates as {old!r}"
    path.write_text(text.replace(old, "\ncandidates = " + json.dumps(candidates), 1))
    return path
