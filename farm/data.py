"""The job's inputs, made on the host: loaded from --data, or synthesized, then normalised to contracts.md section 1.

Every shape, dtype and count problem is caught here, where the message can name the user's file and flag, rather
than inside a container, where onnxruntime would report it once per target in its own words.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper

from farm.errors import DataError, one_line
from farm.inspect import ModelInfo, TensorInfo
from farm.report.model import SYNTHETIC_WARNING
from farm.shapes import Dim, shape_text

DataSource = Literal["bundled", "npz", "onnx-test-data", "synthetic"]
Shape = tuple[int, ...]
Array = npt.NDArray[Any]

DEFAULT_SYNTHETIC_SAMPLES = 32
# Synthetic inputs are random numbers written to inputs.npz and read by every target: past this they say nothing
# more about the model, and making them (numpy's float64 draw first) needs three times as much memory.
SYNTHETIC_LIMIT_BYTES = 1 << 30
# numpy's limit on an array's dimensions (NPY_MAXDIMS); a synthetic input adds the sample axis to the declared rank.
MAX_RANK = 64
# "Small non-negative" keeps synthetic integers valid as indices, token ids and class ids in most models.
SYNTHETIC_INT_HIGH = 10
_NATURAL = re.compile(r"(\d+)")


@dataclass(frozen=True, kw_only=True, slots=True)
class DataFiles:
    """What ``PreparedData.write`` wrote: the names the job spec refers to."""

    inputs: Path
    labels: Path | None


@dataclass(frozen=True, kw_only=True, eq=False)
class PreparedData:
    """The job's inputs in contract form: per input, axis 0 is the sample and ``array[i]`` is one feed."""

    source: DataSource
    samples: int
    inputs: Mapping[str, Array]
    labels: Array | None = None
    # From an ONNX test-data directory's output_*.pb; the controller may compare fp32 results with them.
    expected_outputs: Mapping[str, Array] | None = None
    warnings: tuple[str, ...] = ()

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    def sha256(self) -> str:
        """One hash over the inputs (names, types, shapes, values) and the labels: the report's data_sha256, and
        part of what a resumed result or search depends on."""
        digest = hashlib.sha256()
        for name in sorted(self.inputs):
            array = np.ascontiguousarray(self.inputs[name])
            digest.update(f"{name}:{array.dtype}:{array.shape};".encode())
            digest.update(array.tobytes())
        if self.labels is not None:
            digest.update(b"labels;" + np.ascontiguousarray(self.labels).tobytes())
        return digest.hexdigest()

    def summary(self) -> dict[str, Any]:
        """The report's "data" block."""
        return {
            "source": self.source,
            "samples": self.samples,
            "synthetic": self.synthetic,
            "labels": self.labels is not None,
        }

    def write(self, directory: str | os.PathLike[str]) -> DataFiles:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        inputs = out / "inputs.npz"
        write_npz(inputs, self.inputs)
        labels = None
        if self.labels is not None:
            labels = out / "labels.npy"
            np.save(labels, self.labels.astype(np.int64), allow_pickle=False)
        return DataFiles(inputs=inputs, labels=labels)


