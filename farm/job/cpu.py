"""What CPU this process sees: the features numpy detected from CPUID, and whether farm's CPUID mask took.

A masked x86 tier (farm/host/masking.py on the controller) runs with farm's preload library, which reports in
STATUS_ENV whether it turned CPUID faulting on; numpy's own CPUID probe then says what the runtime saw. Both are the
proof that a masked run ran the tier's kernels and not this CPU's own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

STATUS_ENV = "FARM_CPUID_MASK_STATUS"
ACTIVE = "active"


def features_seen() -> tuple[str, ...] | None:
    """The CPU features numpy found at import (its names: AVX2, AVX512F, ...), or None where it does not say."""
    import importlib

    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # numpy 2, numpy 1
        try:
            features = getattr(importlib.import_module(module), "__cpu_features__", None)
        except ImportError:
            continue
        if isinstance(features, dict):
            return tuple(sorted(str(name) for name, present in features.items() if present))
    return None


def mask_problem(unseen: Sequence[str], seen: Sequence[str] | None) -> str | None:
    """Why a masked run cannot be trusted, or None when the mask took and hides every feature it must."""
    status = os.environ.get(STATUS_ENV)
    if status != ACTIVE:
        return (
            f"the CPUID mask did not take ({status or 'the preload library did not run'}), so onnxruntime "
            "would run this CPU's own kernels under the tier's name"
        )
    leaked = sorted(set(unseen) & set(seen or ()))
    if leaked:
        return (
            f"the CPUID mask did not take: the runtime still sees {', '.join(leaked)}, so onnxruntime would "
            "run this CPU's own kernels under the tier's name"
        )
    return None
