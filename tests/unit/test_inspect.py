"""farm.model.inspect: what is read from a model, and a one-line ModelError for every way the file can be wrong."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from farm.errors import ModelError
from farm.job.codec import encode
from farm.job.report import TensorSummary
from farm.model.inspect import ModelInfo, TensorInfo, inspect_model, node_uses
from tests.fuzzmodels import nested_if

SCHEMA = Path(__file__).resolve().parents[2] / "farm" / "report" / "schema.json"


def small_model(*, ir_version: int = 8, opset: int = 17) -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((3, 4), dtype=np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Relu", ["h"], ["y"]),
        ],
        "small",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("rate", TensorProto.INT64, []),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, [None]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_reads_versions_dims_and_excludes_initializers(tmp_path: Path) -> None:
    path = save(small_model(), tmp_path / "model.onnx")
    info = inspect_model(path)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.size_bytes == path.stat().st_size
    assert info.ir_version == 8
    assert dict(info.opsets) == {"ai.onnx": 17}
    assert info.op_types == frozenset({"MatMul", "Relu"})
    assert info.inputs == (
        TensorInfo(name="x", dtype="float32", shape=("batch", 3)),
        TensorInfo(name="rate", dtype="int64", shape=()),
        TensorInfo(name="mask", dtype="bool", shape=(None,)),
    )
    assert info.outputs == (TensorInfo(name="y", dtype="float32", shape=("batch", None)),)
    assert info.inputs[0].dynamic_dims == (0,)
    assert info.inputs[1].is_static
    assert not info.external_data


def test_host_onnx_default_ir_is_reported_as_written(tmp_path: Path) -> None:
    model = small_model()
    model.ir_version = onnx.IR_VERSION
    assert inspect_model(save(model, tmp_path / "m.onnx")).ir_version == onnx.IR_VERSION


def test_op_types_include_subgraphs_and_other_domains(tmp_path: Path) -> None:
    def branch(op: str, name: str) -> onnx.GraphProto:
        out = f"{name}_out"
        return helper.make_graph(
            [helper.make_node(op, ["x"], [out])], name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2])]
        )

    then_branch = branch("Neg", "then")
    else_inner = branch("Abs", "inner")
    else_branch = helper.make_graph(
        [helper.make_node("If", ["c"], ["e"], then_branch=else_inner, else_branch=else_inner)],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("If", ["c"], ["o"], then_branch=then_branch, else_branch=else_branch),
            helper.make_node("Identity", ["o"], ["y"]),
        ],
        "branchy",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)], ir_version=8
    )
    info = inspect_model(save(model, tmp_path / "if.onnx"))
    assert info.op_types == frozenset({"If", "Identity", "Neg", "Abs"})
    assert dict(info.opsets) == {"ai.onnx": 17, "ai.onnx.ml": 3}


def test_dict_round_trip_and_report_block(tmp_path: Path) -> None:
    info = inspect_model(save(small_model(), tmp_path / "model.onnx"))
    assert ModelInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    model_schema = json.loads(SCHEMA.read_text())["$defs"]["model"]
    summary = info.model_summary()
    assert set(encode(summary)) == set(model_schema["required"])
    assert summary.inputs[0] == TensorSummary(name="x", dtype="float32", shape=("batch", 3))
    assert encode(summary.inputs[2])["shape"] == [None]
    assert info.model_summary("given/model.onnx") == replace(summary, path="given/model.onnx")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nothere\.onnx does not exist") as caught:
        inspect_model(tmp_path / "nothere.onnx")
    assert "\n" not in str(caught.value)


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="is not a file"):
        inspect_model(tmp_path)


def test_text_file_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_text("this is a text file, not a model\nsecond line\n")
    with pytest.raises(ModelError) as caught:
        inspect_model(path)
    message = str(caught.value)
    assert message.startswith("model.onnx is not an ONNX model")
    assert "torch.onnx.export" in message
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_model_cut_in_half_is_truncated(tmp_path: Path) -> None:
    data = small_model().SerializeToString()
    path = tmp_path / "half.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"half\.onnx is truncated"):
        inspect_model(path)


def test_prefix_that_parses_is_still_truncated(tmp_path: Path) -> None:
    """A cut after the graph parses cleanly; the missing opset imports give it away."""
    full = small_model()
    prefix = onnx.ModelProto()
    prefix.ir_version = full.ir_version
    prefix.graph.CopyFrom(full.graph)
    data = prefix.SerializeToString()
    assert full.SerializeToString().startswith(data)
    onnx.ModelProto().ParseFromString(data)  # protobuf accepts it
    path = tmp_path / "cut.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelError, match=r"cut\.onnx is truncated or incomplete \(it lacks the opset imports\)"):
        inspect_model(path)


def test_every_cut_of_a_real_model_is_detected(tmp_path: Path) -> None:
    data = small_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    for end in range(1, len(data), max(1, len(data) // 40)):
        path.write_bytes(data[:end])
        with pytest.raises(ModelError):
            inspect_model(path)


def test_checker_failure_names_the_file(tmp_path: Path) -> None:
    model = small_model()
    model.graph.node[1].input[0] = "undefined_tensor"
    with pytest.raises(ModelError, match=r"bad\.onnx fails the ONNX checker"):
        inspect_model(save(model, tmp_path / "bad.onnx"))


def _external(tmp_path: Path) -> Path:
    path = tmp_path / "ext.onnx"
    onnx.save(small_model(), str(path), save_as_external_data=True, location="ext.weights", size_threshold=0)
    return path


def test_external_data_is_reported(tmp_path: Path) -> None:
    info = inspect_model(_external(tmp_path))
    assert info.external_data == ("ext.weights",)
    assert info.external_data


def test_missing_external_data(tmp_path: Path) -> None:
    path = _external(tmp_path)
    (tmp_path / "ext.weights").unlink()
    with pytest.raises(ModelError, match=r"ext\.onnx stores weights in external data 'ext\.weights', which is missing"):
        inspect_model(path)


def test_short_external_data(tmp_path: Path) -> None:
    path = _external(tmp_path)
    weights = tmp_path / "ext.weights"
    weights.write_bytes(weights.read_bytes()[:10])
    with pytest.raises(ModelError, match=r"external data 'ext\.weights' to hold at least 48 bytes but it has 10"):
        inspect_model(path)


def test_external_data_outside_the_model_folder(tmp_path: Path) -> None:
    path = _external(tmp_path)
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../../etc/passwd"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="which is not a file beside it"):
        inspect_model(path)


# Found by the fuzzed corpus (tests/fuzzmodels.py) and scripts/fuzz: each ended in a traceback or a misleading line.


@pytest.mark.parametrize("where", ["input", "output", "initializer"])
def test_an_element_type_onnx_does_not_define_is_a_model_error(tmp_path: Path, where: str) -> None:
    model = small_model()
    if where == "initializer":
        model.graph.initializer[0].data_type = 999
    else:
        getattr(model.graph, where)[0].type.tensor_type.elem_type = 999
    with pytest.raises(
        ModelError,
        match=rf"odd\.onnx declares {where} '\w+' with element type 999, which ONNX does "
        "not define",
    ):
        inspect_model(save(model, tmp_path / "odd.onnx"))


def test_node_uses_leaves_out_an_element_type_onnx_does_not_define(tmp_path: Path) -> None:
    model = small_model()
    model.graph.initializer[0].data_type = 999
    uses = node_uses(save(model, tmp_path / "odd.onnx"))
    # The weight's type is unknown, so onnx infers none for the MatMul's output that Relu reads.
    assert [(u.op, u.input_type) for u in uses] == [("MatMul", "tensor(float)"), ("Relu", None)]


def _set_external(path: Path, **entries: str) -> Path:
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key in entries:
            entry.value = entries[entry.key]
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("key", "value"),
    [("offset", "abc"), ("offset", "-1"), ("offset", "1e3"), ("length", "12 bytes"), ("length", "-48")],
)
def test_an_external_offset_or_length_that_is_not_a_byte_count(tmp_path: Path, key: str, value: str) -> None:
    path = _set_external(_external(tmp_path), **{key: value})
    with pytest.raises(
        ModelError,
        match=rf"ext\.onnx gives external tensor 'w' the {key} '{value}', which is not a "
        "byte count",
    ):
        inspect_model(path)


def test_an_external_location_with_a_nul_byte_names_no_file(tmp_path: Path) -> None:
    path = _set_external(_external(tmp_path), location="ext\x00weights")
    with pytest.raises(ModelError, match=r"names external data 'ext\\x00weights', which is not a file beside it"):
        inspect_model(path)


def test_an_external_location_too_long_for_the_file_system(tmp_path: Path) -> None:
    path = _set_external(_external(tmp_path), location="w" * 5000)
    with pytest.raises(ModelError) as caught:
        inspect_model(path)
    message = str(caught.value)
    assert "ext.onnx stores weights in external data 'www" in message and "cannot be read" in message
    assert len(message) < 400  # the 5000-character name is cut


def test_subgraphs_nested_deeper_than_protobuf_reads_are_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "deep.onnx"
    path.write_bytes(nested_if(50))
    with pytest.raises(ModelError, match=r"deep\.onnx nests its subgraphs deeper than protobuf reads"):
        inspect_model(path)
    path.write_bytes(nested_if(20))  # deep, but within what protobuf reads
    assert inspect_model(path).op_types == frozenset({"ReduceSum", "Cast", "If", "Relu"})


@pytest.mark.parametrize(("text", "broken"), [(b"ext.weights", b"ext\x95\x97eights"), (b"yy", b"y\xff")])
def test_a_name_that_is_not_utf8_is_a_model_error(tmp_path: Path, text: bytes, broken: bytes) -> None:
    """protobuf hands such a proto2 string back as bytes: sorting locations (or writing the report) then raised."""
    model = small_model()
    model.graph.output[0].name = model.graph.node[1].output[0] = "yy"
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="ext.weights", size_threshold=0)
    data = path.read_bytes()
    assert text in data and len(text) == len(broken)
    path.write_bytes(data.replace(text, broken))
    with pytest.raises(ModelError, match=r"ext\.onnx holds a name that is not UTF-8 text \(b'"):
        inspect_model(path)