def write_npz(path: Path, arrays: Mapping[str, Array]) -> None:
    """Like ``np.savez``, but an input may be called ``file`` or ``allow_pickle`` (savez's own parameters)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def parse_shape_overrides(specs: Iterable[str], *, model: ModelInfo | None = None) -> dict[str, Shape]:
    """``["x=1,3,224,224"]`` → ``{"x": (1, 3, 224, 224)}``; with ``model``, each override must fit its input."""
    shapes: dict[str, Shape] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition("=")
        if not sep or not name:
            raise DataError(
                f"--shape '{spec}' is not NAME=d0,d1,...",
                fix="write it like --shape x=1,3,224,224 (the input's name, '=', its sizes separated by commas)",
            )
        parts = dims.split(",")
        if not all(re.fullmatch(r"\s*[0-9]+\s*", part) and int(part) > 0 for part in parts):
            raise DataError(
                f"--shape '{spec}' has sizes '{dims}', which are not positive integers",
                fix=f"write each dimension as a positive integer, e.g. --shape {name}=1,3,224,224",
            )
        if name in shapes:
            raise DataError(f"--shape names '{name}' twice", fix="give one --shape per input")
        shapes[name] = tuple(int(part) for part in parts)
    if model is not None:
        check_shape_overrides(shapes, model)
    return shapes


def check_shape_overrides(shapes: Mapping[str, Shape], model: ModelInfo) -> None:
    for name, shape in shapes.items():
        if name not in model.input_names:
            raise DataError(
                f"--shape names '{name}', which is not an input of the model",
                fix=f"use one of the model's inputs: {_names(model.input_names)}",
            )
        declared = model.input(name).shape
        if declared is None:
            continue
        if len(shape) != len(declared):
            raise DataError(
                f"--shape {name}={_dims(shape)} has {len(shape)} dimensions but model input '{name}' has "
                f"{len(declared)} {shape_text(declared)}",
                fix=f"give {len(declared)} sizes, e.g. --shape {name}={_dims(_example(model.input(name)))}",
            )
        for index, (size, want) in enumerate(zip(shape, declared, strict=True)):
            if isinstance(want, int) and size != want:
                raise DataError(
                    f"--shape {name}={_dims(shape)} sets dimension {index} to {size} but model input '{name}' "
                    f"fixes it at {want} {shape_text(declared)}",
                    fix=f"keep the model's fixed sizes, e.g. --shape {name}={_dims(_example(model.input(name)))}",
                )


def prepare_data(
    model: ModelInfo,
    *,
    data: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    samples: int | None = None,
    shapes: Mapping[str, Shape] | None = None,
    seed: int = 0,
    source: DataSource | None = None,
) -> PreparedData:
    """Load ``data`` (an .npz or an ONNX test-data directory) or synthesize inputs, and check them against ``model``.

    ``samples`` takes the first N samples (or makes N synthetic ones). ``source`` is normally inferred from ``data``;
    pass "bundled" for farm's own default data (an .npz); any other value must match what ``data`` is.
    """
    shapes = dict(shapes or {})
    check_shape_overrides(shapes, model)
    if samples is not None and samples < 1:
        raise DataError(f"--samples {samples} is not a positive count", fix="pass --samples 1 or more")
    for tensor in model.inputs:
        _numpy_dtype(tensor, Path(model.path).name)
    if data is None:
        _check_source(source, "synthetic")
        if labels is not None:
            raise DataError(
                f"--labels {Path(labels).name} was given without --data, and labels cannot describe synthetic inputs",
                fix="pass --data with the inputs the labels belong to, or drop --labels",
            )
        count = samples or DEFAULT_SYNTHETIC_SAMPLES
        return PreparedData(
            source="synthetic",
            samples=count,
            inputs=synthesize(model, samples=count, shapes=shapes, seed=seed),
            warnings=(SYNTHETIC_WARNING,),
        )

    path = Path(data)
    warnings: list[str] = []
    expected: dict[str, Array] | None = None
    if path.is_dir():
        _check_source(source, "onnx-test-data")
        source = "onnx-test-data"
        inputs, expected, found = load_test_data(path, model, shapes=shapes)
        warnings.extend(found)
    elif path.is_file():
        _check_source(source, "npz", "bundled")
        source = source or "npz"
        inputs, found = load_npz(path, model, shapes=shapes)
        warnings.extend(found)
    else:
        raise DataError(
            f"--data {path} does not exist",
            fix="pass an .npz file (one array per input name) or an ONNX test-data directory",
        )
    count = _sample_count(inputs, path)
    label_array = None
    if labels is not None:
        label_array = load_labels(labels)
        if len(label_array) != count:
            raise DataError(
                f"--labels {Path(labels).name} holds {len(label_array)} labels but --data {path.name} holds "
                f"{count} samples",
                fix="pass one label per sample, in the same order as the data",
            )
    if samples is not None:
        if samples > count:
            warnings.append(f"--samples {samples} asked for more than the {count} samples in {path.name}; using all")
        count = min(count, samples)
        inputs = {name: array[:count] for name, array in inputs.items()}
        label_array = None if label_array is None else label_array[:count]
        expected = None if expected is None else {name: array[:count] for name, array in expected.items()}
    return PreparedData(
        source=source,
        samples=count,
        inputs=inputs,
        labels=label_array,
        expected_outputs=expected,
        warnings=tuple(warnings),
    )


def _check_source(given: DataSource | None, *allowed: DataSource) -> None:
    if given is not None and given not in allowed:
        # A caller's mistake, not the user's: the flags decide the data, and the data decides its source.
        raise ValueError(f"data source {given!r} does not fit the data given (expected {' or '.join(allowed)})")


def load_npz(
    path: Path, model: ModelInfo, *, shapes: Mapping[str, Shape] | None = None
) -> tuple[dict[str, Array], list[str]]:
    """One array per input name, axis 0 the sample; returns the inputs in contract form and any warnings."""
    shapes = shapes or {}
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(
            f"--data {path.name} is not a readable .npz archive ({one_line(exc, 200)})",
            fix="save the inputs with np.savez(PATH, NAME=array, ...), one array per model input name",
        ) from exc
    if isinstance(loaded, np.ndarray):
        raise DataError(
            f"--data {path.name} is a single .npy array, not an .npz archive",
            fix="save it with np.savez(PATH, NAME=array), one keyword per model input",
        )
    try:
        with loaded as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"--data {path.name} has an array that cannot be read ({one_line(exc, 200)})",
            fix="save plain numeric arrays with np.savez (object arrays are refused)",
        ) from exc
    warnings: list[str] = []
    names = model.input_names
    if not set(names) <= set(arrays) and _positional(arrays, len(names)):
        warnings.append(
            f"{path.name} has unnamed arrays ({_names(arrays)}); matched to the inputs by position ({_names(names)})"
        )
        arrays = {name: arrays[f"arr_{i}"] for i, name in enumerate(names)}
    for name in names:
        if name not in arrays:
            raise DataError(
                f"--data {path.name} has no array for model input '{name}' (it holds: {_names(arrays) or 'nothing'})",
                fix=f"save it with np.savez(PATH, {', '.join(f'{n}=...' for n in names)})"
                if all(n.isidentifier() for n in names)
                else "save one array per model input, keyed by the input's name",
            )
    extra = sorted(set(arrays) - set(names))
    if extra:
        warnings.append(f"{path.name} holds arrays that are not model inputs, ignored: {_names(extra)}")
    inputs = {
        tensor.name: _to_contract(arrays[tensor.name], tensor, shapes.get(tensor.name), f"{path.name}['{tensor.name}']")
        for tensor in model.inputs
    }
    return inputs, warnings


def load_test_data(
    path: Path, model: ModelInfo, *, shapes: Mapping[str, Shape] | None = None
) -> tuple[dict[str, Array], dict[str, Array] | None, list[str]]:
    """An ONNX test-data directory (``test_data_set_*/input_*.pb``): each set is one sample.

    ``path`` may also be one ``test_data_set_*`` folder. Expected outputs come back when every set has them.
    """
    shapes = shapes or {}
    sets = [path] if _pbs(path, "input") else sorted(path.glob("test_data_set_*"), key=_natural_key)
    sets = [s for s in sets if s.is_dir()]
    if not sets:
        raise DataError(
            f"--data {path} holds no test_data_set_*/input_*.pb",
            fix="pass an .npz file, or a directory in the ONNX test-data layout (test_data_set_0/input_0.pb, ...)",
        )
    warnings: list[str] = []
    feeds: dict[str, list[Array]] = {name: [] for name in model.input_names}
    outputs: dict[str, list[Array]] | None = {t.name: [] for t in model.outputs}
    for set_dir in sets:
        where = set_dir.name
        matched = _match(_read_tensors(set_dir, "input"), model.inputs, where, kind="input")
        for name, array in matched.items():
            feeds[name].append(array)
        if outputs is not None:
            try:
                found = _match(_read_tensors(set_dir, "output"), model.outputs, where, kind="output")
            except DataError as exc:
                warnings.append(f"expected outputs ignored: {exc}")
                outputs = None
            else:
                for name, array in found.items():
                    outputs[name].append(array)
    inputs = {
        tensor.name: _to_contract(
            _stack(feeds[tensor.name], f"{path.name} input '{tensor.name}'"),
            tensor,
            shapes.get(tensor.name),
            f"{path.name} input '{tensor.name}'",
            stacked=True,
        )
        for tensor in model.inputs
    }
    expected = None
    if outputs is not None and all(outputs.values()):
        expected = {name: _stack(arrays, f"{path.name} output '{name}'") for name, arrays in outputs.items()}
    return inputs, expected, warnings


def load_labels(path: str | os.PathLike[str]) -> Array:
    """An int array of shape (N,): one class index per sample."""
    label_path = Path(path)
    name = label_path.name
    fix = "save them with np.save(PATH, labels.astype(np.int64)) as a 1-D array, one class index per sample"
    if not label_path.is_file():
        raise DataError(f"--labels {label_path} does not exist", fix="pass an existing .npy file")
    try:
        loaded = np.load(label_path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"--labels {name} is not a readable .npy array ({one_line(exc, 200)})", fix=fix) from exc
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise DataError(f"--labels {name} is an .npz archive, not a single .npy array", fix=fix)
    if loaded.ndim != 1:
        raise DataError(f"--labels {name} has shape {loaded.shape}, not (N,)", fix=fix)
    if loaded.dtype.kind not in "iu":
        raise DataError(f"--labels {name} has dtype {loaded.dtype}, not an integer type", fix=fix)
    if loaded.size and loaded.min() < 0:
        raise DataError(f"--labels {name} holds negative values (smallest {loaded.min()})", fix=fix)
    return loaded.astype(np.int64)


def synthesize(
    model: ModelInfo, *, samples: int, shapes: Mapping[str, Shape] | None = None, seed: int = 0
) -> dict[str, Array]:
    """Deterministic random inputs: floats standard normal, integers in [0, 10), booleans fair.

    A dynamic batch axis (axis 0 of an input of rank 2 or more) is filled with 1, since every feed is one sample;
    any other dynamic dimension needs ``--shape``.
    """
    shapes = dict(shapes or {})
    for tensor in model.inputs:
        if tensor.name not in shapes and _batch_only_dynamic(tensor) and tensor.shape is not None:
            shapes[tensor.name] = (1, *(d for d in tensor.shape[1:] if isinstance(d, int)))
    unresolved = [t for t in model.inputs if t.name not in shapes and not t.is_static]
    if unresolved:
        problems = "; ".join(f"input '{t.name}' {_dynamic_text(t)}" for t in unresolved)
        examples = " ".join(
            f"--shape {t.name}={_dims(_example(t)) if t.shape is not None else 'd0,d1,...'}" for t in unresolved
        )
        raise DataError(
            f"synthetic inputs for {Path(model.path).name} need fixed sizes, but {problems} and no --shape was given",
            fix=f"pass {examples} (with your real sizes), or --data FILE.npz",
        )
    full_shapes = {
        tensor.name: (samples, *(shapes.get(tensor.name) or tuple(d for d in tensor.shape or () if isinstance(d, int))))
        for tensor in model.inputs
    }
    _check_synthetic_size(model, full_shapes, samples)
    inputs: dict[str, Array] = {}
    for index, tensor in enumerate(model.inputs):
        full = full_shapes[tensor.name]
        dtype = _numpy_dtype(tensor)
        # One generator per input, so adding an override for one input does not change the others' values.
        rng = np.random.default_rng([seed, index])
        if dtype.kind == "f":
            inputs[tensor.name] = rng.standard_normal(full).astype(dtype)
        elif dtype.kind in "iu":
            inputs[tensor.name] = rng.integers(0, SYNTHETIC_INT_HIGH, size=full).astype(dtype)
        elif dtype.kind == "b":
            inputs[tensor.name] = rng.random(full) < 0.5
        else:
            raise DataError(
                f"{Path(model.path).name} input '{tensor.name}' is {tensor.dtype}, which farm cannot synthesize",
                fix="pass --data FILE.npz with real values for it",
            )
    return inputs


def _check_synthetic_size(model: ModelInfo, full_shapes: Mapping[str, Shape], samples: int) -> None:
    """Refuse what numpy cannot make or this host cannot hold, before allocating: a declared [1, 3, 1e6, 1e6] would
    otherwise end in a MemoryError, or in the kernel's OOM killer once the pages are written."""
    name = Path(model.path).name
    total = 0
    for tensor in model.inputs:
        full = full_shapes[tensor.name]
        if len(full) > MAX_RANK:
            raise DataError(
                f"synthetic inputs for {name} input '{tensor.name}' need {len(full)} dimensions (the sample axis "
                f"and rank {len(full) - 1}), more than numpy's {MAX_RANK}",
                fix=f"re-export the model with inputs of rank {MAX_RANK - 1} or less",
            )
        total += math.prod(full) * _numpy_dtype(tensor).itemsize
    if total > SYNTHETIC_LIMIT_BYTES:
        fits = SYNTHETIC_LIMIT_BYTES // (total // samples)
        listed = ", ".join(f"'{t.name}' {shape_text(full_shapes[t.name][1:])}" for t in model.inputs)
        raise DataError(
            f"synthetic inputs for {name} ({listed}) would take {_size_text(total)}, more than the "
            f"{_size_text(SYNTHETIC_LIMIT_BYTES)} farm makes",
            fix=(f"pass --samples {fits} or fewer, " if fits else "")
            + "--shape with smaller sizes for dynamic dimensions, or --data FILE.npz with real samples",
        )


