"""A tensor's shape as farm prints it everywhere: in inspect's and data's messages and in the report.

Standard library only, so the report (which reads shapes from JSON) need not load onnx to print one.
"""

from __future__ import annotations

from collections.abc import Iterable

# A dimension: its size, its symbolic name, or None when it has neither; defined where the report's types are.
from farm.job.report import Dim

__all__ = ["Dim", "shape_text"]


def shape_text(shape: Iterable[Dim] | None) -> str:
    """A shape as farm prints it everywhere: ``[?, 3, 224, 224]``, ``?`` for a dimension of no known size, and
    ``?`` alone for an unknown rank."""
    return "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
