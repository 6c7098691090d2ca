"""farm.model.rewrite: onnxoptimizer on the host, keeping the input's IR and opsets, cached, never fatal."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import onnxoptimizer
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from farm.host.files import LOCKS_DIR
from farm.model.inspect import inspect_model
from farm.model.rewrite import MAX_REWRITE_DEPTH, default_passes, rewrite_model, subgraph_depth
from tests.fuzzmodels import nested_if


def redundant_model(*, ir_version: int = 8, opset: int = 13) -> onnx.ModelProto:
    """An Identity and a pair of Transposes that the default passes remove or fuse, around a MatMul + Add."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["x"], ["x1"]),
            helper.make_node("Transpose", ["x1"], ["t1"], perm=[1, 0]),
            helper.make_node("Transpose", ["t1"], ["t2"], perm=[1, 0]),
            helper.make_node("MatMul", ["t2", "w"], ["m"]),
            helper.make_node("Add", ["m", "b"], ["y"]),
        ],
        "redundant",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [
            numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {"x": x})[0]
    return result


def test_rewrite_keeps_ir_and_opsets_and_outputs(tmp_path: Path) -> None:
    assert onnx.IR_VERSION > 8  # the host's onnx would stamp a newer IR
    src = tmp_path / "model.onnx"
    onnx.save(redundant_model(ir_version=8, opset=13), str(src))
    result = rewrite_model(src, tmp_path / "out" / "rewritten.onnx")
    assert result.rewritten and result.warning is None and not result.cached
    assert result.passes == default_passes() == tuple(onnxoptimizer.get_fuse_and_elimination_passes())
    assert result.nodes_before == 5 and result.nodes_after < 5
    written = onnx.load(str(result.path))
    assert written.ir_version == 8
    assert [(o.domain, o.version) for o in written.opset_import] == [("", 13)]
    onnx.checker.check_model(written)
    assert "Identity" not in inspect_model(result.path).op_types
    assert [n.op_type for n in written.graph.node].count("Transpose") == 1
    x = np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32)
    np.testing.assert_allclose(run(result.path, x), run(src, x), rtol=1e-5, atol=1e-6)


def entries(cache: Path) -> list[Path]:
    """The cache's entries, less the folder of lock files that keeps two farm runs from rewriting at once."""
    return [p for p in cache.iterdir() if p.name != LOCKS_DIR]