def _size_text(size: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size:,} bytes"


def _batch_only_dynamic(tensor: TensorInfo) -> bool:
    """Only axis 0 is dynamic, on an input of rank 2 or more: the batch, which one sample per feed fixes at 1."""
    return tensor.shape is not None and len(tensor.shape) >= 2 and tensor.dynamic_dims == (0,)


def _to_contract(
    array: Array, tensor: TensorInfo, override: Shape | None, origin: str, *, stacked: bool = False
) -> Array:
    """Contract form: ``result[i]`` is one feed. ``stacked`` arrays (from test data) already are."""
    declared: tuple[Dim, ...] | None = override if override is not None else tensor.shape
    if stacked or declared is None:
        feeds = array if array.ndim > 0 else array[None]
    elif array.ndim == len(declared) + 1:
        feeds = array
    elif array.ndim == len(declared):
        first = declared[0] if declared else None
        # Axis 0 is the batch, split into batch-1 feeds because the job times one sample per run; but a scalar,
        # or a model whose batch is fixed above 1, gets the array as its one sample.
        one_sample = not declared or (isinstance(first, int) and first != 1)
        feeds = array[None] if one_sample else array[:, None]
    else:
        raise DataError(
            f"{origin} has shape {tuple(array.shape)} but model input '{tensor.name}' has rank {len(declared)} "
            f"{shape_text(declared)}",
            fix=f"save it with shape (samples, {', '.join(map(str, _example_dims(declared)))}) or as one batch",
        )
    if declared is not None:
        _check_feed_shape(feeds, declared, tensor.name, origin)
    return _cast(feeds, tensor, origin)


