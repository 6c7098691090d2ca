"""Issue 23 on the real engine: farm as a library (farm.api). Each call runs in a Python process of its own, as a
notebook or a pipeline runs it: it prints nothing and writes nothing unless asked, raises farm's errors (never
SystemExit), and gives what the CLI gives."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from farm.controller.fleet import BuildResults, Fleet
from farm.report.frame import COLUMNS, PANDAS_FIX
from tests.conftest import ROOT, outside_turn
from tests.farmcli import farm
from tests.integration.farmrun import farm_matrix, native_target, read_report

pytestmark = [pytest.mark.docker, pytest.mark.concurrent]

DIGITS = ROOT / "farm" / "models" / "digits.onnx"
# What the comparisons leave aside: the report's times and what this run's host and process measured.
UNTIMED = ("--no-profile", "--divergence", "none", "--iterations", "0")


def python(code: str, *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    with outside_turn():
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=cwd, env=env
        )


@pytest.fixture(scope="module")
def api_run(fleet: Fleet, built: BuildResults, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The issue's one-liner in an empty folder, then the same matrix with out= for the comparisons."""
    name = native_target(fleet)
    folder = tmp_path_factory.mktemp("api")
    quiet = python(
        f"import farm.api as f; r = f.matrix({str(DIGITS)!r}, targets=[{name!r}]); print(r.targets[0].recommended)",
        cwd=folder,
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "", quiet.stderr  # no progress, no notes
    assert list(folder.iterdir()) == [], list(folder.iterdir())  # no farm-report, nothing else
    recommended = quiet.stdout.strip()
    out = folder / "out"
    written = python(
        f"import farm.api as f; f.matrix({str(DIGITS)!r}, targets=[{name!r}], out={str(out)!r}, profile=False, "
        "divergence='none', iterations=0)",
        cwd=folder,
    )
    assert written.returncode == 0, written.stderr
    return recommended, out


def test_the_api_matrix_returns_the_report_and_writes_nothing_unless_asked(
    fleet: Fleet, api_run: tuple[str, Path]
) -> None:
    recommended, out = api_run
    report = read_report(out)
    names = [v["name"] for v in report["targets"][0]["variants"]]
    assert recommended in names, (recommended, names)
    assert sorted(p.name for p in out.iterdir()) == ["junit.xml", "outputs", "report.html", "report.json", "report.md"]


def test_the_cli_matrix_is_the_api_matrix(fleet: Fleet, api_run: tuple[str, Path], tmp_path: Path) -> None:
    """The CLI is a thin layer: its table and report.json are the API's, times aside."""
    _, api_out = api_run
    name = native_target(fleet)
    cli = farm_matrix(str(DIGITS), "-t", name, *UNTIMED, out=tmp_path / "cli")
    assert cli.returncode == 0, cli.stderr
    api = python(
        f"from farm.api import load_report; from farm.report import render; "
        f"print(render(load_report({str(api_out)!r}), 'table'), end='')",
        cwd=tmp_path,
    )
    assert api.returncode == 0, api.stderr
    assert timeless(cli.stdout) == timeless(api.stdout)
    assert fields(read_report(tmp_path / "cli")) == fields(read_report(api_out))


def timeless(text: str) -> str:
    return re.sub(r"\d+(\.\d+)? ?(s|ms)\b", "<time>", text)


def fields(report: dict[str, Any]) -> dict[str, Any]:
    """The report without what differs between two runs of the same work: when, how long, where it ran."""
    report = json.loads(json.dumps(report))
    for key in ("created", "run"):
        report.pop(key, None)
    for entry in report["targets"]:
        for key in ("duration_s", "resume_key", "log_tail", "backend", "image"):
            entry.pop(key, None)
    return report


def test_to_pandas_has_a_row_per_target_and_variant_and_says_how_to_get_pandas(
    api_run: tuple[str, Path], tmp_path: Path
) -> None:
    _, out = api_run
    table = python(
        f"import json; from farm.api import load_report; frame = load_report({str(out)!r}).to_pandas(); "
        "print(json.dumps({'columns': list(frame.columns), 'rows': frame[['target', 'variant']].values.tolist()}))",
        cwd=tmp_path,
    )
    assert table.returncode == 0, table.stderr
    found = json.loads(table.stdout)
    report = read_report(out)
    assert tuple(found["columns"]) == COLUMNS
    assert found["rows"] == [[t["name"], v["name"]] for t in report["targets"] for v in t["variants"]]
    hidden = python(
        "import sys; sys.modules['pandas'] = None\n"
        "from farm.api import load_report\n"
        "from farm.errors import FarmError\n"
        f"try:\n    load_report({str(out)!r}).to_pandas()\n"
        "except FarmError as error:\n    print(error)",
        cwd=tmp_path,
    )
    assert hidden.returncode == 0, hidden.stderr
    assert hidden.stdout.count("\n") == 1 and PANDAS_FIX in hidden.stdout, hidden.stdout
    html = python(f"from farm.api import load_report; print(load_report({str(out)!r})._repr_html_())", cwd=tmp_path)
    assert html.returncode == 0 and '<table class="matrix">' in html.stdout, html.stderr


# Every farm.api function on bad input: farm's exception with the message the CLI prints, never SystemExit.
BAD_CALLS = {
    "matrix": ("f.matrix('nope.onnx')", ("matrix", "nope.onnx")),
    "matrix_run": ("f.matrix_run(None, calibration='best')", ("matrix", "--calibration", "best")),
    "tune": ("f.tune('nope.onnx')", ("tune", "nope.onnx")),
    "inspect": ("f.inspect('nope.onnx')", ("inspect", "nope.onnx")),
    "gate": ("f.gate('nope.json')", ("gate", "nope.json")),
    "build": ("f.build(targets=['nope'])", ("build", "--target", "nope")),
    "targets": ("f.targets(targets_file='nope.toml')", ("targets", "--targets", "nope.toml")),
    "load_report": ("f.load_report('nope.json')", ("gate", "nope.json")),
}


@pytest.mark.parametrize("function", sorted(BAD_CALLS))
def test_bad_input_raises_farms_error_with_the_clis_line(function: str, tmp_path: Path) -> None:
    call, cli_args = BAD_CALLS[function]
    code = (
        "import farm.api as f\nfrom farm.errors import FarmError\n"
        f"try:\n    {call}\nexcept FarmError as error:\n    print(type(error).__name__, error.exit_code)\n"
        "    print(error)\nelse:\n    print('no error')"
    )
    api = python(code, cwd=tmp_path)
    assert api.returncode == 0, api.stderr  # SystemExit would end the process with another code and no lines
    kind, message = api.stdout.splitlines()
    cli = farm(*cli_args, cwd=tmp_path)
    assert cli.stderr == f"error: {message}\n", (cli.stderr, message)
    assert cli.returncode == int(kind.split()[1]) == 2, (cli.returncode, kind)


def test_the_examples_script_evaluates_picks_and_gates(fleet: Fleet, built: BuildResults, tmp_path: Path) -> None:
    name = native_target(fleet)
    script = str(ROOT / "examples" / "pipeline.py")
    quick = {"FARM_PROFILE": "0", "FARM_DIVERGENCE": "none"}
    env = {**os.environ, **quick}
    with outside_turn():
        first = subprocess.run(
            [sys.executable, script, "--target", name, "--out", str(tmp_path / "base")],
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
        )
        assert first.returncode == 0, first.stderr + first.stdout
        again = subprocess.run(
            [
                sys.executable,
                script,
                "--target",
                name,
                "--out",
                str(tmp_path / "new"),
                "--baseline",
                str(tmp_path / "base"),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
        )
    assert again.returncode == 0, again.stderr + again.stdout
    assert re.search(rf"^{re.escape(name)}: ok, ship \S+$", again.stdout, re.M), again.stdout
    assert "evaluate" in again.stdout  # progress=print got the progress lines
