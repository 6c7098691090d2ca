"""farm.job.macs: the share of a model's multiply-accumulates in Conv, counted by hand against the generated models."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from farm.job.macs import conv_share, share_of
from tests.modelgen import make_cnn, make_if_branch_model, make_mlp_classifier


def test_a_cnn_is_all_conv_but_its_classifier_head(tmp_path: Path) -> None:
    model = make_cnn(tmp_path / "cnn.onnx", samples=1)
    # Four 3x3 convs at 320x320 input (stride 2, 2, 2, 1) and a 256 -> 10 Gemm.
    conv = 32 * 160 * 160 * 3 * 9 + 64 * 80 * 80 * 32 * 9 + 128 * 40 * 40 * 64 * 9 + 256 * 40 * 40 * 128 * 9
    assert conv_share(model.path, {"x": (1, 3, 320, 320)}) == pytest.approx(conv / (conv + 2560))


def test_a_matmul_model_has_no_conv_share(tmp_path: Path) -> None:
    model = make_mlp_classifier(tmp_path / "mlp.onnx")
    assert conv_share(model.path, {"x": (1, 64)}) == 0.0


def test_the_branches_of_an_if_count(tmp_path: Path) -> None:
    model = make_if_branch_model(tmp_path / "if.onnx")
    # Each branch: a 3x3 conv of 3 -> 4 channels at 6x6, then a 144 -> 5 MatMul.
    conv, matmul = 4 * 6 * 6 * 3 * 9, 144 * 5
    assert conv_share(model.path, {"x": (1, 3, 8, 8), "sr": ()}) == pytest.approx(conv / (conv + matmul))


def test_unknown_work_leaves_the_share_unknown() -> None:
    # A MatMul whose input shape inference cannot know (its rank is not even declared).
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        "g",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, None),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    assert share_of(helper.make_model(graph), {}) is None
    nothing = helper.make_graph([helper.make_node("Relu", ["a"], ["y"])], "g", [], [])
    assert share_of(onnx.helper.make_model(nothing), {}) is None