def _check_feed_shape(feeds: Array, declared: tuple[Dim, ...], name: str, origin: str) -> None:
    feed = tuple(feeds.shape[1:])
    if len(feed) != len(declared):
        raise DataError(
            f"{origin} has one sample of shape {feed} but model input '{name}' has rank {len(declared)} "
            f"{shape_text(declared)}",
            fix=f"save each sample with shape {shape_text(_example_dims(declared))}",
        )
    for index, (got, want) in enumerate(zip(feed, declared, strict=True)):
        if isinstance(want, int) and got != want:
            raise DataError(
                f"{origin} has samples of shape {feed} but model input '{name}' expects {shape_text(declared)} "
                f"(dimension {index}: expected {want}, got {got})",
                fix=f"save each sample with shape {shape_text(_example_dims(declared))}, axis 0 of the array being the "
                "sample index",
            )


def _cast(array: Array, tensor: TensorInfo, origin: str) -> Array:
    target = _numpy_dtype(tensor)
    if array.dtype == target:
        return array
    if target.kind == "U" and array.dtype.kind in "US":
        return array.astype(target)
    source = array.dtype
    if np.can_cast(source, target, casting="safe"):
        return array.astype(target)
    # Beyond numpy's "safe": narrowing that keeps every value (float64 → float32 is what np.save gives by default).
    converted: Array | None = None
    if source.kind in "iu" and target.kind in "iu":
        info = np.iinfo(target)
        if array.size == 0 or (int(array.min()) >= info.min and int(array.max()) <= info.max):
            converted = array.astype(target)
    elif source.kind == "f" and target.kind == "f":
        # Overflow to inf is what this checks for, so numpy's warning about it is noise.
        with np.errstate(over="ignore"):
            candidate = array.astype(target)
        if np.array_equal(np.isfinite(candidate), np.isfinite(array)):
            converted = candidate
    elif source.kind in "iu" and target.kind == "f":
        with np.errstate(over="ignore"):
            candidate = array.astype(target)
        if np.isfinite(candidate).all() and np.array_equal(candidate.astype(source), array):
            converted = candidate
    if converted is None:
        raise DataError(
            f"{origin} has dtype {source} but model input '{tensor.name}' is {tensor.dtype}, and its values "
            "cannot be cast without loss",
            fix=f"save the array as {tensor.dtype} (array.astype(np.{tensor.dtype}))",
        )
    return converted


