"""The ``optimized`` variant: ORT's offline graph optimization, run in the target and saved as a model."""

from __future__ import annotations

from pathlib import Path

from farm.job.session import open_session
from farm.job.spec import Level, SpecTarget


def optimize(source: Path, destination: Path, *, level: Level, target: SpecTarget, threads: int) -> Path:
    """Save ``source`` as ORT optimizes it at ``level`` on ``target.providers``.

    At ``all`` ORT may write hardware-specific (NCHWc) layouts; that is the point, since the model is evaluated
    on the same target, and why it is made per target rather than in prepare.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.unlink(missing_ok=True)
    open_session(source, target=target, threads=threads, level=level, optimized_model=destination)
    if not destination.is_file():
        raise RuntimeError(f"onnxruntime wrote no optimized model to {destination.name}")
    return destination
