"""fp32, the reference: run on the samples, checked (the accelerator ran it, the --output names exist, the export
at batch 2), saved to outputs/fp32.npz, and measured; what every other variant is then measured against."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any, cast

import numpy as np
import onnxruntime as ort

from farm.job import pitfall
from farm.job.data import Dataset
from farm.job.evaluate import metric
from farm.job.evaluate.file import ResultFile
from farm.job.evaluate.measure import VariantMeasure
from farm.job.evaluate.profiled import Profiler
from farm.job.evaluate.timed import Timer
from farm.job.loadfailure import classify
from farm.job.modelfile import model_size
from farm.job.profile.server import ProfileServer
from farm.job.reference import Reference
from farm.job.report import ExportCheck, LoadRefusal, Runtime, Variant
from farm.job.result import error_text
from farm.job.session import ProviderFallback, node_providers, open_session, providers_used
from farm.job.spec import Spec
from farm.job.variants import FP32

log = logging.getLogger("farm.job")


def run_fp32(
    spec: Spec, file: ResultFile, dataset: Dataset, loaded: metric.Loaded | None, server: ProfileServer | None = None
) -> VariantMeasure | None:
    """fp32's result, added to ``file``, and the measure of the other variants; None when the target ends here.
    ``server``: the profile server (None: no profile)."""
    file.begin(FP32)
    try:
        session = open_session(spec.model, target=spec.target, threads=spec.threads, profile=True)
    except Exception as exc:  # the reason is ORT's own message, verbatim
        _failed(spec, file, exc, loading=True)
        return None
    file.save(runtime=Runtime(onnxruntime=ort.__version__, providers=tuple(providers_used(session))))
    try:
        reference = Reference.run(session, dataset)
    except Exception as exc:
        _failed(spec, file, exc)
        return None
    ran = node_providers(session)
    if not _accelerator_ran(spec, file, ran):
        return None
    unknown = reference.unknown(spec.outputs)
    if unknown:
        file.fail(
            f"--output names {', '.join(unknown)}, which the model does not output "
            f"(its outputs: {', '.join(reference.names)})"
        )
        return None
    counted = reference.counted(spec.outputs)
    _export_check(spec, file, reference)
    for index, name in enumerate(reference.names):
        if name not in counted and reference.outputs[0][index].dtype.kind == "f":
            file.warn(
                f"output '{name}' holds NaN or infinity in fp32 on these samples, so it is not counted "
                "in any variant's verdict"
            )
    _save_reference(file, reference)
    user = None
    if spec.metric is not None and loaded is not None:
        user = metric.Metric(
            function=spec.metric.function,
            loaded=loaded,
            reference=reference.by_name(),
            names=reference.names,
            labels=reference.labels,
        )
    measure = VariantMeasure(
        spec=spec,
        reference=reference,
        counted=counted,
        metric=user,
        timer=_timer(spec, file, reference),
        profiler=Profiler(spec=spec, server=server, feed=reference.feeds[0] if reference.feeds else {}, file=file),
    )
    fp32 = replace(measure.outputs(FP32, spec.model, session, reference.outputs), providers=ran)
    file.add(fp32)
    # A failed fp32 that still has figures is one whose --metric raised: its verdict is lost, but the reference
    # outputs are right, so the other variants are still measured against them.
    if fp32.status != "ok" and fp32.accuracy is None:
        file.fail(fp32.error or "fp32 failed")
        return None
    return measure


def _timer(spec: Spec, file: ResultFile, reference: Reference) -> Timer:
    """The timer, with the profile's thread counts where they are timed (not under emulation, which has no times)."""
    counts = () if spec.profile is None or spec.target.emulated else spec.profile.threads
    return Timer(
        timing=spec.timing,
        target=spec.target,
        feeds=reference.feeds,
        file=file,
        estimate=spec.estimate,
        threads=spec.threads,
        counts=counts,
    )


def _accelerator_ran(spec: Spec, file: ResultFile, ran: dict[str, int]) -> bool:
    """On an accelerator target, fp32 must have run some nodes on the accelerator: a session can list a
    provider and still hand every node to the CPU (onnxruntime issue 23372), and those figures are the CPU's."""
    target = spec.target
    if not target.wants_accelerator or not ran:
        return True
    accelerator = target.providers[0]
    total = sum(ran.values())
    if ran.get(accelerator, 0) == 0:
        others = ", ".join(f"{provider} {count}" for provider, count in ran.items())
        reason = (
            f"{accelerator} ran none of the model's {total} nodes ({others}): every node fell back, so "
            "nothing here would measure the accelerator"
        )
        file.add(Variant(name=FP32, status="failed", error=reason, providers=ran))
        file.fail(reason)
        return False
    if ran[accelerator] * 2 < total:
        file.warn(
            f"{accelerator} ran only {ran[accelerator]} of the model's {total} nodes in fp32; the rest ran "
            "on " + ", ".join(p for p in ran if p != accelerator)
        )
    return True


def _export_check(spec: Spec, file: ResultFile, reference: Reference) -> None:
    """Run fp32 at batch 2 too, to catch a model traced at batch 1 that declares a dynamic batch."""
    log.info("evaluate: export check at batch 2")
    try:
        check = pitfall.check_batch(
            spec.model,
            reference.feeds,
            reference.outputs,
            lambda model: open_session(model, target=spec.target, threads=spec.threads),
        )
    except Exception as exc:  # the check is a finding about the model, never the end of the target
        check = ExportCheck(status="not-run", detail=f"the check itself failed: {error_text(exc)}")
    file.save(export_check=check)
    if check.status == "flagged":
        file.warn(f"export pitfall: {check.detail}")


def _failed(spec: Spec, file: ResultFile, exc: Exception, *, loading: bool = False) -> None:
    """fp32 failed: to load (a class a reader acts on: IR version, opset, missing kernel, ...) or to run."""
    error = error_text(exc)
    failure = classify(error) if loading and not isinstance(exc, ProviderFallback) else None
    file.add(Variant(name=FP32, status="failed", error=error, size_bytes=model_size(spec.model), failure_class=failure))
    if failure is not None:
        # Whether inspect predicted it is the controller's to say.
        file.save(load_failure=LoadRefusal(kind=failure))
    file.fail(error)


def _save_reference(file: ResultFile, reference: Reference) -> None:
    """fp32's outputs as outputs/fp32.npz, one array per output whose shape is the same in every sample."""
    arrays: dict[str, np.ndarray] = {}
    for index, name in enumerate(reference.names):
        shapes = {o[index].shape for o in reference.outputs}
        if len(shapes) > 1:
            file.warn(f"outputs/fp32.npz lacks {name!r}: its shape differs between samples {sorted(shapes)}")
            continue
        arrays[name] = np.stack([o[index] for o in reference.outputs])
    folder = file.out / "outputs"
    folder.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed, so a job killed mid-write never leaves a truncated file for the controller.
    partial = folder / ".fp32.partial.npz"
    # cast: numpy's stub types **kwds as if one of them could be its own allow_pickle flag.
    np.savez(partial, **cast(dict[str, Any], arrays))
    os.replace(partial, folder / "fp32.npz")
