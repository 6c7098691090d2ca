from __future__ import annotations

from pathlib import Path

import numpy as np

from farm.controller.crosscheck import CROSS_ATOL, disagreement, load_outputs


def test_outputs_within_tolerance_agree() -> None:
    want = {"y": np.array([[1.0, 2.0]], np.float32)}
    assert disagreement({"y": want["y"] + 1e-6}, want, atol=CROSS_ATOL) is None


def test_a_disagreement_names_the_output_and_how_far_off_it_is() -> None:
    want = {"y": np.zeros((4, 3), np.float32), "z": np.zeros(2, np.float32)}
    got = {"y": np.zeros((4, 3), np.float32), "z": np.array([0.0, 0.5], np.float32)}
    got["y"][0, 0] = 0.25
    problem = disagreement(got, want)
    assert problem == "'y' differs in 1 of 12 values (max_abs 0.25); 'z' differs in 1 of 2 values (max_abs 0.5)"


def test_a_shape_mismatch_is_named() -> None:
    problem = disagreement({"y": np.zeros((2, 3))}, {"y": np.zeros((3, 2))})
    assert problem == "'y' has shape [2, 3], expected [3, 2]"


def test_a_truncated_outputs_file_reads_as_none(tmp_path: Path) -> None:
    np.savez(tmp_path / "full.npz", y=np.arange(1000.0))
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.npz").write_bytes(b"")
    assert load_outputs(tmp_path / "cut.npz") is None
    assert load_outputs(tmp_path / "empty.npz") is None
    assert load_outputs(tmp_path / "missing.npz") is None
    loaded = load_outputs(tmp_path / "full.npz")
    assert loaded is not None and loaded["y"].shape == (1000,)