def _numpy_dtype(tensor: TensorInfo, model_name: str = "model") -> np.dtype[Any]:
    if tensor.dtype == "string":
        return np.dtype(np.str_)
    try:
        dtype = np.dtype(tensor.dtype)
    except TypeError:
        raise DataError(
            f"{model_name} input '{tensor.name}' has type {tensor.dtype}, which has no numpy equivalent to feed it "
            "with",
            fix="export the model with tensor inputs of a numpy type (float32, int64, bool, ...)",
        ) from None
    return dtype


def _read_tensors(set_dir: Path, kind: str) -> list[onnx.TensorProto]:
    tensors = []
    for pb in _pbs(set_dir, kind):
        tensor = onnx.TensorProto()
        try:
            tensor.ParseFromString(pb.read_bytes())
        except Exception as exc:  # protobuf's DecodeError has no typed stub to name
            raise DataError(
                f"{set_dir.name}/{pb.name} is not a serialized TensorProto ({one_line(exc, 200)})",
                fix="write each file with onnx.numpy_helper.from_array(array, name).SerializeToString()",
            ) from exc
        tensors.append(tensor)
    return tensors


def _match(
    tensors: Sequence[onnx.TensorProto], wanted: Sequence[TensorInfo], where: str, *, kind: str
) -> dict[str, Array]:
    """By the TensorProto's name where every file names a graph tensor, else by position."""
    names = [t.name for t in wanted]
    given = [t.name for t in tensors]
    if given and all(given) and set(given) <= set(names):
        by_name = dict(zip(given, tensors, strict=True))
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DataError(
                f"{where} has no {kind}_*.pb for model {kind} '{missing[0]}' (it holds: {_names(given)})",
                fix=f"add one {kind}_<i>.pb per model {kind} ({_names(names)})",
            )
        ordered = [by_name[n] for n in names]
    elif len(tensors) == len(names):
        ordered = list(tensors)
    else:
        raise DataError(
            f"{where} has {len(tensors)} {kind}_*.pb files but the model has {len(names)} {kind}s ({_names(names)})",
            fix=f"write one {kind}_<i>.pb per model {kind}, in the model's order or named after the {kind}",
        )
    result = {}
    for name, tensor in zip(names, ordered, strict=True):
        try:
            result[name] = numpy_helper.to_array(tensor)
        except Exception as exc:  # onnx raises assorted errors for tensors it cannot convert
            raise DataError(
                f"{where}: the {kind} for '{name}' cannot be read as an array ({one_line(exc, 200)})",
                fix="write it with onnx.numpy_helper.from_array",
            ) from exc
    return result


