"""The variants beside the candidates: the runtime's own graph optimizations of fp32 ("optimized"), and farm tune's
model for this target ("tuned"), measured like the naive variants (its kernels, its speed)."""

from __future__ import annotations

from dataclasses import replace

from farm.job.evaluate.file import ResultFile
from farm.job.evaluate.measure import VariantMeasure
from farm.job.optimize import optimize
from farm.job.report import Variant
from farm.job.result import error_text
from farm.job.spec import Spec, TunedModel
from farm.job.variants import OPTIMIZED, TUNED


def run_optimized(spec: Spec, file: ResultFile, measure: VariantMeasure) -> None:
    file.begin(OPTIMIZED)
    try:
        path = optimize(
            spec.source_model,
            file.out / "optimized.onnx",
            level=spec.optimization_level,
            target=spec.target,
            threads=spec.threads,
        )
    except Exception as exc:
        file.add(Variant(name=OPTIMIZED, status="failed", error=error_text(exc)))
        return
    file.add(measure.variant(OPTIMIZED, path))


def run_tuned(tuned: TunedModel, file: ResultFile, measure: VariantMeasure) -> None:
    file.begin(TUNED)
    # tune.json's best.quantization: the quantizer's record, as prepare.json holds the candidates'.
    quantization = tuned.quantization  # also for the failed variant, so the report says what was to be evaluated
    if not tuned.model.is_file():
        error = f"{tuned.model.name} is missing from the inputs"
        file.add(Variant(name=TUNED, status="failed", error=error, quantization=quantization))
        return
    file.add(replace(measure.variant(TUNED, tuned.model), quantization=quantization))
