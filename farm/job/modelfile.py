"""Saving a model file whole under a name of its own, its weights in a data file named after it where they must be.

Read by the job (quantized, rewritten and tuned models) and by the controller (the tuned models it keeps and
stages), so it depends on onnx alone.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import onnx

# Above this a model cannot be one protobuf message (2 GiB, with room to spare), so its weights go beside it.
EXTERNAL_DATA_ABOVE = 1 << 30


def has_external_data(path: Path) -> bool:
    return keeps_external_data(onnx.load(str(path), load_external_data=False))


def data_files(model: onnx.ModelProto) -> set[str]:
    """The files, relative to the model's folder, that its external initializers name (none checked to exist)."""
    return {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }


def keeps_external_data(model: onnx.ModelProto) -> bool:
    """Whether ``model`` (loaded or not with its data) has initializers stored outside the file."""
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def save_model(model: onnx.ModelProto, path: Path, *, external: bool | None = None) -> Path:
    """``model`` at ``path``; with ``external`` (None: when its weights are too large for one message) its weights
    go into ``<path name>.data`` beside it."""
    if external is None:
        external = sum(t.ByteSize() for t in model.graph.initializer) >= EXTERNAL_DATA_ABOVE
    if external:
        onnx.save(
            model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data"
        )
    else:
        onnx.save(model, str(path))
    return path


def copy_model(source: Path, destination: Path) -> Path:
    """``source`` whole at ``destination``: a model with external data is loaded with it and saved with a data file
    of the new name (so the copy never shares, or depends on, the old one); any other is copied byte for byte."""
    if has_external_data(source):
        return save_model(onnx.load(str(source)), destination, external=True)
    shutil.copyfile(source, destination)
    return destination


def model_size(path: Path) -> int | None:
    """The model file plus the external data files it names: what has to ship."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # an unreadable model still has a file size
        return size
    for location in data_files(model):
        with contextlib.suppress(OSError):
            size += (path.parent / location).stat().st_size
    return size
