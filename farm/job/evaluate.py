"""Stage ``evaluate``: run every variant in this target, compare it with fp32, time it, and recommend one."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnxruntime as ort

from farm.job.data import DataError, Dataset
from farm.job.metrics import Accuracy, Latency, compare
from farm.job.optimize import optimize
from farm.job.recommend import MITIGATION_SUFFIX, recommend, saturation_findings
from farm.job.result import Runtime, TargetResult, TimingLabel, VariantResult, error_text, write_json_atomic
from farm.job.session import open_session, providers_used
from farm.job.spec import Spec

X64_QUANT_PRECISION = {"session.x64quantprecision": "1"}
log = logging.getLogger("farm.job")


def mitigations_for(spec: Spec, variant: str) -> list[tuple[str, dict[str, str]]]:
    """``(name, session config)`` for each runtime mitigation that applies to ``variant`` on this target."""
    target = spec.target
    if (
        "x64quantprecision" in spec.mitigations
        and target.saturation_risk
        and variant.startswith("u8s8-")
    ):
        return [(variant + MITIGATION_SUFFIX, X64_QUANT_PRECISION)]
    return []


class _Evaluation:
    """Accumulates variant results and rewrites result.json after each one, so a crash keeps what was done."""

    def __init__(self, spec: Spec, out: Path) -> None:
        self.spec, self.out = spec, out
        self.result = TargetResult(
            name=spec.target.name,
            platform=spec.target.platform,
            mode=spec.target.mode,
            cpu_model=spec.target.cpu_model,
            status="ok",
            reason=None,
            runtime=Runtime(onnxruntime=ort.__version__, providers=()),
        )
        self.reference: list[list[np.ndarray]] = []
        self.feeds: list[dict[str, np.ndarray]] = []
        self.labels: np.ndarray | None = None
        # Until the run ends, the file says it did not finish and names the variant under way: if the runtime
        # dies (QEMU segfaults happen), that is the truth the controller finds.
        self.finished = False
        self.pending: str | None = None

    def save(self, **changes: Any) -> None:
        self.result = replace(self.result, **changes)
        written = self.result
        if not self.finished:
            reason = "the job ended before it finished"
            if self.pending is not None:
                error = "the job ended while running this variant (the runtime crashed or was killed)"
                stopped = VariantResult(name=self.pending, status="failed", error=error)
                written = replace(written, variants=(*written.variants, stopped))
                reason += f", while running {self.pending}"
            written = replace(written, status="failed", reason=written.reason or reason)
        write_json_atomic(self.out / "result.json", written.to_dict())

    def begin(self, name: str) -> None:
        log.info("evaluate: %s starting", name)
        self.pending = name
        self.save()

    def add(self, variant: VariantResult) -> None:
        log.info("evaluate: %s %s%s", variant.name, variant.status, f" ({variant.error})" if variant.error else "")
        self.pending = None
        self.save(variants=(*self.result.variants, variant))

    def fail(self, reason: str) -> None:
        log.info("evaluate: target failed: %s", reason)
        self.finished = True
        self.save(status="failed", reason=reason)

    def warn(self, warning: str) -> None:
        self.save(warnings=(*self.result.warnings, warning))

    def run(self) -> TargetResult:
        spec = self.spec
        self.save()
        try:
            dataset = Dataset.load(spec.inputs, spec.labels)
        except DataError as exc:
            self.fail(str(exc))
            return self.result
        self.labels = dataset.labels
        if not self._fp32(dataset):
            return self.result
        self._optimized()
        for name in spec.candidates:
            self._candidate(name)
        emulated = spec.target.emulated
        recommended, why = recommend(self.result.variants, emulated=emulated,
                                     saturation_risk=spec.target.saturation_risk)
        findings = tuple(saturation_findings(self.result.variants))
        self.finished = True
        self.save(recommended=recommended, recommendation_reason=why, warnings=(*self.result.warnings, *findings))
        return self.result

    def _fp32(self, dataset: Dataset) -> bool:
        spec = self.spec
        self.begin("fp32")
        try:
            session = open_session(spec.model, target=spec.target, threads=spec.threads)
        except Exception as exc:  # the reason is ORT's own message, verbatim
            self.add(VariantResult(name="fp32", status="failed", error=error_text(exc), size_bytes=_size(spec.model)))
            self.fail(error_text(exc))
            return False
        self.save(runtime=Runtime(onnxruntime=ort.__version__, providers=tuple(providers_used(session))))
        try:
            names = [i.name for i in session.get_inputs()]
            self.feeds = [dataset.feed(i, names) for i in range(dataset.samples)]
            self.reference = _run_all(session, self.feeds)
        except Exception as exc:
            self.add(VariantResult(name="fp32", status="failed", error=error_text(exc), size_bytes=_size(spec.model)))
            self.fail(error_text(exc))
            return False
        self._save_reference([o.name for o in session.get_outputs()])
        fp32 = self._measure("fp32", spec.model, session, self.reference)
        self.add(fp32)
        if fp32.error is not None:
            self.fail(fp32.error)
        return fp32.status == "ok"

    def _save_reference(self, names: Sequence[str]) -> None:
        arrays: dict[str, np.ndarray] = {}
        for index, name in enumerate(names):
            shapes = {o[index].shape for o in self.reference}
            if len(shapes) > 1:
                self.warn(f"outputs/fp32.npz lacks {name!r}: its shape differs between samples {sorted(shapes)}")
                continue
            arrays[name] = np.stack([o[index] for o in self.reference])
        folder = self.out / "outputs"
        folder.mkdir(parents=True, exist_ok=True)
        # Written beside and renamed, so a job killed mid-write never leaves a truncated file for the controller.
        partial = folder / ".fp32.partial.npz"
        # cast: numpy's stub types **kwds as if one of them could be its own allow_pickle flag.
        np.savez(partial, **cast(dict[str, Any], arrays))
        os.replace(partial, folder / "fp32.npz")

    def _optimized(self) -> None:
        spec = self.spec
        self.begin("optimized")
        try:
            path = optimize(
                spec.source_model,
                self.out / "optimized.onnx",
                level=spec.optimization_level,
                target=spec.target,
                threads=spec.threads,
            )
        except Exception as exc:
            self.add(VariantResult(name="optimized", status="failed", error=error_text(exc)))
            return
        self.add(self._variant("optimized", path))

    def _candidate(self, name: str) -> None:
        artifact = None if self.spec.artifacts is None else self.spec.artifacts / f"{name}.onnx"
        variants = [(name, {}), *mitigations_for(self.spec, name)]
        if artifact is None or not artifact.is_file():
            why = self._missing_artifact(name, artifact)
            for variant, _ in variants:
                self.add(VariantResult(name=variant, status="failed", error=why))
            return
        for variant, config in variants:
            self.begin(variant)
            self.add(self._variant(variant, artifact, config))

    def _missing_artifact(self, name: str, artifact: Path | None) -> str:
        if artifact is None:
            return "no artifacts directory was given, so there is no quantized model to run"
        try:
            prepared = json.loads((artifact.parent / "prepare.json").read_text(encoding="utf-8"))
            error = prepared["variants"][name]["error"]
        except (OSError, ValueError, KeyError, TypeError):
            error = None
        if error:
            return f"quantization failed in prepare: {error}"
        return f"artifacts/{artifact.name} is missing (prepare did not make it)"

    def _variant(self, name: str, path: Path, config: dict[str, str] | None = None) -> VariantResult:
        spec = self.spec
        level = spec.optimization_level if name == "optimized" else "all"
        try:
            session = open_session(path, target=spec.target, threads=spec.threads, config=config, level=level)
            outputs = _run_all(session, self.feeds)
        except Exception as exc:  # one variant's failure must not end the others
            return VariantResult(name=name, status="failed", error=error_text(exc), size_bytes=_size(path))
        return self._measure(name, path, session, outputs)

    def _measure(self, name: str, path: Path, session: Any, outputs: list[list[np.ndarray]]) -> VariantResult:
        spec = self.spec
        try:
            accuracy: Accuracy = compare(self.reference, outputs, self.labels)
            latency = _latency(session, self.feeds, warmup=spec.timing.warmup, iterations=spec.timing.iterations)
        except Exception as exc:
            return VariantResult(name=name, status="failed", error=error_text(exc), size_bytes=_size(path))
        timing: TimingLabel = "none" if latency is None else "emulated" if spec.target.emulated else "measured"
        return VariantResult(
            name=name,
            status="ok",
            size_bytes=_size(path),
            latency_ms=latency,
            timing=timing,
            accuracy=accuracy,
            within_tolerance=accuracy.within(
                cosine=spec.tolerance.cosine, top1_agreement=spec.tolerance.top1_agreement
            ),
        )


def _run_all(session: Any, feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    return [[np.asarray(o) for o in session.run(None, feed)] for feed in feeds]


def _latency(session: Any, feeds: Sequence[dict[str, np.ndarray]], *, warmup: int, iterations: int) -> Latency | None:
    if iterations == 0:
        return None
    for i in range(warmup):
        session.run(None, feeds[i % len(feeds)])
    seconds = []
    for i in range(iterations):
        feed = feeds[i % len(feeds)]
        start = time.perf_counter()
        session.run(None, feed)
        seconds.append(time.perf_counter() - start)
    return Latency.from_seconds(seconds)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def run_evaluate(spec: Spec, out: Path) -> TargetResult:
    return _Evaluation(spec, out).run()
