"""The samples the job feeds: ``inputs.npz`` (one array per input, axis 0 = sample) and optional ``labels.npy``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np


class DatasetError(ValueError):
    """inputs.npz or labels.npy cannot be used; the message says which file and why."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Dataset:
    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None
    samples: int

    @classmethod
    def load(cls, inputs_path: Path, labels_path: Path | None = None) -> Self:
        try:
            with np.load(inputs_path, allow_pickle=False) as npz:
                inputs = {name: npz[name] for name in npz.files}
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read {inputs_path.name}: {exc}") from exc
        if not inputs:
            raise DatasetError(f"{inputs_path.name} holds no arrays")
        flat = [name for name, array in inputs.items() if array.ndim == 0]
        if flat:
            raise DatasetError(
                f"{inputs_path.name}: {flat} have no sample axis (a scalar input is stored as shape (N,))"
            )
        counts = {name: int(array.shape[0]) for name, array in inputs.items()}
        if len(set(counts.values())) != 1:
            raise DatasetError(f"{inputs_path.name}: inputs disagree on the sample count: {counts}")
        samples = next(iter(counts.values()))
        if samples == 0:
            raise DatasetError(f"{inputs_path.name} holds no samples")
        labels = None if labels_path is None else _load_labels(labels_path, samples)
        return cls(inputs=inputs, labels=labels, samples=samples)

    def feed(self, index: int, names: Iterable[str]) -> dict[str, np.ndarray]:
        """One sample for the model inputs ``names``; a scalar input becomes a 0-d array, as ORT requires."""
        feed = {}
        for name in names:
            if name not in self.inputs:
                raise DatasetError(f"inputs.npz has no array for model input {name!r} (it has {sorted(self.inputs)})")
            # array[i] of a 1-d array is a numpy scalar, which ORT and quantize_static reject: keep it an array.
            feed[name] = np.asarray(self.inputs[name][index])
        return feed


def _load_labels(path: Path, samples: int) -> np.ndarray:
    try:
        labels: np.ndarray = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path.name}: {exc}") from exc
    if labels.shape != (samples,) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(
            f"{path.name} must be an int array of shape ({samples},), not {labels.dtype} of shape {labels.shape}"
        )
    return labels
