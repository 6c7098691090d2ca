"""farm's bundled default model (see README.md here): a digits classifier with its held-out data and labels."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from farm.errors import EnvironmentProblem

MODEL = "digits.onnx"
DATA = "digits.npz"
LABELS = "digits_labels.npy"


@dataclass(frozen=True, kw_only=True, slots=True)
class DefaultModel:
    model: Path
    data: Path
    labels: Path


def default_model() -> DefaultModel:
    """Paths of the bundled files. farm is installed unzipped, so package files are plain files on disk."""
    root = resources.files(__name__)
    paths = {name: Path(str(root.joinpath(name))) for name in (MODEL, DATA, LABELS)}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        raise EnvironmentProblem(
            f"farm's bundled default model is incomplete ({', '.join(missing)} missing from {Path(str(root))})",
            fix="reinstall farm, or run scripts/train_default_model.py in a source checkout",
        )
    return DefaultModel(model=paths[MODEL], data=paths[DATA], labels=paths[LABELS])
