"""Issue 10 on the real engine: two farm runs started together on cold caches share one build and both report.

It runs beside other tests (scripts/test's second process): it times nothing, and it answers only for its own
containers and images. Most of its time is the base's bootstrap from Debian and the wheels' download, which leave
the CPU to the other process.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from farm.backend.engine import Engine
from farm.controller.fleet import BuildResults
from farm.images import bootstrap
from tests.conftest import ROOT
from tests.integration.farmrun import x86_targets
from tests.integration.test_unattended import entry, matrix_command, report_of
from tests.modelgen import make_saturating_classifier

pytestmark = [pytest.mark.docker, pytest.mark.concurrent]


def test_two_concurrent_runs_on_cold_caches_share_one_build_and_both_report(
    engine: Engine, built: BuildResults, new_containers: Callable[[], list[str]], tmp_path: Path
) -> None:
    # An extra package gives the target an image of its own content, so nothing built before serves it; a fresh
    # cache folder makes the wheelhouse, site-packages, rewrite and capabilities cold; the amd64 base is untagged,
    # so it is bootstrapped again from Debian.
    defaults = tomllib.loads((ROOT / "targets.toml").read_text())["defaults"]
    targets = x86_targets(tmp_path / "targets.toml", {"cold": {"packages": [*defaults["packages"], "six==1.17.0"]}})
    base = bootstrap.base_tag("x86_64")
    with contextlib.suppress(Exception):
        engine.client.api.remove_image(base)  # the tag only: the images built on it keep their layers
    cache = tmp_path / "cache"
    env = {**os.environ, "FARM_CACHE_DIR": str(cache)}
    second_model = tmp_path / "saturating.onnx"
    make_saturating_classifier(second_model)
    runs = [(tmp_path / "a", []), (tmp_path / "b", [str(second_model)])]
    processes = [
        subprocess.Popen(
            matrix_command(targets, out, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for out, args in runs
    ]
    try:
        outputs = [p.communicate(timeout=1200) for p in processes]
    finally:
        for process in processes:
            process.kill()
        for image in engine.images_labelled("farm.target=cold"):
            engine.remove_image(image.id)
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
    assert any("waiting for another farm process" in stderr for _, stderr in outputs), outputs
    for out, _ in runs:
        report = report_of(out)
        assert report["incomplete"] is None
        assert entry(report, "cold")["status"] == "ok", entry(report, "cold")
    assert report_of(runs[1][0])["model"]["path"] == str(second_model)
    # One download and one unpacking served both, and nothing half-made was left beside them.
    assert len(list((cache / "wheelhouse").iterdir())) == 1, list((cache / "wheelhouse").iterdir())
    assert len(list((cache / "site-packages").iterdir())) == 1, list((cache / "site-packages").iterdir())
    assert engine.image(base) is not None
    assert not new_containers()
