"""The job's inputs, made on the host: loaded from --data, or synthesized, then normalised to contracts.md section 1.

Every shape, dtype and count problem is caught here, where the message can name the user's file and flag, rather
than inside a container, where onnxruntime would report it once per target in its own words. Its parts:
datafiles.py reads the user's files (.npz, ONNX test data, labels), synthetic.py makes inputs when there
are none, datashapes.py checks shapes and types and puts arrays in contract form; their public names are
importable from here too.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from farm.errors import DataError
from farm.inputs.datafiles import load_labels, load_npz, load_test_data, sample_count
from farm.inputs.datashapes import Array, Shape, check_shape_overrides, numpy_dtype, parse_shape_overrides
from farm.inputs.synthetic import synthesize
from farm.job.report import SYNTHETIC_WARNING, DataSource, DataSummary
from farm.model.inspect import ModelInfo

DEFAULT_SYNTHETIC_SAMPLES = 32


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

    def summary(self) -> DataSummary:
        """The report's "data" block."""
        return DataSummary(
            source=self.source, samples=self.samples, synthetic=self.synthetic, labels=self.labels is not None
        )

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
        numpy_dtype(tensor, Path(model.path).name)
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
    count = sample_count(inputs, path)
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
