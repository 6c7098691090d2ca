from __future__ import annotations

from pathlib import Path

import pytest

from tests.farmcli import farm


@pytest.mark.docker
def test_onnxruntime_version_that_does_not_exist(tmp_path: Path, engine: object) -> None:
    bad = tmp_path / "targets.toml"
    bad.write_text('[targets.a]\nplatform = "linux/amd64"\nruntime = "onnxruntime==1.99.0"\n')
    result = farm("build", "--quiet", "--targets", str(bad), env={"FARM_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(error) == 1
    assert "onnxruntime==1.99.0" in error[0] and str(bad) in error[0] and "1.31.1" in error[0]
