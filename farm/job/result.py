"""What the job writes: one ``targets[]`` entry of ``farm.report/1`` (docs/contracts.md section 2), kept atomic."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from farm.job.codec import encode
from farm.job.loadfailure import LoadFailure
from farm.job.types import Accuracy, Latency

Status = Literal["ok", "failed", "skipped"]
TimingLabel = Literal["measured", "masked", "emulated", "none"]


@dataclass(frozen=True, kw_only=True, slots=True)
class VariantResult:
    name: str
    status: Status
    error: str | None = None
    size_bytes: int | None = None
    latency_ms: Latency | None = None
    timing: TimingLabel = "none"
    accuracy: Accuracy | None = None
    within_tolerance: bool | None = None
    # How the int8 model was made and what it quantized (prepare.json's record); None for fp32 and optimized.
    quantization: Mapping[str, Any] | None = None
    # Why the runtime refused to load it, when it did (farm.job.loadfailure).
    failure_class: LoadFailure | None = None
    # How many nodes each provider ran (the session's profile), after the runtime's graph optimizations.
    providers: Mapping[str, int] | None = None

    @property
    def passes(self) -> bool:
        return self.status == "ok" and self.within_tolerance is True

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "error": self.error,
            "size_bytes": self.size_bytes,
            "latency_ms": None if self.latency_ms is None else encode(self.latency_ms),
            "timing": self.timing,
            "accuracy": None if self.accuracy is None else encode(self.accuracy),
            "within_tolerance": self.within_tolerance,
            "quantization": None if self.quantization is None else dict(self.quantization),
            "failure_class": self.failure_class,
            "providers": None if self.providers is None else dict(self.providers),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class JobRuntime:
    onnxruntime: str
    providers: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"onnxruntime": self.onnxruntime, "providers": list(self.providers)}


@dataclass(frozen=True, kw_only=True, slots=True)
class JobResult:
    name: str
    platform: str
    mode: Literal["native", "masked", "emulated"]
    cpu_model: str | None
    status: Status
    reason: str | None
    runtime: JobRuntime | None
    variants: tuple[VariantResult, ...] = ()
    recommended: str | None = None
    recommendation_reason: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # The CPU features the runtime's process saw (numpy's CPUID probe), on x86: what a masked tier's proof rests on.
    cpu_seen: tuple[str, ...] | None = None
    # Why the runtime refused the model as given, when it did; the controller adds whether inspect predicted it.
    load_failure: LoadFailure | None = None
    # The export pitfall check at batch 2 (farm.job.pitfall.ExportCheck.to_dict()).
    export_check: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "platform": self.platform,
            "mode": self.mode,
            "cpu_model": self.cpu_model,
            "status": self.status,
            "reason": self.reason,
            "runtime": None if self.runtime is None else self.runtime.to_dict(),
            "variants": [v.to_dict() for v in self.variants],
            "recommended": self.recommended,
            "recommendation_reason": self.recommendation_reason,
            "warnings": list(self.warnings),
            # The controller knows these; the job cannot.
            "exit_code": None,
            "log_tail": None,
            "duration_s": None,
            "image": None,
            "cpu_seen": None if self.cpu_seen is None else list(self.cpu_seen),
            "load_failure": None
            if self.load_failure is None
            else {"class": self.load_failure, "predicted": None, "prediction": None},
            "export_check": None if self.export_check is None else dict(self.export_check),
        }


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as JSON, written atomically (see write_text_atomic)."""
    # allow_nan=False: NaN is not JSON, and a reader should fail here rather than far away.
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file beside ``path`` and rename it, so a crash leaves the previous file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp makes the file 0600; the controller may read it as another user (rootless or remapped engines).
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def error_text(exc: BaseException) -> str:
    """The exception's own words (verbatim, as ORT and the quantizer wrote them), or its type when it has none."""
    return str(exc) or type(exc).__name__