def _stack(arrays: Sequence[Array], origin: str) -> Array:
    shapes = {tuple(a.shape) for a in arrays}
    if len(shapes) > 1:
        raise DataError(
            f"{origin} has different shapes across test_data_set_* ({', '.join(map(str, sorted(shapes)))})",
            fix="use one shape for every sample, or pass --data FILE.npz with padded arrays",
        )
    return np.stack(arrays)


def _sample_count(inputs: Mapping[str, Array], path: Path) -> int:
    counts = {name: len(array) for name, array in inputs.items()}
    distinct = set(counts.values())
    if len(distinct) > 1:
        listed = ", ".join(f"'{name}' {count}" for name, count in counts.items())
        raise DataError(
            f"--data {path.name} has different sample counts per input ({listed})",
            fix="give every input the same number of samples along axis 0",
        )
    count = distinct.pop() if distinct else 0
    if count == 0 and inputs:
        raise DataError(f"--data {path.name} holds no samples", fix="save at least one sample per input")
    return count


def _pbs(directory: Path, kind: str) -> list[Path]:
    return sorted(directory.glob(f"{kind}_*.pb"), key=_natural_key)


def _natural_key(path: Path) -> list[Any]:
    """input_10 after input_9, as the ONNX test runner orders them."""
    return [int(part) if part.isdigit() else part for part in _NATURAL.split(path.name)]


