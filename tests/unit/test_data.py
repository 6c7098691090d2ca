"""farm.inputs.data: --data/--labels/--shape/--samples into inputs.npz and labels.npy in contracts.md section 1 form."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from farm.errors import DataError
from farm.inputs.data import (
    DEFAULT_SYNTHETIC_SAMPLES,
    PreparedData,
    parse_shape_overrides,
    prepare_data,
    synthesize,
    write_npz,
)
from farm.job.codec import encode
from farm.job.report import DataSummary
from farm.model.inspect import ModelInfo, TensorInfo, inspect_model
from farm.model.shapes import Dim

SCHEMA = Path(__file__).resolve().parents[2] / "farm" / "report" / "schema.json"
ONNX_TESTS = Path(onnx.__file__).parent / "backend" / "test" / "data"


def model_info(*inputs: tuple[str, str, tuple[Dim, ...] | None], outputs: Sequence[str] = ("y",)) -> ModelInfo:
    return ModelInfo(
        path="model.onnx",
        sha256="0" * 64,
        size_bytes=1,
        ir_version=8,
        opsets={"ai.onnx": 17},
        op_types=frozenset({"Identity"}),
        inputs=tuple(TensorInfo(name=n, dtype=d, shape=s) for n, d, s in inputs),
        outputs=tuple(TensorInfo(name=n, dtype="float32", shape=None) for n in outputs),
    )


IMAGE = model_info(("x", "float32", ("batch", 3, "height", "width")))
DIGITS = model_info(("pixels", "float32", (1, 64)))
TWO = model_info(("x", "float32", (1, 4)), ("ids", "int64", (1, "seq")))


def npz(tmp_path: Path, name: str = "data.npz", **arrays: np.ndarray) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub confuses **arrays with allow_pickle
    return path


def one_line(error: pytest.ExceptionInfo[DataError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    assert error.value.exit_code == 2
    return message


# --shape


def test_parse_shape_overrides() -> None:
    assert parse_shape_overrides(["x=1,3,224,224", "in:0=2"]) == {"x": (1, 3, 224, 224), "in:0": (2,)}
    assert parse_shape_overrides([]) == {}


@pytest.mark.parametrize("spec", ["x", "=1,2", "x=", "x=1,,2", "x=a,b", "x=1,-3", "x=0,3", "x=1.5"])
def test_bad_shape_syntax(spec: str) -> None:
    with pytest.raises(DataError, match="--shape") as caught:
        parse_shape_overrides([spec])
    assert "e.g. --shape" in one_line(caught) or "like --shape" in one_line(caught)


def test_duplicate_shape() -> None:
    with pytest.raises(DataError, match="names 'x' twice"):
        parse_shape_overrides(["x=1", "x=2"])


def test_override_for_unknown_input_lists_valid_ones() -> None:
    with pytest.raises(DataError) as caught:
        parse_shape_overrides(["image=1,3,8,8"], model=TWO)
    message = one_line(caught)
    assert "'image'" in message
    assert "x, ids" in message


def test_override_rank_and_fixed_dims_must_fit() -> None:
    with pytest.raises(DataError, match="has 2 dimensions but model input 'x' has 4"):
        parse_shape_overrides(["x=1,3"], model=IMAGE)
    with pytest.raises(DataError, match="sets dimension 1 to 4 but model input 'x' fixes it at 3"):
        parse_shape_overrides(["x=1,4,8,8"], model=IMAGE)


# synthetic


def test_synthesize_needs_shape_for_dynamic_dims() -> None:
    with pytest.raises(DataError) as caught:
        prepare_data(IMAGE)
    message = one_line(caught)
    assert "'x'" in message
    assert "0 ('batch')" in message and "2 ('height')" in message and "3 ('width')" in message
    assert "--shape x=1,3,224,224" in message


def test_synthesize_names_every_unresolved_input() -> None:
    with pytest.raises(DataError) as caught:
        prepare_data(model_info(("a", "float32", None), ("b", "int64", (1, "seq_len"))))
    message = one_line(caught)
    assert "'a' has an unknown rank" in message
    assert "--shape a=d0,d1,..." in message
    assert "--shape b=1,128" in message


def test_synthesize_with_override_is_deterministic() -> None:
    model = model_info(
        ("x", "float32", ("batch", 3, "h", "w")),
        ("ids", "int64", (1, 5)),
        ("flag", "bool", ()),
        ("f16", "float16", (2,)),
    )
    shapes = parse_shape_overrides(["x=1,3,8,8"], model=model)
    first = prepare_data(model, shapes=shapes, samples=6)
    again = prepare_data(model, shapes=shapes, samples=6)
    assert first.source == "synthetic" and first.synthetic and first.samples == 6
    assert first.inputs["x"].shape == (6, 1, 3, 8, 8) and first.inputs["x"].dtype == np.float32
    assert first.inputs["ids"].shape == (6, 1, 5) and first.inputs["ids"].dtype == np.int64
    assert first.inputs["ids"].min() >= 0 and first.inputs["ids"].max() < 10
    assert first.inputs["flag"].shape == (6,) and first.inputs["flag"].dtype == np.bool_
    assert first.inputs["f16"].dtype == np.float16
    for name in model.input_names:
        np.testing.assert_array_equal(first.inputs[name], again.inputs[name])
    assert abs(float(synthesize(model, samples=200, shapes=shapes)["x"].std()) - 1.0) < 0.05
    assert any("synthetic" in w for w in first.warnings)
    assert first.summary() == DataSummary(source="synthetic", samples=6, synthetic=True, labels=False)


def test_synthesize_default_count_and_seed() -> None:
    default = prepare_data(DIGITS)
    assert default.samples == DEFAULT_SYNTHETIC_SAMPLES
    other = prepare_data(DIGITS, seed=1)
    assert not np.array_equal(default.inputs["pixels"], other.inputs["pixels"])


def test_synthesize_refuses_strings() -> None:
    with pytest.raises(DataError, match="'text' is string, which farm cannot synthesize"):
        prepare_data(model_info(("text", "string", (1,))))


@pytest.mark.parametrize("shape", [(1, 3, 1_000_000, 1_000_000), (2**62,), (2**32, 2**32, 2**32), (1, 30_000, 30_000)])
def test_synthetic_inputs_too_big_to_make_are_refused_before_any_allocation(shape: tuple[int, ...]) -> None:
    """A fuzzed model declared [1, 3, 1e6, 1e6]: numpy raised MemoryError, or the OOM killer ended farm."""
    with pytest.raises(DataError) as caught:
        prepare_data(model_info(("x", "float32", shape)), samples=2)
    message = one_line(caught)
    assert message.startswith(f"synthetic inputs for model.onnx ('x' [{', '.join(map(str, shape))}]) would take ")
    assert "more than the 1.0 GiB farm makes" in message and "--data FILE.npz" in message


def test_the_refusal_says_how_many_samples_would_fit() -> None:
    image = model_info(("x", "float32", (1, 3, 1024, 1024)))  # 12 MiB a sample
    assert prepare_data(image, samples=2).inputs["x"].shape == (2, 1, 3, 1024, 1024)
    with pytest.raises(DataError, match=r"would take 1\.1 GiB.*; pass --samples 85 or fewer, --shape"):
        prepare_data(image, samples=90)


def test_synthetic_inputs_of_a_rank_numpy_cannot_hold_are_refused() -> None:
    with pytest.raises(
        DataError,
        match=r"input 'x' need 65 dimensions \(the sample axis and rank 64\), more than "
        r"numpy's 64",
    ):
        prepare_data(model_info(("x", "float32", (1,) * 64)), samples=1)
    assert prepare_data(model_info(("x", "float32", (1,) * 63)), samples=1).inputs["x"].ndim == 64


@pytest.mark.parametrize(
    ("dtype", "shape", "words"),
    [
        ("float32", (1, None), "synthetic inputs for model.onnx need fixed sizes, but input 'x' [1, ?] has dynamic "),
        ("complex64", (1, 4), "model.onnx input 'x' is complex64, which farm cannot synthesize"),
        ("map", None, "model.onnx input 'x' has type map, which has no numpy equivalent"),
    ],
)
def test_a_refused_synthetic_input_names_the_model_file(dtype: str, shape: tuple[Dim, ...] | None, words: str) -> None:
    with pytest.raises(DataError) as caught:
        prepare_data(model_info(("x", dtype, shape)), samples=2)
    assert one_line(caught).startswith(words)


def test_labels_need_data(tmp_path: Path) -> None:
    labels = tmp_path / "labels.npy"
    np.save(labels, np.zeros(3, dtype=np.int64))
    with pytest.raises(DataError, match=r"--labels labels\.npy was given without --data"):
        prepare_data(DIGITS, labels=labels)


def test_samples_must_be_positive() -> None:
    with pytest.raises(DataError, match="--samples 0"):
        prepare_data(DIGITS, samples=0)


# --data FILE.npz


def test_npz_in_contract_form_is_kept(tmp_path: Path) -> None:
    pixels = np.arange(5 * 64, dtype=np.float32).reshape(5, 1, 64)
    prepared = prepare_data(DIGITS, data=npz(tmp_path, pixels=pixels))
    assert prepared.source == "npz" and prepared.samples == 5 and not prepared.synthetic
    np.testing.assert_array_equal(prepared.inputs["pixels"], pixels)


def test_npz_batch_axis_is_split_into_batch_one_feeds(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).random((7, 64), dtype=np.float32)
    prepared = prepare_data(DIGITS, data=npz(tmp_path, pixels=pixels))
    assert prepared.inputs["pixels"].shape == (7, 1, 64)
    np.testing.assert_array_equal(prepared.inputs["pixels"][3, 0], pixels[3])
    dynamic = model_info(("x", "float32", ("N", 64)))
    assert prepare_data(dynamic, data=npz(tmp_path, x=pixels)).inputs["x"].shape == (7, 1, 64)


def test_npz_for_fixed_batch_above_one_is_one_sample(tmp_path: Path) -> None:
    model = model_info(("x", "float32", (4, 3)))
    prepared = prepare_data(model, data=npz(tmp_path, x=np.ones((4, 3), np.float32)))
    assert prepared.samples == 1 and prepared.inputs["x"].shape == (1, 4, 3)


def test_npz_scalar_input(tmp_path: Path) -> None:
    model = model_info(("rate", "int64", ()))
    prepared = prepare_data(model, data=npz(tmp_path, rate=np.array([8000, 16000, 44100])))
    assert prepared.inputs["rate"].shape == (3,)
    prepared.write(tmp_path / "out")
    with np.load(tmp_path / "out" / "inputs.npz") as written:
        feed = np.asarray(written["rate"][1])
    assert feed.shape == () and feed.dtype == np.int64 and int(feed) == 16000


def test_npz_missing_input_names_it_and_lists_keys(tmp_path: Path) -> None:
    path = npz(tmp_path, x=np.ones((2, 1, 4), np.float32), input_ids=np.ones((2, 1, 3), np.int64))
    with pytest.raises(DataError) as caught:
        prepare_data(TWO, data=path)
    message = one_line(caught)
    assert "data.npz has no array for model input 'ids'" in message
    assert "input_ids, x" in message


def test_npz_wrong_fixed_dim_says_expected_and_got(tmp_path: Path) -> None:
    path = npz(tmp_path, pixels=np.ones((3, 1, 65), np.float32))
    with pytest.raises(DataError) as caught:
        prepare_data(DIGITS, data=path)
    message = one_line(caught)
    assert "data.npz['pixels']" in message
    assert "expected 64, got 65" in message


def test_npz_wrong_rank(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"has shape \(2, 2, 1, 64\) but model input 'pixels' has rank 2"):
        prepare_data(DIGITS, data=npz(tmp_path, pixels=np.ones((2, 2, 1, 64), np.float32)))


def test_npz_safe_and_lossless_casts(tmp_path: Path) -> None:
    model = model_info(("x", "float32", (1, 2)), ("ids", "int32", (1, 2)))
    path = npz(tmp_path, x=np.ones((2, 1, 2), np.float64), ids=np.full((2, 1, 2), 7, np.int64))
    prepared = prepare_data(model, data=path)
    assert prepared.inputs["x"].dtype == np.float32
    assert prepared.inputs["ids"].dtype == np.int32
    assert prepare_data(model_info(("x", "float32", (1, 2))), data=npz(tmp_path, x=np.ones((2, 1, 2), np.uint8)))


@pytest.mark.parametrize(
    ("dtype", "array"),
    [
        ("int64", np.full((2, 1, 2), 0.5, np.float32)),
        ("int32", np.full((2, 1, 2), 2**40, np.int64)),
        ("float32", np.full((2, 1, 2), 1e300, np.float64)),
        ("bool", np.ones((2, 1, 2), np.int64)),
    ],
)
def test_npz_lossy_cast_is_refused(tmp_path: Path, dtype: str, array: np.ndarray) -> None:
    with pytest.raises(DataError) as caught:
        prepare_data(model_info(("x", dtype, (1, 2))), data=npz(tmp_path, x=array))
    message = one_line(caught)
    assert f"has dtype {array.dtype} but model input 'x' is {dtype}" in message
    assert f"astype(np.{dtype})" in message


def test_npz_sample_counts_must_match(tmp_path: Path) -> None:
    path = npz(tmp_path, x=np.ones((3, 1, 4), np.float32), ids=np.ones((5, 1, 2), np.int64))
    with pytest.raises(DataError, match=r"different sample counts per input \('x' 3, 'ids' 5\)"):
        prepare_data(TWO, data=path)


def test_npz_unnamed_arrays_match_by_position(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, np.ones((2, 1, 4), np.float32), np.ones((2, 1, 3), np.int64))
    prepared = prepare_data(TWO, data=path)
    assert prepared.inputs["ids"].shape == (2, 1, 3)
    assert any("by position" in w for w in prepared.warnings)


def test_npz_extra_arrays_are_a_warning(tmp_path: Path) -> None:
    prepared = prepare_data(DIGITS, data=npz(tmp_path, pixels=np.ones((2, 64), np.float32), junk=np.ones(2)))
    assert any("junk" in w for w in prepared.warnings)


def test_data_that_is_not_npz(tmp_path: Path) -> None:
    text = tmp_path / "data.npz"
    text.write_text("not an archive")
    with pytest.raises(DataError, match=r"--data data\.npz is not a readable \.npz archive"):
        prepare_data(DIGITS, data=text)
    single = tmp_path / "single.npy"
    np.save(single, np.ones((2, 64), np.float32))
    with pytest.raises(DataError, match=r"single\.npy is a single \.npy array, not an \.npz archive"):
        prepare_data(DIGITS, data=single)
    with pytest.raises(DataError, match=r"--data .*missing\.npz does not exist"):
        prepare_data(DIGITS, data=tmp_path / "missing.npz")


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, pixels=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match=r"data\.npz has an array that cannot be read"):
        prepare_data(DIGITS, data=path)


def test_bundled_source(tmp_path: Path) -> None:
    prepared = prepare_data(DIGITS, data=npz(tmp_path, pixels=np.ones((2, 64), np.float32)), source="bundled")
    assert prepared.summary().source == "bundled"
    with pytest.raises(ValueError, match="does not fit"):
        prepare_data(DIGITS, source="npz")


# --labels and --samples


def labels_file(tmp_path: Path, labels: np.ndarray, name: str = "labels.npy") -> Path:
    path = tmp_path / name
    np.save(path, labels)
    return path


def test_labels_and_samples(tmp_path: Path) -> None:
    pixels = np.arange(10 * 64, dtype=np.float32).reshape(10, 64)
    labels = labels_file(tmp_path, np.arange(10, dtype=np.int32))
    prepared = prepare_data(DIGITS, data=npz(tmp_path, pixels=pixels), labels=labels, samples=4)
    assert prepared.samples == 4
    assert prepared.inputs["pixels"].shape == (4, 1, 64)
    assert prepared.labels is not None and prepared.labels.dtype == np.int64
    np.testing.assert_array_equal(prepared.labels, [0, 1, 2, 3])
    assert prepared.summary() == DataSummary(source="npz", samples=4, synthetic=False, labels=True)
    more = prepare_data(DIGITS, data=npz(tmp_path, pixels=pixels), samples=50)
    assert more.samples == 10 and any("--samples 50" in w for w in more.warnings)


def test_labels_length_must_match_before_samples(tmp_path: Path) -> None:
    data = npz(tmp_path, pixels=np.ones((10, 64), np.float32))
    labels = labels_file(tmp_path, np.zeros(9, dtype=np.int64), "y.npy")
    with pytest.raises(DataError) as caught:
        prepare_data(DIGITS, data=data, labels=labels, samples=3)
    message = one_line(caught)
    assert "--labels y.npy holds 9 labels but --data data.npz holds 10 samples" in message


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (np.zeros(3, np.float32), "dtype float32, not an integer type"),
        (np.zeros((3, 1), np.int64), r"shape \(3, 1\), not \(N,\)"),
        (np.array([0, -1, 2]), "negative values"),
    ],
)
def test_bad_labels(tmp_path: Path, labels: np.ndarray, expected: str) -> None:
    data = npz(tmp_path, pixels=np.ones((3, 64), np.float32))
    with pytest.raises(DataError, match=rf"--labels labels\.npy .*{expected}"):
        prepare_data(DIGITS, data=data, labels=labels_file(tmp_path, labels))


def test_missing_labels_file(tmp_path: Path) -> None:
    data = npz(tmp_path, pixels=np.ones((3, 64), np.float32))
    with pytest.raises(DataError, match=r"--labels .*nope\.npy does not exist"):
        prepare_data(DIGITS, data=data, labels=tmp_path / "nope.npy")


# --data DIR in the ONNX test-data layout


def write_test_set(
    root: Path, index: int, inputs: Sequence[tuple[str, np.ndarray]], outputs: Sequence[np.ndarray] = ()
) -> None:
    folder = root / f"test_data_set_{index}"
    folder.mkdir(parents=True)
    for i, (name, array) in enumerate(inputs):
        (folder / f"input_{i}.pb").write_bytes(numpy_helper.from_array(array, name).SerializeToString())
    for i, array in enumerate(outputs):
        (folder / f"output_{i}.pb").write_bytes(numpy_helper.from_array(array, "y").SerializeToString())


def test_test_data_dir_matched_by_name(tmp_path: Path) -> None:
    for index in range(3):
        write_test_set(
            tmp_path,
            index,
            # Written out of the model's order: the TensorProto names decide.
            [("ids", np.full((1, 6), index, np.int64)), ("x", np.full((1, 4), index, np.float32))],
            [np.full((1, 2), index, np.float32)],
        )
    prepared = prepare_data(TWO, data=tmp_path)
    assert prepared.source == "onnx-test-data" and prepared.samples == 3
    assert prepared.inputs["x"].shape == (3, 1, 4) and prepared.inputs["ids"].shape == (3, 1, 6)
    np.testing.assert_array_equal(prepared.inputs["ids"][2], np.full((1, 6), 2))
    assert prepared.expected_outputs is not None
    assert prepared.expected_outputs["y"].shape == (3, 1, 2)


def test_test_data_dir_matched_by_position_and_natural_order(tmp_path: Path) -> None:
    for index in range(11):
        write_test_set(tmp_path, index, [("", np.full((1, 64), index, np.float32))])
    prepared = prepare_data(DIGITS, data=tmp_path, samples=11)
    assert prepared.samples == 11
    np.testing.assert_array_equal(prepared.inputs["pixels"][:, 0, 0], np.arange(11))
    assert prepared.expected_outputs is None


def test_single_test_data_set_folder(tmp_path: Path) -> None:
    write_test_set(tmp_path, 0, [("pixels", np.ones((1, 64), np.float32))])
    assert prepare_data(DIGITS, data=tmp_path / "test_data_set_0").samples == 1


def test_test_data_dir_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no test_data_set_\*/input_\*\.pb"):
        prepare_data(DIGITS, data=tmp_path / "empty")
    write_test_set(tmp_path / "count", 0, [("", np.ones((1, 4), np.float32))])
    with pytest.raises(DataError, match=r"test_data_set_0 has 1 input_\*\.pb files but the model has 2 inputs"):
        prepare_data(TWO, data=tmp_path / "count")
    write_test_set(tmp_path / "shape", 0, [("pixels", np.ones((1, 63), np.float32))])
    with pytest.raises(DataError, match="expected 64, got 63"):
        prepare_data(DIGITS, data=tmp_path / "shape")
    write_test_set(tmp_path / "ragged", 0, [("ids", np.ones((1, 2), np.int64)), ("x", np.ones((1, 4), np.float32))])
    write_test_set(tmp_path / "ragged", 1, [("ids", np.ones((1, 3), np.int64)), ("x", np.ones((1, 4), np.float32))])
    with pytest.raises(DataError, match=r"input 'ids' has different shapes across test_data_set_\*"):
        prepare_data(TWO, data=tmp_path / "ragged")
    bad = tmp_path / "garbage" / "test_data_set_0"
    bad.mkdir(parents=True)
    (bad / "input_0.pb").write_bytes(b"\xff\xff\xff")
    with pytest.raises(DataError, match=r"test_data_set_0/input_0\.pb is not a serialized TensorProto"):
        prepare_data(DIGITS, data=tmp_path / "garbage")


@pytest.mark.parametrize("case_name", ["test_Conv2d", "test_Embedding"])
def test_onnx_backend_test_data_runs_to_its_expected_output(case_name: str) -> None:
    case = ONNX_TESTS / "pytorch-converted" / case_name
    info = inspect_model(case / "model.onnx")
    prepared = prepare_data(info, data=case)
    assert prepared.expected_outputs is not None
    session = ort.InferenceSession(str(case / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {name: array[0] for name, array in prepared.inputs.items()}
    (got,) = session.run(None, feeds)
    np.testing.assert_allclose(got, prepared.expected_outputs[info.outputs[0].name][0], rtol=1e-5, atol=1e-6)


# write


def test_write_contract_files_even_for_awkward_input_names(tmp_path: Path) -> None:
    model = model_info(("file", "float32", (1, 2)), ("allow_pickle", "int64", ()))
    data = tmp_path / "data.npz"
    # np.savez itself cannot take these names as keywords.
    write_npz(data, {"file": np.ones((3, 1, 2), np.float32), "allow_pickle": np.arange(3)})
    labels = labels_file(tmp_path, np.array([1, 0, 1], np.uint8))
    prepared = prepare_data(model, data=data, labels=labels)
    files = prepared.write(tmp_path / "in")
    assert files.inputs == tmp_path / "in" / "inputs.npz"
    assert files.labels == tmp_path / "in" / "labels.npy"
    with np.load(files.inputs, allow_pickle=False) as written:
        assert sorted(written.files) == ["allow_pickle", "file"]
        assert written["file"].shape == (3, 1, 2)
        assert written["allow_pickle"].shape == (3,)
    saved = np.load(files.labels, allow_pickle=False)
    assert saved.dtype == np.int64 and saved.tolist() == [1, 0, 1]
    data_schema = json.loads(SCHEMA.read_text())["$defs"]["data"]
    assert set(encode(prepared.summary())) == set(data_schema["required"])


def test_write_without_labels(tmp_path: Path) -> None:
    files = PreparedData(source="synthetic", samples=1, inputs={"x": np.zeros((1, 2))}).write(tmp_path)
    assert files.labels is None
    assert sorted(os.listdir(tmp_path)) == ["inputs.npz"]


# Issue 6: exporters' negative dims and a dynamic batch


def test_a_dynamic_batch_alone_is_filled_with_one_for_synthetic_inputs() -> None:
    model = model_info(("x", "float32", (None, 3, 8, 8)), ("sr", "int64", ()))
    data = prepare_data(model, samples=3)
    assert data.inputs["x"].shape == (3, 1, 3, 8, 8)
    assert data.inputs["sr"].shape == (3,)


def test_negative_dims_from_an_exporter_are_dynamic(tmp_path: Path) -> None:
    path = tmp_path / "paddle.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [-1, 3, 0, 192])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [x],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [-1])],
    )
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 11)], ir_version=6), path)
    info = inspect_model(path)
    assert info.inputs[0].shape == (None, 3, None, 192)
    assert info.inputs[0].dynamic_dims == (0, 2)
    data = prepare_data(info, data=npz(tmp_path, x=np.zeros((4, 1, 3, 48, 192), np.float32)))
    assert data.inputs["x"].shape == (4, 1, 3, 48, 192)
    shapes = parse_shape_overrides(["x=1,3,48,192"], model=info)
    assert prepare_data(info, shapes=shapes, samples=2).inputs["x"].shape == (2, 1, 3, 48, 192)