def test_rewrite_is_cached_by_content(tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    onnx.save(redundant_model(), str(src))
    cache = tmp_path / "cache"
    first = rewrite_model(src, tmp_path / "a.onnx", cache_dir=cache)
    second = rewrite_model(src, tmp_path / "b.onnx", cache_dir=cache)
    assert not first.cached and second.cached
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert second.nodes_after == first.nodes_after
    assert len(entries(cache)) == 1
    onnx.save(redundant_model(opset=17), str(src))
    third = rewrite_model(src, tmp_path / "c.onnx", cache_dir=cache)
    assert not third.cached
    assert onnx.load(str(third.path)).opset_import[0].version == 17
    assert len(entries(cache)) == 2


def test_optimizer_failure_falls_back_to_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(model: onnx.ModelProto, passes: list[str]) -> onnx.ModelProto:
        raise RuntimeError("pass exploded\nwith detail")

    monkeypatch.setattr(onnxoptimizer, "optimize", broken)
    src = tmp_path / "model.onnx"
    onnx.save(redundant_model(), str(src))
    cache = tmp_path / "cache"
    result = rewrite_model(src, tmp_path / "rewritten.onnx", cache_dir=cache)
    assert not result.rewritten
    assert result.warning is not None
    assert "onnxoptimizer" in result.warning and "pass exploded with detail" in result.warning
    assert "\n" not in result.warning
    assert result.nodes_after == result.nodes_before == 5
    assert onnx.load(str(result.path)) == onnx.load(str(src))
    again = rewrite_model(src, tmp_path / "again.onnx", cache_dir=cache)
    assert again.cached and again.warning == result.warning


def test_optimizer_output_that_fails_the_checker_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def dangling(model: onnx.ModelProto, passes: list[str]) -> onnx.ModelProto:
        broken = onnx.ModelProto()
        broken.CopyFrom(model)
        broken.graph.node[0].input[0] = "nowhere"
        return broken

    monkeypatch.setattr(onnxoptimizer, "optimize", dangling)
    src = tmp_path / "model.onnx"
    onnx.save(redundant_model(), str(src))
    result = rewrite_model(src, tmp_path / "rewritten.onnx")
    assert not result.rewritten and result.warning is not None
    assert onnx.load(str(result.path)) == onnx.load(str(src))


def test_external_data_model(tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    onnx.save(redundant_model(), str(src), save_as_external_data=True, location="weights.bin", size_threshold=0)
    cache = tmp_path / "cache"
    result = rewrite_model(src, tmp_path / "out" / "rewritten.onnx", cache_dir=cache)
    assert result.rewritten
    x = np.ones((1, 8), np.float32)
    np.testing.assert_allclose(run(result.path, x), run(src, x), rtol=1e-5, atol=1e-6)
    # The weights are part of the cache key, not just the .onnx file that points at them.
    weights = tmp_path / "weights.bin"
    weights.write_bytes(bytes(len(weights.read_bytes())))
    assert not rewrite_model(src, tmp_path / "out" / "zeros.onnx", cache_dir=cache).cached


def test_an_ir3_model_gets_its_weights_as_constants_only_and_says_so(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((4, 2), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "ir3",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 2]),
        ],  # as IR 3 exporters list weights
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[w],
    )
    source = tmp_path / "ir3.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3), source)
    result = rewrite_model(source, tmp_path / "out.onnx")
    written = onnx.load(str(result.path))
    assert [i.name for i in written.graph.input] == ["x"] and written.ir_version == 4
    assert result.note is not None and "IR 3, which lists its 1 weights as graph inputs" in result.note
    assert onnx.load(str(source)).ir_version == 3  # the user's model is untouched


def test_a_model_nested_deeper_than_onnxoptimizer_can_take_is_kept_as_given(tmp_path: Path) -> None:
    """A fuzzed If-in-If model 30 levels deep kept onnxoptimizer busy for an hour (its time doubles per level)."""
    src = tmp_path / "deep.onnx"
    src.write_bytes(nested_if(30))
    started = time.monotonic()
    result = rewrite_model(src, tmp_path / "out" / "rewritten.onnx")
    assert time.monotonic() - started < 5
    assert not result.rewritten and result.nodes_after == result.nodes_before == 3
    assert result.warning is not None and "nests subgraphs 31 levels deep" in result.warning
    assert onnx.load(str(result.path)) == onnx.load(str(src))


def test_a_model_nested_a_few_levels_is_still_rewritten(tmp_path: Path) -> None:
    src = tmp_path / "nested.onnx"
    src.write_bytes(nested_if(MAX_REWRITE_DEPTH - 1))
    assert subgraph_depth(onnx.load(str(src))) == MAX_REWRITE_DEPTH
    result = rewrite_model(src, tmp_path / "out" / "rewritten.onnx")
    assert result.rewritten and result.warning is None


def test_farm_optimize_on_a_model_onnxoptimizer_cannot_take_is_the_users_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from farm.errors import ModelError
    from farm.inputs.data import prepare_data
    from farm.model.inspect import inspect_model
    from farm.model.optimize import optimize_model

    def broken(model: onnx.ModelProto, passes: list[str]) -> onnx.ModelProto:
        raise RuntimeError("pass exploded")

    monkeypatch.setattr(onnxoptimizer, "optimize", broken)
    src = tmp_path / "model.onnx"
    onnx.save(redundant_model(), str(src))
    info = inspect_model(src)
    with pytest.raises(ModelError) as caught:
        optimize_model(
            src, tmp_path / "out.onnx", info, prepare_data(info, samples=2), passes=None, fold=False, max_ir=None
        )
    assert caught.value.exit_code == 2 and "model.onnx" in str(caught.value) and "pass exploded" in str(caught.value)