def _positional(arrays: Mapping[str, Array], count: int) -> bool:
    """``np.savez(path, a, b)`` names its arrays arr_0, arr_1, ..."""
    return count > 0 and set(arrays) == {f"arr_{i}" for i in range(count)}


def _dynamic_text(tensor: TensorInfo) -> str:
    if tensor.shape is None:
        return "has an unknown rank"
    dims = ", ".join(
        f"{i} ('{tensor.shape[i]}')" if isinstance(tensor.shape[i], str) else f"{i} (unnamed)"
        for i in tensor.dynamic_dims
    )
    return f"{shape_text(tensor.shape)} has dynamic dimension{'s' if len(tensor.dynamic_dims) > 1 else ''} {dims}"


def _example(tensor: TensorInfo) -> tuple[int, ...]:
    return _example_dims(tensor.shape or ())


def _example_dims(shape: Sequence[Dim]) -> tuple[int, ...]:
    """A plausible size for each dynamic dimension, for the suggestion in an error message."""
    example = []
    for index, dim in enumerate(shape):
        if isinstance(dim, int):
            example.append(dim)
            continue
        label = (dim or "").lower()
        if index == 0 or "batch" in label:
            example.append(1)
        elif any(word in label for word in ("height", "width")) or (len(shape) == 4 and index >= 2):
            example.append(224)
        elif any(word in label for word in ("seq", "len", "token", "time")):
            example.append(128)
        else:
            example.append(16)
    return tuple(example)


def _dims(shape: Iterable[int]) -> str:
    return ",".join(str(d) for d in shape)


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names) if not isinstance(names, (list, tuple)) else names)


__all__ = [
    "DEFAULT_SYNTHETIC_SAMPLES",
    "SYNTHETIC_WARNING",
    "DataFiles",
    "DataSource",
    "PreparedData",
    "check_shape_overrides",
    "load_labels",
    "load_npz",
    "load_test_data",
    "parse_shape_overrides",
    "prepare_data",
    "synthesize",
    "write_npz",
]
