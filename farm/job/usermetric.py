"""The user's own accuracy metric (``--metric FILE.py:FUNCTION``), loaded and called inside the target's container.

The function receives the fp32 outputs, the variant's outputs (each a dict: output name -> array, axis 0 the sample,
or a list of per-sample arrays when the shape varies between samples) and the labels (an int array, or None), and
returns a dict with a bool ``"passed"`` and any number of named numeric scores. Whatever it raises, or a return
value of another shape, becomes that variant's error; it never ends the target.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from farm.job.types import MetricScore

UserMetric = Callable[[Mapping[str, Any], Mapping[str, Any], "np.ndarray | None"], Any]
PASSED = "passed"


class UserMetricError(RuntimeError):
    """The metric could not be loaded, raised, or returned something other than the documented dict."""


def load(path: Path, function: str) -> UserMetric:
    """Import ``path`` as a module of its own and return its ``function``."""
    spec = importlib.util.spec_from_file_location(f"farm_user_metric_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UserMetricError(f"metric file {path.name} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as an import would: dataclasses and typing look their module up by name.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # a metric file may raise anything at import, SystemExit included
        raise UserMetricError(f"importing metric file {path.name} raised {_describe(exc)}") from exc
    found = getattr(module, function, None)
    if not callable(found):
        raise UserMetricError(f"metric file {path.name} defines no function {function}")
    return found  # type: ignore[no-any-return]


def by_name(names: Sequence[str], samples: Sequence[Sequence[np.ndarray]]) -> dict[str, Any]:
    """Per output, every sample's array stacked on axis 0, or a list where the shape varies between samples."""
    arrays: dict[str, Any] = {}
    for index, name in enumerate(names):
        parts = [sample[index] for sample in samples]
        same = len({p.shape for p in parts}) == 1
        arrays[name] = np.stack(parts) if same else [p.copy() for p in parts]
    return arrays


def fresh(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """A copy for one call, so a metric that changes its arguments cannot change what later variants see."""
    return {
        name: value.copy() if isinstance(value, np.ndarray) else [v.copy() for v in value]
        for name, value in arrays.items()
    }


def score(
    metric: UserMetric,
    function: str,
    reference: Mapping[str, Any],
    candidate: Mapping[str, Any],
    labels: np.ndarray | None,
) -> MetricScore:
    try:
        returned = metric(fresh(reference), candidate, None if labels is None else labels.copy())
    except BaseException as exc:  # the user's code: anything it raises is this variant's error
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise UserMetricError(f"metric {function} raised {_describe(exc)}") from exc
    return _parse(returned, function)


def _parse(returned: Any, function: str) -> MetricScore:
    shape = 'a dict like {"passed": True, "agreement": 0.97}'
    if not isinstance(returned, Mapping):
        raise UserMetricError(f"metric {function} returned {type(returned).__name__}, not {shape}")
    passed = returned.get(PASSED)
    if not isinstance(passed, bool | np.bool_):
        raise UserMetricError(f'metric {function} returned no bool under "passed" ({shape})')
    scores: dict[str, float] = {}
    for key, value in returned.items():
        if key == PASSED:
            continue
        # A numpy scalar or a 0-d array (what np.mean returns) is a number too; a bool is not a score.
        number_like = isinstance(value, numbers.Real) or (
            isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf"
        )
        if not isinstance(key, str) or not number_like or isinstance(value, bool | np.bool_):
            raise UserMetricError(
                f"metric {function} returned {key!r}: {value!r}; every score must be a number "
                f"named by a string ({shape})"
            )
        number = float(value)
        if not math.isfinite(number):
            raise UserMetricError(f"metric {function} returned {key!r}: {number}, which is not a finite number")
        scores[key] = number
    return MetricScore(scores=scores, passed=bool(passed))


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
