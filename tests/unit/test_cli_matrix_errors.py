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
from tests.farmcli import assert_one_clean_line, farm

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
        [helper.make_node("Relu", ["x"], ["y"])],
        "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "features"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "features"])],
    )
    path = tmp_path / "dynamic.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_a_dynamic_dimension_without_shape(tmp_path: Path, dynamic_model: Path) -> None:
    result = matrix(dynamic_model.name, cwd=tmp_path)
    assert_one_clean_line(result, 2, "'x'", "'features'", "--shape x=")


def test_a_model_that_does_not_exist(tmp_path: Path) -> None:
    result = matrix("missing.onnx", cwd=tmp_path)
    assert_one_clean_line(result, 2, "missing.onnx", "does not exist")


def test_an_unknown_format(tmp_path: Path) -> None:
    result = matrix("--format", "yaml", cwd=tmp_path)
    assert_one_clean_line(result, 2, "--format yaml", "markdown")


# Issue 6: models as exporters write them, and the new flags, all refused or accepted before any engine.


def paddle_style_model(tmp_path: Path) -> Path:
    """A batch axis written as dim_value -1 and spatial axes left unnamed, as paddle2onnx does."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, None, None])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "paddle",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 3, None, None])],
    )
    path = tmp_path / "paddle.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6), path)
    return path


def test_a_negative_dim_is_dynamic_in_data_and_shape_errors(tmp_path: Path) -> None:
    paddle_style_model(tmp_path)
    np.savez(tmp_path / "data.npz", x=np.zeros((2, 1, 3, 48, 192), np.float32))
    wrong = matrix("paddle.onnx", "--data", "data.npz", "--shape", "x=1,4,48,192", cwd=tmp_path)
    # The model's shape as onnxruntime reads it: -1 is dynamic, shown as '?', never "fixed at -1".
    assert_one_clean_line(wrong, 2, "--shape x=1,4,48,192", "[?, 3, ?, ?]", "fixes it at 3")
    assert "-1" not in wrong.stderr
    bad_sample = matrix("paddle.onnx", "--data", "data.npz", "--shape", "x=1,3,48,192", "--output", "z", cwd=tmp_path)
    # The data and --shape were accepted; what stops it is the next check, before any engine.
    assert_one_clean_line(bad_sample, 2, "--output z", "paddle.onnx", "y")


def test_an_unknown_output_names_the_nearest(tmp_path: Path) -> None:
    result = matrix(str(DIGITS), "--output", "logit", cwd=tmp_path)
    assert_one_clean_line(result, 2, "--output logit", "did you mean 'logits'?")


@pytest.mark.parametrize(
    ("metric", "source", "expected"),
    [
        ("metric.py", "def score(a, b, c):\n    return {'passed': True}\n", ("--metric metric.py", "FILE.py:FUNCTION")),
        ("missing.py:score", None, ("--metric file missing.py", "does not exist")),
        ("metric.py:score", "def score(a, b, c)\n", ("metric.py is not valid Python",)),
        (
            "metric.py:scor",
            "def score(a, b, c):\n    return {}\n",
            ("defines no top-level function scor", "did you mean 'score'?"),
        ),
    ],
)
def test_a_bad_metric_is_refused_before_any_engine(
    tmp_path: Path, metric: str, source: str | None, expected: tuple[str, ...]
) -> None:
    if source is not None:
        (tmp_path / "metric.py").write_text(source)
    result = matrix(str(DIGITS), "--metric", metric, cwd=tmp_path)
    assert_one_clean_line(result, 2, *expected)


def test_external_data_that_escapes_the_model_folder_is_refused(tmp_path: Path) -> None:
    from tests.modelgen import make_external_data_model, relocate_external_data

    (tmp_path / "models").mkdir()
    make_external_data_model(tmp_path / "models" / "model.onnx")
    (tmp_path / "models" / "weights.bin").rename(tmp_path / "weights.bin")
    relocate_external_data(tmp_path / "models" / "model.onnx", "../weights.bin")
    result = matrix("models/model.onnx", cwd=tmp_path)
    assert_one_clean_line(result, 2, "model.onnx", "'../weights.bin'", "relative location")
