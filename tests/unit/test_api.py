"""farm.api's own logic, before any engine is asked: the CLI's defaults and FARM_* environment, and bad options as
farm's errors (tests/integration/test_api.py runs it on the real engine)."""

from __future__ import annotations

import pytest

import farm.api as api
from farm.errors import BadInput


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: api.matrix_run(None, calibration="best"), "--calibration best is not valid"),
        (lambda: api.matrix_run(None, min_cosine=2.0), "--min-cosine 2.0 is not within -1 to 1"),
        (lambda: api.matrix_run(None, threads=0), "--threads 0 is below 1"),
        (lambda: api.matrix_run(None, resume=True), "resume needs out="),
        (lambda: api.matrix_run(None, dry_run=True), "dry_run needs out="),
        (lambda: api.matrix(None, dry_run=True), "matrix() runs the matrix"),
        (lambda: api.matrix_run(None, divergence="some"), "--divergence some is not a count"),
        (lambda: api.tune_run(None, resume=True), "resume needs out="),
    ],
)
def test_bad_options_raise_bad_input_before_any_engine(call: object, needle: str) -> None:
    with pytest.raises(BadInput) as raised:
        call()  # type: ignore[operator]
    assert needle in str(raised.value) and "\n" not in str(raised.value)


def test_the_environment_gives_the_clis_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARM_KEEP", "yes")
    assert api._env("FARM_KEEP", None, api._bool, False) is True
    assert api._env("FARM_KEEP", False, api._bool, True) is False  # an argument wins over the environment
    monkeypatch.setenv("FARM_KEEP", "")
    assert api._env("FARM_KEEP", None, api._bool, True) is True
    monkeypatch.setenv("FARM_THREADS", "4")
    assert api._env("FARM_THREADS", None, int, 1) == 4
    monkeypatch.setenv("FARM_TIMING", "sometimes")
    with pytest.raises(BadInput, match="--timing sometimes is not valid"):
        api.matrix_run(None)
    monkeypatch.setenv("FARM_PROFILE", "maybe")
    with pytest.raises(BadInput, match="FARM_PROFILE=maybe is not valid"):
        api._env("FARM_PROFILE", None, api._bool, True)


def test_progress_goes_to_the_callers_function_and_nowhere_else(capsys: pytest.CaptureFixture[str]) -> None:
    heard: list[str] = []
    with api._reporting(heard.append) as reporter, reporter.step("build x86-avx2") as step:
        step.stage("wheels")
        reporter.note("a note")
    with api._reporting(None) as silent, silent.step("quiet") as step:
        step.stage("nothing heard")
    assert heard[:2] == ["build x86-avx2: wheels", "a note"] and heard[2].startswith("build x86-avx2: done in")
    assert capsys.readouterr() == ("", "")
