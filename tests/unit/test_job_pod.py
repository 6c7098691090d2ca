"""farm/job/pod/: the programs a Kubernetes pod's helper containers run, here on this machine's Python.

The budget wrapper runs as the pod runs it (``python -m``); the transfer programs are tested through their
functions here, and whole (over a fake exec session) in test_kubernetes.py.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from farm.job.pod import receive, send, wait


def wrapped(budget: float, *child: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farm.job.pod.budget", str(budget), sys.executable, "-c", *child],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_job_is_stopped_at_its_budget_and_its_status_reads_as_dockers() -> None:
    late = wrapped(0.5, "import time; time.sleep(30)")
    assert late.returncode == 124 and "ran past its budget" in late.stderr
    assert wrapped(30, "import sys; sys.exit(3)").returncode == 3
    assert wrapped(30, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)").returncode == 137


def test_a_waiter_ends_when_its_marker_is_there_and_gives_up_in_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "collected"
    assert wait.main(["results", str(marker), "0.1"]) == 1
    assert "the controller took no results in time" in capsys.readouterr().err
    assert wait.main(["inputs", str(marker), "0.1"]) == 1
    assert "the controller sent no inputs in time" in capsys.readouterr().err
    marker.touch()
    assert wait.main(["results", str(marker), "5"]) == 0


def test_folders_sent_as_a_tar_are_received_whole_and_a_short_stream_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out" / "variants").mkdir(parents=True)
    (tmp_path / "out" / "result.json").write_text("{}")
    (tmp_path / "out" / "variants" / "m.onnx").write_bytes(b"\0" * 70000)
    archive = io.BytesIO()
    size = send.send(archive, [f"out-1={tmp_path / 'out'}"])
    assert size == len(archive.getvalue()) > 70000
    framed = struct.pack(">Q", size) + archive.getvalue()
    # What follows the frame is not the archive's: the receiver stops at its length.
    assert receive.receive(io.BytesIO(framed + b"trailing"), str(tmp_path / "in")) == size
    assert (tmp_path / "in" / "out-1" / "result.json").read_text() == "{}"
    assert (tmp_path / "in" / "out-1" / "variants" / "m.onnx").stat().st_size == 70000
    with pytest.raises(receive.EndedEarly):
        receive.receive(io.BytesIO(framed[:-1000]), str(tmp_path / "short"))
