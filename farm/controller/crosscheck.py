"""fp32 cross-checks on the host: each target's fp32 outputs against the data's expected outputs and each other.

A target's fp32 run is the reference for its own int8 variants, so a target whose fp32 is already wrong (a kernel bug,
an emulation fault) would otherwise look healthy. Comparing the fp32 outputs across targets, and with the expected
outputs an ONNX test-data directory ships, catches that.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
# The tolerances of ONNX's own backend tests (onnx.backend.test.runner), which its test data is meant for.
RTOL = 1e-3
ATOL = 1e-7
# Between targets, float kernels legitimately differ in the last bits (FMA, summation order, vector width).
CROSS_ATOL = 1e-5


def load_outputs(path: Path) -> dict[str, Array] | None:
    """The ``outputs/fp32.npz`` a job wrote (one array per output, axis 0 = sample), or None when it has none."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except Exception:  # empty, truncated or not a zip (EOFError, BadZipFile, ValueError): there is nothing to check
        return None


def disagreement(
    got: Mapping[str, Array], want: Mapping[str, Array], *, rtol: float = RTOL, atol: float = ATOL
) -> str | None:
    """Why ``got`` differs from ``want`` beyond ``|got - want| <= atol + rtol * |want|``, or None when it agrees.

    Only outputs both sides hold are compared; outputs of other shapes or non-numeric types are named, not compared.
    """
    problems = []
    for name in sorted(set(got) & set(want)):
        a, b = np.asarray(got[name]), np.asarray(want[name])
        if a.shape != b.shape:
            problems.append(f"'{name}' has shape {list(a.shape)}, expected {list(b.shape)}")
            continue
        if not (np.issubdtype(a.dtype, np.number) and np.issubdtype(b.dtype, np.number)):
            if not np.array_equal(a, b):
                problems.append(f"'{name}' differs")
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        if np.allclose(a64, b64, rtol=rtol, atol=atol, equal_nan=True):
            continue
        bad = int(np.count_nonzero(~np.isclose(a64, b64, rtol=rtol, atol=atol, equal_nan=True)))
        worst = float(np.nanmax(np.abs(a64 - b64))) if a64.size else 0.0
        problems.append(f"'{name}' differs in {bad} of {a.size} values (max_abs {worst:.3g})")
    return "; ".join(problems) or None
