"""`farm matrix` refuses bad input with one line that names the input, exit 2, and no traceback.

The inputs are checked on the host before the engine is asked anything, so these need no Docker: DOCKER_HOST points
at nothing to prove it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from farm.models import default_model
from tests.unit.test_cli_errors import assert_one_clean_line, farm

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
DIGITS = default_model().model


def matrix(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return farm("matrix", "--quiet", *args, env=NO_ENGINE, cwd=cwd)


def test_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    (tmp_path / "notes.onnx").write_text("these are my notes, not a model\n")
    result = matrix("notes.onnx", cwd=tmp_path)
    assert_one_clean_line(result, 2, "notes.onnx", "is not an ONNX model")


def test_a_truncated_onnx_file(tmp_path: Path) -> None:
    data = DIGITS.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    result = matrix("cut.onnx", cwd=tmp_path)
    assert_one_clean_line(result, 2, "cut.onnx", "truncated")


def test_data_missing_an_input_name(tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", image=np.zeros((4, 1, 64), np.float32))
    result = matrix(str(DIGITS), "--data", "data.npz", cwd=tmp_path)
    assert_one_clean_line(result, 2, "data.npz", "'pixels'", "np.savez")


def test_data_with_the_wrong_shape(tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", pixels=np.zeros((4, 1, 63), np.float32))
    result = matrix(str(DIGITS), "--data", "data.npz", cwd=tmp_path)
    assert_one_clean_line(result, 2, "data.npz", "'pixels'", "(1, 63)", "[1, 64]")


def test_shape_naming_an_unknown_input(tmp_path: Path) -> None:
    result = matrix(str(DIGITS), "--shape", "image=1,64", cwd=tmp_path)
    assert_one_clean_line(result, 2, "--shape", "'image'", "pixels")


@pytest.fixture
def dynamic_model(tmp_path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
    )
    path = tmp_path / "dynamic.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_a_dynamic_dimension_without_shape(tmp_path: Path, dynamic_model: Path) -> None:
    result = matrix(dynamic_model.name, cwd=tmp_path)
    assert_one_clean_line(result, 2, "'x'", "'N'", "--shape x=")


def test_a_model_that_does_not_exist(tmp_path: Path) -> None:
    result = matrix("missing.onnx", cwd=tmp_path)
    assert_one_clean_line(result, 2, "missing.onnx", "does not exist")


def test_an_unknown_format(tmp_path: Path) -> None:
    result = matrix("--format", "yaml", cwd=tmp_path)
    assert_one_clean_line(result, 2, "--format yaml", "markdown")
