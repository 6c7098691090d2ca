"""Reading the user's data files: an .npz of inputs, an ONNX test-data directory (inputs and expected outputs), a
.npy of labels; each checked and named in the user's terms."""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from farm.errors import DataError, one_line
from farm.inputs.datashapes import Array, Shape, names_text, to_contract
from farm.model.inspect import ModelInfo, TensorInfo

_NATURAL = re.compile(r"(\d+)")


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
            f"{path.name} has unnamed arrays ({names_text(arrays)}); matched to the inputs by position "
            f"({names_text(names)})"
        )
        arrays = {name: arrays[f"arr_{i}"] for i, name in enumerate(names)}
    for name in names:
        if name not in arrays:
            raise DataError(
                f"--data {path.name} has no array for model input '{name}' "
                f"(it holds: {names_text(arrays) or 'nothing'})",
                fix=f"save it with np.savez(PATH, {', '.join(f'{n}=...' for n in names)})"
                if all(n.isidentifier() for n in names)
                else "save one array per model input, keyed by the input's name",
            )
    extra = sorted(set(arrays) - set(names))
    if extra:
        warnings.append(f"{path.name} holds arrays that are not model inputs, ignored: {names_text(extra)}")
    inputs = {
        tensor.name: to_contract(arrays[tensor.name], tensor, shapes.get(tensor.name), f"{path.name}['{tensor.name}']")
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
        tensor.name: to_contract(
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
                f"{where} has no {kind}_*.pb for model {kind} '{missing[0]}' (it holds: {names_text(given)})",
                fix=f"add one {kind}_<i>.pb per model {kind} ({names_text(names)})",
            )
        ordered = [by_name[n] for n in names]
    elif len(tensors) == len(names):
        ordered = list(tensors)
    else:
        raise DataError(
            f"{where} has {len(tensors)} {kind}_*.pb files but the model has {len(names)} {kind}s "
            f"({names_text(names)})",
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


def sample_count(inputs: Mapping[str, Array], path: Path) -> int:
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
