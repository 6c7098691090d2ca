"""Where the out-of-tolerance int8 variants closest to tolerance leave fp32 on this target (`farm matrix
--divergence`): farm bisect's comparison (farm.job.divergence), run in the evaluate stage after every variant is
measured, so that the report names the node where each drifts.

It may take at most DRIFT_SHARE of the time the job had taken when it began, counted from the process's start
(farm.job.BEGAN, imports included, as the report's duration_s counts them): a variant whose turn comes later is left
without, and a warning says so. Closest first: by cosine to fp32, the verdict's own figure."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from farm.job import BEGAN
from farm.job.evaluate.file import ResultFile
from farm.job.evaluate.measure import opener
from farm.job.evaluate.spread import Slot
from farm.job.report import Variant, VariantDivergence
from farm.job.result import error_text
from farm.job.spec import Spec
from farm.job.variants import FP32, quantized_from

log = logging.getLogger("farm.job")
DRIFT_SHARE = 0.2
NO_DIVERGENCE = "{name} has no divergence: {why}; its other figures stand"


def closest(variants: Sequence[Variant], count: int | None) -> list[Variant]:
    """The int8 variants that ran out of tolerance, closest to it first (by cosine), ``count`` of them (None: all)."""
    drifted = [
        v
        for v in variants
        if v.status == "ok" and v.within_tolerance is False and v.quantization is not None and v.accuracy is not None
    ]
    drifted.sort(key=lambda v: (-(v.accuracy.cosine if v.accuracy is not None else 0.0), v.name))
    return drifted if count is None else drifted[:count]


def share(now: float) -> float:
    """The seconds the divergences may take: DRIFT_SHARE of the job's time so far. Counted from the evaluate stage's
    start instead, a small model's fast evaluation left the second divergence out of a target whose whole evaluation
    had time for both (0.075 s each in 1.48 s, on an Intel Xeon)."""
    return DRIFT_SHARE * (now - BEGAN)


def diverge(spec: Spec, file: ResultFile, slots: Sequence[Slot], feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
    """Each chosen variant's divergence into its result; one that cannot be compared keeps its figures and a warning
    says why."""
    settings = spec.divergence
    chosen = [] if settings is None else closest(file.result.variants, settings.count)
    if settings is None or not chosen or not feeds:
        return
    # Imported only when a variant drifted: the comparison's modules cost every emulated job their translation under
    # QEMU otherwise.
    from farm.job.divergence import compare, fp32_reference

    began = time.monotonic()
    budget = share(began)
    references: dict[Path, onnx.ModelProto] = {}
    by_name = {slot.name: slot for slot in slots}
    fp32 = opener(spec, FP32)
    for variant in chosen:
        if time.monotonic() - began > budget:
            file.warn(
                NO_DIVERGENCE.format(
                    name=variant.name, why=f"the divergences before it took {DRIFT_SHARE:.0%} of the evaluation's time"
                )
            )
            continue
        slot = by_name.get(variant.name)
        if slot is None or slot.path is None:
            continue
        opened = opener(spec, variant.name, slot.config)
        log.info("evaluate: where %s leaves fp32", variant.name)
        started = time.monotonic()
        try:
            source = quantized_from(spec.artifacts, variant.name) or spec.source_model
            if source not in references:  # per-channel variants have a model of their own (pre-opset13.onnx)
                references[source] = onnx.load(str(source))
            reference = references[source]
            found = compare(
                reference,
                onnx.load(str(slot.path)),
                feeds[: settings.samples],
                against=fp32_reference(reference, fp32),
                open_variant=opened,
                open_group=opened,
                limit_bytes=settings.limit_bytes,
                threshold_db=settings.threshold_db,
            )
        except Exception as exc:  # onnxruntime's own refusal of a marked model: the variant keeps its figures
            file.warn(NO_DIVERGENCE.format(name=variant.name, why=error_text(exc)))
            continue
        first = found.first
        record = VariantDivergence(
            first_node=None if first is None else first.node,
            op=None if first is None else first.op,
            sqnr_db=None if first is None else round(first.sqnr_db, 2),
            threshold_db=settings.threshold_db,
            worst=found.worst(),
            reproduced=found.reproduced,
            seconds=round(time.monotonic() - started, 3),
        )
        file.save(
            variants=tuple(replace(v, divergence=record) if v.name == variant.name else v for v in file.result.variants)
        )
