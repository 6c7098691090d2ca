"""Stage ``evaluate``: the steps in order, from the data to the recommendation (the package's docstring says what
each module does)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from farm.job import cpu
from farm.job.data import Dataset, DatasetError
from farm.job.evaluate import metric
from farm.job.evaluate.candidates import Candidates, read_prepared
from farm.job.evaluate.drift import diverge
from farm.job.evaluate.extra import optimized_slot, tuned_slot
from farm.job.evaluate.file import ResultFile
from farm.job.evaluate.fp32 import run_fp32
from farm.job.evaluate.profiled import start_server
from farm.job.evaluate.spread import count_first, run_slots
from farm.job.macs import conv_share
from farm.job.profile.child import status_kib
from farm.job.profile.server import ProfileServer
from farm.job.recommend import recommend, saturation_findings, speed_evidence
from farm.job.report import TargetResult
from farm.job.spec import Spec
from farm.job.variants import OPTIMIZED

log = logging.getLogger("farm.job")


def run_evaluate(spec: Spec, out: Path) -> TargetResult:
    """Evaluate every variant of ``spec``'s target, rewriting ``out``/result.json after each; returns the result."""
    file = ResultFile(spec.target, out)
    # What the job holds before its data and sessions: its growth from here is what a worker needs (spread).
    rss_start_kib = status_kib("VmRSS")
    # First of all, while the process holds no dataset and no session: each profile child starts from this state.
    server = start_server(spec, file)
    try:
        return _evaluate(spec, file, server, rss_start_kib)
    finally:
        if server is not None:
            server.close()


def _evaluate(spec: Spec, file: ResultFile, server: ProfileServer | None, rss_start_kib: int) -> TargetResult:
    prepared = read_prepared(spec.artifacts)
    file.save()
    try:
        dataset = Dataset.load(spec.inputs, spec.labels)
    except DatasetError as exc:
        file.fail(str(exc))
        return file.result
    seen = cpu.features_seen() if spec.target.arch == "x86_64" else None
    file.save(cpu_seen=seen)
    if spec.target.masked and (problem := cpu.mask_problem(spec.target.cpu_unseen, seen)):
        file.fail(problem)
        return file.result
    loaded = None if spec.metric is None else metric.load(spec.metric)
    candidates = Candidates(spec=spec, prepared=prepared)
    slots = [
        *([optimized_slot(spec, file.out)] if OPTIMIZED not in spec.skip else []),
        *(slot for name in spec.candidates for slot in candidates.slots(name)),
        *([tuned_slot(spec.tuned)] if spec.tuned is not None else []),
    ]
    # Before fp32's accuracy: what a count finds depends on what the process did before it (count_first).
    counted = count_first(spec, file, dataset, slots)
    measure = run_fp32(spec, file, dataset, loaded, server)
    if measure is None:
        return file.result
    run_slots(spec, file, measure, slots, rss_start_kib, counted)
    measure.timer.time_kept()
    measure.profiler.collect()
    diverge(spec, file, slots, measure.reference.feeds)
    variants = file.result.variants
    estimate = file.result.estimate
    evidence = speed_evidence(variants, estimate)
    chosen = recommend(
        variants,
        evidence=evidence,
        saturation_risk=spec.target.saturation_risk,
        conv_share=_conv_share(spec, measure.reference.feeds),
        claim_floor=None if estimate is None else estimate.error_p90,
        target=spec.target.name,
    )
    findings = tuple(saturation_findings(variants))
    file.finish(
        recommended=chosen.recommended,
        recommendation_reason=chosen.reason,
        speed_evidence=evidence,
        int8_if_needed=chosen.int8_if_needed,
        warnings=(*file.result.warnings, *findings),
    )
    return file.result


def _conv_share(spec: Spec, feeds: Sequence[Mapping[str, np.ndarray]]) -> float | None:
    """The share of the fp32 model's multiply-accumulates in Conv, at the samples' shapes; None when unknown, which
    only leaves static QDQ unpreferred in ``int8_if_needed``."""
    if not feeds:
        return None
    try:
        return conv_share(spec.model, {name: array.shape for name, array in feeds[0].items()})
    except Exception as exc:  # shape inference's own refusal: the rule goes on without the share
        log.info("evaluate: the share of multiply-accumulates in Conv is unknown: %s", exc)
        return None
