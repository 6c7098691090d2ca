"""Synthetic inputs, when no --data is given: deterministic random values from the declared types and shapes,
refused when a dimension is unknown or they would not fit in memory."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from farm.errors import DataError
from farm.inputs.datashapes import Array, Shape, dims_text, dynamic_text, example, numpy_dtype
from farm.model.inspect import ModelInfo, TensorInfo
from farm.model.shapes import shape_text

# Synthetic inputs are random numbers written to inputs.npz and read by every target: past this they say nothing
# more about the model, and making them (numpy's float64 draw first) needs three times as much memory.
SYNTHETIC_LIMIT_BYTES = 1 << 30
# numpy's limit on an array's dimensions (NPY_MAXDIMS); a synthetic input adds the sample axis to the declared rank.
MAX_RANK = 64
# "Small non-negative" keeps synthetic integers valid as indices, token ids and class ids in most models.
SYNTHETIC_INT_HIGH = 10


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
        problems = "; ".join(f"input '{t.name}' {dynamic_text(t)}" for t in unresolved)
        examples = " ".join(
            f"--shape {t.name}={dims_text(example(t)) if t.shape is not None else 'd0,d1,...'}" for t in unresolved
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
        dtype = numpy_dtype(tensor)
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
        total += math.prod(full) * numpy_dtype(tensor).itemsize
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
