"""Stage ``evaluate``: run every variant in this target, compare it with fp32, time it, and recommend one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import onnxruntime as ort

from farm.job import cpu, pitfall, usermetric
from farm.job.data import Dataset, DatasetError
from farm.job.loadfailure import classify
from farm.job.metrics import compare
from farm.job.optimize import optimize
from farm.job.recommend import recommend, saturation_findings
from farm.job.reference import Reference
from farm.job.result import JobResult, JobRuntime, TimingLabel, VariantResult, error_text, write_json_atomic
from farm.job.session import ProviderFallback, node_providers, open_session, providers_used
from farm.job.spec import Spec
from farm.job.timing import run_all, time_rounds
from farm.job.types import Accuracy, Latency, MetricScore, NodeCount
from farm.job.variants import FP32, MITIGATION_SUFFIX, OPTIMIZED, SUBGRAPH_VARIANT, TUNED

X64_QUANT_PRECISION = {"session.x64quantprecision": "1"}
# Sessions are kept open for the alternating timing phase up to this much model on disk; beyond it (a large
# model times many variants), the rest are timed one after another, as soon as their accuracy is known.
KEEP_SESSIONS_BYTES = 1 << 30
TIMED_ALONE = (
    "some variants were timed one after another rather than in alternating rounds (the models are too large to "
    "keep open together), so a slow stretch of the host may fall on some of them only"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Timed:
    name: str
    session: Any


log = logging.getLogger("farm.job")


def mitigations_for(spec: Spec, variant: str) -> list[tuple[str, dict[str, str]]]:
    """``(name, session config)`` for each runtime mitigation that applies to ``variant`` on this target."""
    target = spec.target
    if "x64quantprecision" in spec.mitigations and target.saturation_risk and variant.startswith("u8s8-"):
        return [(variant + MITIGATION_SUFFIX, X64_QUANT_PRECISION)]
    return []


class _Evaluation:
    """Accumulates variant results and rewrites result.json after each one, so a crash keeps what was done."""

    def __init__(self, spec: Spec, out: Path) -> None:
        self.spec, self.out = spec, out
        self.result = JobResult(
            name=spec.target.name,
            platform=spec.target.platform,
            mode=spec.target.mode,
            cpu_model=spec.target.cpu_model,
            status="ok",
            reason=None,
            runtime=JobRuntime(onnxruntime=ort.__version__, providers=()),
        )
        self.reference: list[list[np.ndarray]] = []
        self.feeds: list[dict[str, np.ndarray]] = []
        self.labels: np.ndarray | None = None
        # The model's output names, in session order, and those that make a variant's verdict.
        self.names: list[str] = []
        self.counted: tuple[str, ...] = ()
        # The user's --metric, loaded once; a load failure is kept and becomes every variant's error.
        self.metric: usermetric.UserMetric | usermetric.UserMetricError | None = None
        self.reference_by_name: dict[str, Any] = {}
        self.prepared: dict[str, Any] = _read_prepared(spec.artifacts)
        # Until the run ends, the file says it did not finish and names the variant under way: if the runtime
        # dies (QEMU segfaults happen), that is the truth the controller finds.
        self.finished = False
        self.pending: str | None = None
        self.timing_underway = False
        # Sessions kept open for the timing phase, which alternates their rounds (see _time).
        self.kept: list[_Timed] = []
        self.kept_bytes = 0

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
            elif self.timing_underway:
                reason += ", while timing the variants (their accuracy figures are complete)"
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
        if warning not in self.result.warnings:
            self.save(warnings=(*self.result.warnings, warning))

    def run(self) -> JobResult:
        spec = self.spec
        self.save()
        try:
            dataset = Dataset.load(spec.inputs, spec.labels)
        except DatasetError as exc:
            self.fail(str(exc))
            return self.result
        self.labels = dataset.labels
        seen = cpu.features_seen() if spec.target.arch == "x86_64" else None
        self.save(cpu_seen=seen)
        if spec.target.masked and (problem := cpu.mask_problem(spec.target.cpu_unseen, seen)):
            self.fail(problem)
            return self.result
        if spec.metric is not None:
            try:
                self.metric = usermetric.load(spec.metric.file, spec.metric.function)
            except usermetric.UserMetricError as exc:
                self.metric = exc
        if not self._fp32(dataset):
            return self.result
        self._optimized()
        for name in spec.candidates:
            self._candidate(name)
        if spec.tuned is not None:
            self._tuned(spec.tuned.model, dict(spec.tuned.quantization))
        self._time()
        emulated = spec.target.emulated
        recommended, why = recommend(
            self.result.variants, emulated=emulated, saturation_risk=spec.target.saturation_risk
        )
        findings = tuple(saturation_findings(self.result.variants))
        self.finished = True
        self.save(recommended=recommended, recommendation_reason=why, warnings=(*self.result.warnings, *findings))
        return self.result

    def _fp32(self, dataset: Dataset) -> bool:
        spec = self.spec
        self.begin(FP32)
        try:
            session = open_session(spec.model, target=spec.target, threads=spec.threads, profile=True)
        except Exception as exc:  # the reason is ORT's own message, verbatim
            return self._fp32_failed(exc, loading=True)
        self.save(runtime=JobRuntime(onnxruntime=ort.__version__, providers=tuple(providers_used(session))))
        try:
            reference = Reference.run(session, dataset)
        except Exception as exc:
            return self._fp32_failed(exc)
        self.feeds, self.reference = reference.feeds, reference.outputs
        ran = node_providers(session)
        if not self._accelerator_ran(ran):
            return False
        self.names = reference.names
        unknown = reference.unknown(spec.outputs)
        if unknown:
            self.fail(
                f"--output names {', '.join(unknown)}, which the model does not output "
                f"(its outputs: {', '.join(self.names)})"
            )
            return False
        self.counted = reference.counted(spec.outputs)
        self._export_check()
        for index, name in enumerate(self.names):
            if name not in self.counted and self.reference[0][index].dtype.kind == "f":
                self.warn(
                    f"output '{name}' holds NaN or infinity in fp32 on these samples, so it is not counted "
                    "in any variant's verdict"
                )
        self._save_reference(self.names)
        if spec.metric is not None:
            self.reference_by_name = reference.by_name()
        fp32 = replace(self._measure(FP32, spec.model, session, self.reference), providers=ran)
        self.add(fp32)
        # A failed fp32 that still has figures is one whose --metric raised: its verdict is lost, but the reference
        # outputs are right, so the other variants are still measured against them.
        if fp32.status != "ok" and fp32.accuracy is None:
            self.fail(fp32.error or "fp32 failed")
            return False
        return True

    def _accelerator_ran(self, ran: dict[str, int]) -> bool:
        """On an accelerator target, fp32 must have run some nodes on the accelerator: a session can list a
        provider and still hand every node to the CPU (onnxruntime issue 23372), and those figures are the CPU's."""
        target = self.spec.target
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
            self.add(VariantResult(name=FP32, status="failed", error=reason, providers=ran))
            self.fail(reason)
            return False
        if ran[accelerator] * 2 < total:
            self.warn(
                f"{accelerator} ran only {ran[accelerator]} of the model's {total} nodes in fp32; the rest ran "
                "on " + ", ".join(p for p in ran if p != accelerator)
            )
        return True

    def _export_check(self) -> None:
        """Run fp32 at batch 2 too, to catch a model traced at batch 1 that declares a dynamic batch."""
        spec = self.spec
        log.info("evaluate: export check at batch 2")
        try:
            check = pitfall.check_batch(
                spec.model,
                self.feeds,
                self.reference,
                lambda model: open_session(model, target=spec.target, threads=spec.threads),
            )
        except Exception as exc:  # the check is a finding about the model, never the end of the target
            check = pitfall.ExportCheck(status="not-run", detail=f"the check itself failed: {error_text(exc)}")
        self.save(export_check=check.to_dict())
        if check.status == "flagged":
            self.warn(f"export pitfall: {check.detail}")

    def _fp32_failed(self, exc: Exception, *, loading: bool = False) -> bool:
        """fp32 failed: to load (a class a reader acts on: IR version, opset, missing kernel, ...) or to run."""
        error = error_text(exc)
        failure = classify(error) if loading and not isinstance(exc, ProviderFallback) else None
        self.add(
            VariantResult(
                name=FP32, status="failed", error=error, size_bytes=model_size(self.spec.model), failure_class=failure
            )
        )
        if failure is not None:
            self.save(load_failure=failure)
        self.fail(error)
        return False

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
        self.begin(OPTIMIZED)
        try:
            path = optimize(
                spec.source_model,
                self.out / "optimized.onnx",
                level=spec.optimization_level,
                target=spec.target,
                threads=spec.threads,
            )
        except Exception as exc:
            self.add(VariantResult(name=OPTIMIZED, status="failed", error=error_text(exc)))
            return
        self.add(self._variant(OPTIMIZED, path))

    def _candidate(self, name: str) -> None:
        artifact = None if self.spec.artifacts is None else self.spec.artifacts / f"{name}.onnx"
        variants = [(name, {}), *mitigations_for(self.spec, name)]
        quantization = self._quantization(name)
        if artifact is None or not artifact.is_file():
            why = self._missing_artifact(name, artifact)
            for variant, _ in variants:
                self.add(VariantResult(name=variant, status="failed", error=why, quantization=quantization))
            return
        unquantized = self._not_quantized(quantization)
        if unquantized is not None:
            # An fp32 model under an int8 name: running it would only measure noise and invite a false pick.
            for variant, _ in variants:
                self.add(
                    VariantResult(
                        name=variant,
                        status="skipped",
                        error=unquantized,
                        size_bytes=model_size(artifact),
                        quantization=quantization,
                    )
                )
            return
        for variant, config in variants:
            self.begin(variant)
            self.add(replace(self._variant(variant, artifact, config), quantization=quantization))

    def _tuned(self, model: Path, quantization: dict[str, Any]) -> None:
        """farm tune's model for this target, measured beside the naive variants (its kernels, its speed)."""
        self.begin(TUNED)
        if not model.is_file():
            self.add(
                VariantResult(
                    name=TUNED,
                    status="failed",
                    error=f"{model.name} is missing from the inputs",
                    quantization=quantization,
                )
            )
            return
        self.add(replace(self._variant(TUNED, model), quantization=quantization))

    def _quantization(self, name: str) -> dict[str, Any] | None:
        record = self.prepared.get("variants", {}).get(name, {})
        quantization = record.get("quantization") if isinstance(record, dict) else None
        return quantization if isinstance(quantization, dict) else None

    def _not_quantized(self, quantization: dict[str, Any] | None) -> str | None:
        if quantization is None or not isinstance(quantization.get("nodes"), dict):
            return None
        count = NodeCount.from_dict(quantization["nodes"])
        reason = count.not_quantized()
        if reason and count.quantizable_in_subgraphs and SUBGRAPH_VARIANT in self.spec.candidates:
            reason += f"; {SUBGRAPH_VARIANT} quantizes inside them"
        return reason

    def _missing_artifact(self, name: str, artifact: Path | None) -> str:
        if artifact is None:
            return "no artifacts directory was given, so there is no quantized model to run"
        record = self.prepared.get("variants", {}).get(name)
        error = record.get("error") if isinstance(record, dict) else None
        if error:
            return f"quantization failed in prepare: {error}"
        return f"artifacts/{artifact.name} is missing (prepare did not make it)"

    def _variant(self, name: str, path: Path, config: dict[str, str] | None = None) -> VariantResult:
        spec = self.spec
        level = spec.optimization_level if name == OPTIMIZED else "all"
        try:
            session = open_session(
                path, target=spec.target, threads=spec.threads, config=config, level=level, profile=True
            )
        except Exception as exc:  # one variant's failure must not end the others
            error = error_text(exc)
            return VariantResult(
                name=name, status="failed", error=error, size_bytes=model_size(path), failure_class=classify(error)
            )
        try:
            outputs = run_all(session, self.feeds)
        except Exception as exc:
            return VariantResult(name=name, status="failed", error=error_text(exc), size_bytes=model_size(path))
        ran = node_providers(session)
        return replace(self._measure(name, path, session, outputs), providers=ran)

    def _measure(self, name: str, path: Path, session: Any, outputs: list[list[np.ndarray]]) -> VariantResult:
        """Accuracy now; latency in the timing phase, for which the session is kept (or timed now, see _keep)."""
        spec = self.spec
        size = model_size(path)
        try:
            accuracy: Accuracy = compare(
                self.reference,
                outputs,
                self.labels,
                names=self.names,
                counted=self.counted,
                tolerance=(spec.tolerance.cosine, spec.tolerance.top1_agreement),
            )
        except Exception as exc:
            return VariantResult(name=name, status="failed", error=error_text(exc), size_bytes=size)
        latency = self._keep(name, session, size)
        if self.metric is not None:
            try:
                accuracy = replace(accuracy, metric=self._score(outputs))
            except usermetric.UserMetricError as exc:
                # The variant ran and its figures stand; only its verdict is missing, so it cannot be chosen.
                return VariantResult(
                    name=name,
                    status="failed",
                    error=str(exc),
                    size_bytes=size,
                    latency_ms=latency,
                    timing=self._timing_label(latency),
                    accuracy=accuracy,
                )
        return VariantResult(
            name=name,
            status="ok",
            size_bytes=size,
            latency_ms=latency,
            timing=self._timing_label(latency),
            accuracy=accuracy,
            within_tolerance=accuracy.within(
                cosine=spec.tolerance.cosine, top1_agreement=spec.tolerance.top1_agreement
            ),
        )

    def _timing_label(self, latency: Latency | None) -> TimingLabel:
        if latency is None:
            return "none"
        return "emulated" if self.spec.target.emulated else "masked" if self.spec.target.masked else "measured"

    def _keep(self, name: str, session: Any, size: int | None) -> Latency | None:
        """Keep the session for the alternating timing phase, or, past the memory budget, time it right away."""
        timing = self.spec.timing
        if timing.iterations == 0:
            return None
        if self.kept_bytes + (size or 0) <= KEEP_SESSIONS_BYTES:
            self.kept.append(_Timed(name=name, session=session))
            self.kept_bytes += size or 0
            return None
        if TIMED_ALONE not in self.result.warnings:
            self.warn(TIMED_ALONE)
        latency = time_rounds(
            [session], self.feeds, warmup=timing.warmup, iterations=timing.iterations, rounds=timing.rounds
        )[0]
        if isinstance(latency, Exception):
            # Its accuracy stands; a variant that cannot be timed simply has no latency.
            self.warn(f"{name} could not be timed: {error_text(latency)}")
            return None
        return latency

    def _time(self) -> None:
        """Time every kept session, alternating their rounds, and put each latency into its variant's result.

        Round i of every variant runs in the same stretch of time, so a slow stretch (a noisy neighbour, a clock
        change) lands on all of them alike, and comparing round by round cancels it.
        """
        if not self.kept:
            return
        log.info("evaluate: timing %d variants in alternating rounds", len(self.kept))
        self.timing_underway = True
        self.save()
        timing = self.spec.timing
        latencies = time_rounds(
            [k.session for k in self.kept],
            self.feeds,
            warmup=timing.warmup,
            iterations=timing.iterations,
            rounds=timing.rounds,
        )
        by_name: dict[str, Latency] = {}
        for kept, latency in zip(self.kept, latencies, strict=True):
            if isinstance(latency, Exception):
                # One variant's runtime error while timing costs its latency, not the others' nor its accuracy.
                self.warn(f"{kept.name} could not be timed: {error_text(latency)}")
            else:
                by_name[kept.name] = latency
        self.kept = []
        self.timing_underway = False
        variants = tuple(
            replace(v, latency_ms=by_name[v.name], timing=self._timing_label(by_name[v.name]))
            if v.name in by_name
            else v
            for v in self.result.variants
        )
        self.save(variants=variants)

    def _score(self, outputs: list[list[np.ndarray]]) -> MetricScore:
        metric, ref = self.metric, self.spec.metric
        assert metric is not None and ref is not None
        if isinstance(metric, usermetric.UserMetricError):
            raise metric
        return usermetric.score(
            metric, ref.function, self.reference_by_name, usermetric.by_name(self.names, outputs), self.labels
        )


def model_size(path: Path) -> int | None:
    """The model file plus the external data files it names: what has to ship."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # an unreadable model still has a file size
        return size
    locations = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    for location in locations:
        with contextlib.suppress(OSError):
            size += (path.parent / location).stat().st_size
    return size


def _read_prepared(artifacts: Path | None) -> dict[str, Any]:
    """prepare.json as it travels with the artifacts: how each variant was made, or why it was not."""
    if artifacts is None:
        return {}
    try:
        prepared = json.loads((artifacts / "prepare.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return prepared if isinstance(prepared, dict) else {}


def run_evaluate(spec: Spec, out: Path) -> JobResult:
    return _Evaluation(spec, out).run()
