"""farm as a user installs it: a wheel (not the editable checkout) in a fresh virtual environment, run from a folder
that is not the checkout. Its targets.toml, Dockerfiles and CPUID-mask source must come with the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from farm.controller.fleet import BuildResults, Fleet
from tests.conftest import ROOT
from tests.integration.farmrun import native_target

# Beside other tests (tests/conftest.py): an install and a run that must succeed; no figure is compared.
pytestmark = [pytest.mark.docker, pytest.mark.concurrent]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(folder), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(folder.glob("farm-*.whl"))
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # As a user installs a release: the wheel, with the versions it was tested with (constraints.txt).
    install = subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(ROOT / "constraints.txt"),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PIP_FIND_LINKS": ""},
    )
    assert install.returncode == 0, install.stderr
    return venv / "bin" / "farm"


def run(farm: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(farm), *args], capture_output=True, text=True, timeout=900, cwd=cwd)


def test_a_wheel_install_answers_usage_errors_in_one_line(installed: Path, tmp_path: Path) -> None:
    for args, needle in ((("matrx",), "No such command 'matrx'"), (("matrix", "--bogus"), "No such option: --bogus")):
        result = run(installed, *args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and needle in result.stderr, result.stderr


def test_a_wheel_install_finds_its_targets_and_runs_the_bundled_model(
    installed: Path, fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    targets = run(installed, "targets", cwd=tmp_path)
    assert targets.returncode == 0, targets.stderr
    assert "arm64" in targets.stdout and "x86-avx2" in targets.stdout
    result = run(
        installed, "matrix", "--quiet", "--target", native_target(fleet), "--out", str(tmp_path / "out"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert (tmp_path / "out" / "report.html").is_file()
    assert "digits.onnx" in result.stdout
