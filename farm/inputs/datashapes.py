"""A model input's shape and type, on the host: --shape overrides checked against the model, arrays normalised to
contract form (axis 0 the sample) and cast without loss, and the sizes error messages suggest."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from farm.errors import DataError
from farm.model.inspect import ModelInfo, TensorInfo
from farm.model.shapes import Dim, shape_text

Shape = tuple[int, ...]
Array = npt.NDArray[Any]


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
                fix=f"use one of the model's inputs: {names_text(model.input_names)}",
            )
        declared = model.input(name).shape
        if declared is None:
            continue
        if len(shape) != len(declared):
            raise DataError(
                f"--shape {name}={dims_text(shape)} has {len(shape)} dimensions but model input '{name}' has "
                f"{len(declared)} {shape_text(declared)}",
                fix=f"give {len(declared)} sizes, e.g. --shape {name}={dims_text(example(model.input(name)))}",
            )
        for index, (size, want) in enumerate(zip(shape, declared, strict=True)):
            if isinstance(want, int) and size != want:
                raise DataError(
                    f"--shape {name}={dims_text(shape)} sets dimension {index} to {size} but model input '{name}' "
                    f"fixes it at {want} {shape_text(declared)}",
                    fix=f"keep the model's fixed sizes, e.g. --shape {name}={dims_text(example(model.input(name)))}",
                )


def to_contract(
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
            fix=f"save it with shape (samples, {', '.join(map(str, example_dims(declared)))}) or as one batch",
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
            fix=f"save each sample with shape {shape_text(example_dims(declared))}",
        )
    for index, (got, want) in enumerate(zip(feed, declared, strict=True)):
        if isinstance(want, int) and got != want:
            raise DataError(
                f"{origin} has samples of shape {feed} but model input '{name}' expects {shape_text(declared)} "
                f"(dimension {index}: expected {want}, got {got})",
                fix=f"save each sample with shape {shape_text(example_dims(declared))}, axis 0 of the array being the "
                "sample index",
            )


def _cast(array: Array, tensor: TensorInfo, origin: str) -> Array:
    target = numpy_dtype(tensor)
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


def numpy_dtype(tensor: TensorInfo, model_name: str = "model") -> np.dtype[Any]:
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


def dynamic_text(tensor: TensorInfo) -> str:
    if tensor.shape is None:
        return "has an unknown rank"
    dims = ", ".join(
        f"{i} ('{tensor.shape[i]}')" if isinstance(tensor.shape[i], str) else f"{i} (unnamed)"
        for i in tensor.dynamic_dims
    )
    return f"{shape_text(tensor.shape)} has dynamic dimension{'s' if len(tensor.dynamic_dims) > 1 else ''} {dims}"


def example(tensor: TensorInfo) -> tuple[int, ...]:
    return example_dims(tensor.shape or ())


def example_dims(shape: Sequence[Dim]) -> tuple[int, ...]:
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


def dims_text(shape: Iterable[int]) -> str:
    return ",".join(str(d) for d in shape)


def names_text(names: Iterable[str]) -> str:
    return ", ".join(sorted(names) if not isinstance(names, (list, tuple)) else names)
