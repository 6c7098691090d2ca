"""Stage ``prepare``: the target-independent artifacts (pre.onnx, artifacts/<variant>.onnx, prepare.json)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from farm.job.data import Dataset, DatasetError
from farm.job.quantize import OpsetRaiseFailed, PreProcessFailed, pre_process, quantize, raise_opset
from farm.job.result import error_text, write_json_atomic
from farm.job.spec import Spec
from farm.job.variants import RECIPES

SCHEMA = "farm.prepare/1"
log = logging.getLogger("farm.job")


def run_prepare(spec: Spec, out: Path) -> dict[str, Any]:
    """Quantize every candidate; one variant's failure is recorded and the others go on."""
    artifacts = out / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"schema": SCHEMA, "warnings": [], "variants": {}}

    def save() -> None:
        write_json_atomic(out / "prepare.json", state)
        # A copy travels with the artifacts, so evaluate can say why a variant has no model.
        write_json_atomic(artifacts / "prepare.json", state)

    save()
    try:
        dataset = Dataset.load(spec.inputs, spec.labels)
    except DatasetError as exc:
        for name in spec.candidates:
            state["variants"][name] = {"status": "failed", "error": str(exc), "quantization": None}
        save()
        return state

    source = out / "pre.onnx"
    try:
        state["warnings"].extend(pre_process(spec.source_model, source))
    except PreProcessFailed as exc:
        state["warnings"].append(f"{exc}; quantizing the model without pre-processing")
        source = spec.source_model
    save()
    # Made once, on first need: the per-channel variants' source, at opset 13 or above.
    per_channel_source: Path | OpsetRaiseFailed | None = None

    for name in spec.candidates:
        log.info("prepare: %s starting", name)
        # Overwritten below; what a crash inside the quantizer (or a kill) leaves behind.
        stopped = "the job ended while quantizing this variant (it crashed or was killed)"
        state["variants"][name] = {"status": "failed", "error": stopped, "quantization": None}
        save()
        variant_source = source
        if RECIPES[name].per_channel:
            if per_channel_source is None:
                try:
                    per_channel_source, note = raise_opset(source, out / "pre-opset13.onnx")
                    if note:
                        state["warnings"].append(note)
                except OpsetRaiseFailed as exc:
                    per_channel_source = exc
            if isinstance(per_channel_source, OpsetRaiseFailed):
                state["variants"][name] = {"status": "failed", "error": str(per_channel_source), "quantization": None}
                save()
                continue
            variant_source = per_channel_source
        try:
            record = quantize(
                name, variant_source, artifacts / f"{name}.onnx", dataset=dataset, calibration=spec.calibration
            )
            state["variants"][name] = {"status": "ok", "error": None, "quantization": record}
        except Exception as exc:  # any quantizer failure belongs to this variant alone
            (artifacts / f"{name}.onnx").unlink(missing_ok=True)
            (artifacts / f"{name}.onnx.data").unlink(missing_ok=True)
            state["variants"][name] = {"status": "failed", "error": error_text(exc), "quantization": None}
        log.info("prepare: %s %s", name, state["variants"][name]["status"])
        save()
    return state
