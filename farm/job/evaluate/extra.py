"""The variants beside the candidates: the runtime's own graph optimizations of fp32 ("optimized"), and farm tune's
model for this target ("tuned"), measured like the naive variants (its kernels, its speed)."""

from __future__ import annotations

import functools
from pathlib import Path

from farm.job.evaluate.measure import VariantMeasure
from farm.job.evaluate.spread import Slot
from farm.job.optimize import optimize
from farm.job.report import Variant
from farm.job.result import error_text
from farm.job.spec import Spec, TunedModel
from farm.job.variants import OPTIMIZED, TUNED


def optimized_slot(spec: Spec, out: Path) -> Slot:
    """The optimized variant, written to ``out``/optimized.onnx by whichever process runs it."""
    path = out / "optimized.onnx"

    @functools.cache  # a failure is not kept: the next caller (the variant's run) tries again and reports it
    def make() -> Path:
        return optimize(
            spec.source_model, path, level=spec.optimization_level, target=spec.target, threads=spec.threads
        )

    def run(measure: VariantMeasure) -> Variant:
        try:
            made = make()
        except Exception as exc:
            return Variant(name=OPTIMIZED, status="failed", error=error_text(exc))
        return measure.variant(OPTIMIZED, made)

    return Slot(name=OPTIMIZED, run=run, path=path, make=make)


def tuned_slot(tuned: TunedModel) -> Slot:
    # tune.json's best.quantization: the quantizer's record, as prepare.json holds the candidates'; also for the
    # failed variant, so the report says what was to be evaluated.
    quantization = tuned.quantization
    if not tuned.model.is_file():
        error = f"{tuned.model.name} is missing from the inputs"
        return Slot(name=TUNED, ready=Variant(name=TUNED, status="failed", error=error, quantization=quantization))
    return Slot(
        name=TUNED,
        run=lambda measure: measure.variant(TUNED, tuned.model),
        path=tuned.model,
        quantization=quantization,
    )
