"""Bad input gets one line that names the file and the fix, a non-zero exit, and never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.farmcli import assert_one_clean_line, farm


def test_misspelt_key(tmp_path: Path) -> None:
    bad = tmp_path / "targets.toml"
    bad.write_text('[targets.a]\nplatform = "linux/amd64"\nruntime = "onnxruntime==1.31.1"\ncpu_feature = ["avx2"]\n')
    assert_one_clean_line(farm("targets", "--targets", str(bad)), 2, str(bad), "cpu_feature", "cpu_features")


def test_unknown_platform(tmp_path: Path) -> None:
    bad = tmp_path / "targets.toml"
    bad.write_text('[targets.a]\nplatform = "linux/riscv64"\nruntime = "onnxruntime==1.31.1"\n')
    assert_one_clean_line(farm("build", "--targets", str(bad)), 2, str(bad), "linux/riscv64", "linux/amd64")


def test_unreachable_engine() -> None:
    result = farm("targets", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert_one_clean_line(result, 3, "unix:///nonexistent/docker.sock", "DOCKER_HOST")


def test_a_failing_check_is_the_exit_status_of_doctor() -> None:
    # A command that ends with typer.Exit(N) must exit N: without standalone mode click returns the code instead.
    result = farm("doctor", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert result.returncode == 3, result.stdout
    assert "cannot reach a Docker engine" in result.stdout


# Loaded first by every interpreter started with this folder on PYTHONPATH: any import of click fails there, as on a
# machine where it is not installed, whether or not this environment happens to have it.
_NO_CLICK = """import sys


class _NoClick:
    def find_spec(self, name, path=None, target=None):
        if name == "click" or name.startswith("click."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoClick())
"""


def test_usage_errors_are_one_clean_message_without_click_installed(tmp_path: Path) -> None:
    # typer 0.29 vendors click and no longer installs it: usage errors must not depend on importing click.
    (tmp_path / "sitecustomize.py").write_text(_NO_CLICK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    blocked = subprocess.run([sys.executable, "-c", "import click"], capture_output=True, text=True, env=env)
    assert blocked.returncode == 1 and "No module named 'click'" in blocked.stderr, blocked.stderr
    # The console script that pip installed, as a user runs it.
    script = Path(sys.executable).with_name("farm")
    assert script.is_file(), f"{script} is missing: install farm into this environment (pip install -e .)"
    for args, needle in ((("matrx",), "No such command 'matrx'"), (("matrix", "--bogus"), "No such option: --bogus")):
        result = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and needle in result.stderr, result.stderr


def test_farm_optimize_refuses_an_unknown_pass_and_a_missing_out(tmp_path: Path) -> None:
    from farm.models import default_model

    digits = str(default_model().model)
    assert_one_clean_line(
        farm("optimize", digits, str(tmp_path / "o.onnx"), "--passes", "fuse_bn_into_cnov"),
        2,
        "'fuse_bn_into_cnov'",
        "did you mean 'fuse_bn_into_conv'?",
    )
    assert_one_clean_line(farm("optimize", digits), 2, "needs MODEL and OUT")


def test_farm_gate_and_farm_report_refuse_bad_input_in_one_line(tmp_path: Path) -> None:
    import json

    from tests.unit.report_sample import sample_report_dict

    missing_file = tmp_path / "nope" / "report.json"
    assert_one_clean_line(farm("gate", str(missing_file)), 2, str(missing_file), "No such file")
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "farm.report/2"')
    assert_one_clean_line(farm("gate", str(broken)), 2, str(broken), "not JSON")
    good = tmp_path / "report.json"
    good.write_text(json.dumps(sample_report_dict(run=True)))
    policy = tmp_path / "gate.toml"
    policy.write_text("max_latency_regresion = 0.2\n")
    assert_one_clean_line(
        farm("gate", str(good), "--policy", str(policy)), 2, str(policy), "did you mean max_latency_regression?"
    )
    assert_one_clean_line(farm("report", str(tmp_path / "empty-history")), 2, "does not exist")
    (tmp_path / "history").mkdir()
    assert_one_clean_line(farm("report", str(tmp_path / "history")), 2, "no farm report was found")
