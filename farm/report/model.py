"""The report as typed, immutable values (``farm.report/2``, docs/contracts.md section 2).

``from_dict`` trusts its input to follow the schema (call ``farm.report.schema.validate`` first on anything read
from disk); ``to_dict`` gives back exactly the dict it was built from, keys in the contract's order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Self

# The figures are the job's own value types: one definition on both sides of the container boundary.
from farm.job.codec import decode, encode
from farm.job.types import Accuracy, Latency, NodeCount
from farm.report.schema import SCHEMA_ID, InvalidReport, validate
from farm.shapes import Dim

Mode = Literal["native", "masked", "emulated", "unavailable"]
Status = Literal["ok", "failed", "skipped"]
Timing = Literal["measured", "masked", "emulated", "none"]
DataSource = Literal["bundled", "npz", "onnx-test-data", "synthetic"]
# What a reader wants to know of a variant: ran fine, ran but drifted from fp32, quantized nothing, or did not run.
Outcome = Literal["ok", "out-of-tolerance", "not-quantized", "failed", "skipped"]
# One wording: farm.data adds it to a synthetic run's warnings, and the renderers show it as a banner instead.
SYNTHETIC_WARNING = (
    "inputs are synthetic (random, from the declared types and shapes): accuracy figures may be meaningless; "
    "pass --data with real samples"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class TensorSummary:
    name: str
    dtype: str
    shape: tuple[Dim, ...] | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        shape = data["shape"]
        return cls(name=data["name"], dtype=data["dtype"], shape=None if shape is None else tuple(shape))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": None if self.shape is None else list(self.shape)}


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSummary:
    path: str
    sha256: str
    ir_version: int
    opsets: Mapping[str, int]
    inputs: tuple[TensorSummary, ...]
    outputs: tuple[TensorSummary, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            path=data["path"],
            sha256=data["sha256"],
            ir_version=data["ir_version"],
            opsets=dict(data["opsets"]),
            inputs=tuple(TensorSummary.from_dict(t) for t in data["inputs"]),
            outputs=tuple(TensorSummary.from_dict(t) for t in data["outputs"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "ir_version": self.ir_version,
            "opsets": dict(self.opsets),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class DataSummary:
    source: DataSource
    samples: int
    synthetic: bool
    labels: bool

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(source=data["source"], samples=data["samples"], synthetic=data["synthetic"], labels=data["labels"])

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "samples": self.samples, "synthetic": self.synthetic, "labels": self.labels}


@dataclass(frozen=True, kw_only=True, slots=True)
class Tolerance:
    """What makes a verdict: cosine and top-1 thresholds, the outputs counted (None: every float output), and the
    user's --metric (``file.py:function``), which decides alone when given."""

    cosine: float
    top1_agreement: float
    outputs: tuple[str, ...] | None = None
    metric: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        outputs = data.get("outputs")
        return cls(
            cosine=data["cosine"],
            top1_agreement=data["top1_agreement"],
            outputs=None if outputs is None else tuple(outputs),
            metric=data.get("metric"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "cosine": self.cosine,
            "top1_agreement": self.top1_agreement,
            "outputs": None if self.outputs is None else list(self.outputs),
            "metric": self.metric,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class HostSummary:
    """The machine the controller ran on: for native and masked targets, the CPU their timings come from."""

    arch: str
    cpu_model: str | None
    cpu_flags: tuple[str, ...]
    cores: int
    engine: str | None
    kernel: str

    @property
    def summary(self) -> str:
        """How the reports name the machine: its CPU (or architecture) and cores."""
        return f"{self.cpu_model or self.arch}, {self.cores} cores"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            arch=data["arch"],
            cpu_model=data["cpu_model"],
            cpu_flags=tuple(data["cpu_flags"]),
            cores=data["cores"],
            engine=data["engine"],
            kernel=data["kernel"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "cpu_model": self.cpu_model,
            "cpu_flags": list(self.cpu_flags),
            "cores": self.cores,
            "engine": self.engine,
            "kernel": self.kernel,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSettings:
    """The options that change what a timing or an int8 artifact means."""

    threads: int
    iterations: int
    timing_rounds: int
    calibration: str
    optimization_level: str
    samples: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            threads=data["threads"],
            iterations=data["iterations"],
            timing_rounds=data["timing_rounds"],
            calibration=data["calibration"],
            optimization_level=data["optimization_level"],
            samples=data["samples"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "iterations": self.iterations,
            "timing_rounds": self.timing_rounds,
            "calibration": self.calibration,
            "optimization_level": self.optimization_level,
            "samples": self.samples,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class RunInfo:
    """Where and how a run ran (farm.report/2). Each target's image tag is in its own entry; the model's hash in
    ``model.sha256``."""

    label: str | None
    host: HostSummary
    settings: RunSettings
    data_sha256: str | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            label=data["label"],
            host=HostSummary.from_dict(data["host"]),
            settings=RunSettings.from_dict(data["settings"]),
            data_sha256=data["data_sha256"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "host": self.host.to_dict(),
            "settings": self.settings.to_dict(),
            "data_sha256": self.data_sha256,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Runtime:
    onnxruntime: str
    providers: tuple[str, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(onnxruntime=data["onnxruntime"], providers=tuple(data["providers"]))

    def to_dict(self) -> dict[str, Any]:
        return {"onnxruntime": self.onnxruntime, "providers": list(self.providers)}


@dataclass(frozen=True, kw_only=True, slots=True)
class Quantization:
    """How an int8 variant was made, and how many of the model's quantizable nodes it actually quantized."""

    kind: Literal["static", "dynamic"]
    format: Literal["QDQ", "QOperator"]
    activation_type: str
    weight_type: str
    reduce_range: bool
    per_channel: bool
    subgraphs: bool
    calibration: Mapping[str, Any] | None
    opset: int
    nodes: NodeCount | None
    # What `farm tune` changed (the "tuned" variant): nodes left in fp32 and weights quantized to 7 bits.
    nodes_to_exclude: tuple[str, ...] = ()
    seven_bit: tuple[str, ...] = ()
    # ... and the exporter patterns it fused before quantizing ("nodes -> HardSwish node").
    fused: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        nodes = data["nodes"]
        return cls(
            kind=data["kind"],
            format=data["format"],
            activation_type=data["activation_type"],
            weight_type=data["weight_type"],
            reduce_range=data["reduce_range"],
            per_channel=data["per_channel"],
            subgraphs=data["subgraphs"],
            calibration=None if data["calibration"] is None else dict(data["calibration"]),
            opset=data["opset"],
            nodes=None if nodes is None else decode(NodeCount, nodes),
            nodes_to_exclude=tuple(data.get("nodes_to_exclude", ())),
            seven_bit=tuple(data.get("seven_bit", ())),
            fused=tuple(data.get("fused", ())),
        )

    def to_dict(self) -> dict[str, Any]:
        changed = {
            name: list(value)
            for name, value in (
                ("nodes_to_exclude", self.nodes_to_exclude),
                ("seven_bit", self.seven_bit),
                ("fused", self.fused),
            )
            if value
        }
        return {
            "kind": self.kind,
            "format": self.format,
            "activation_type": self.activation_type,
            "weight_type": self.weight_type,
            "reduce_range": self.reduce_range,
            "per_channel": self.per_channel,
            "subgraphs": self.subgraphs,
            "calibration": None if self.calibration is None else dict(self.calibration),
            "opset": self.opset,
            "nodes": None if self.nodes is None else encode(self.nodes),
            **changed,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Variant:
    name: str
    status: Status
    error: str | None = None
    size_bytes: int | None = None
    latency_ms: Latency | None = None
    timing: Timing = "none"
    accuracy: Accuracy | None = None
    within_tolerance: bool | None = None
    quantization: Quantization | None = None
    # Why the runtime refused to load it (ir-version, opset, missing-kernel, external-data, invalid-model, other).
    failure_class: str | None = None
    # How many nodes each provider ran, after the runtime's graph optimizations.
    providers: Mapping[str, int] | None = None

    @property
    def not_quantized(self) -> bool:
        """An int8 name on a model in which nothing was quantized (e.g. all compute inside If branches)."""
        nodes = None if self.quantization is None else self.quantization.nodes
        return nodes is not None and nodes.quantized == 0

    @property
    def outcome(self) -> Outcome:
        if self.status == "ok" and self.within_tolerance is False:
            return "out-of-tolerance"
        if self.status == "skipped" and self.not_quantized:
            return "not-quantized"
        return self.status

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        latency, accuracy, quantization = data["latency_ms"], data["accuracy"], data.get("quantization")
        return cls(
            name=data["name"],
            status=data["status"],
            error=data["error"],
            size_bytes=data["size_bytes"],
            latency_ms=None if latency is None else decode(Latency, latency),
            timing=data["timing"],
            accuracy=None if accuracy is None else decode(Accuracy, accuracy),
            within_tolerance=data["within_tolerance"],
            quantization=None if quantization is None else Quantization.from_dict(quantization),
            failure_class=data.get("failure_class"),
            providers=data.get("providers"),
        )

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
            "quantization": None if self.quantization is None else self.quantization.to_dict(),
            "failure_class": self.failure_class,
            "providers": None if self.providers is None else dict(self.providers),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class TargetResult:
    name: str
    platform: str
    mode: Mode
    status: Status
    cpu_model: str | None = None
    reason: str | None = None
    runtime: Runtime | None = None
    variants: tuple[Variant, ...] = ()
    recommended: str | None = None
    recommendation_reason: str | None = None
    warnings: tuple[str, ...] = ()
    exit_code: int | None = None
    log_tail: str | None = None
    duration_s: float | None = None
    image: str | None = None
    # What the runtime's process saw of the CPU (numpy's CPUID probe), on x86.
    cpu_seen: tuple[str, ...] | None = None
    # When the runtime refused the model: {"class", "predicted" (by farm inspect, or null), "prediction"}.
    load_failure: Mapping[str, Any] | None = None
    # The export pitfall check at batch 2: {"status": passed|flagged|not-run, "detail", "node", "op"}.
    export_check: Mapping[str, Any] | None = None
    # What the result depends on, hashed (farm/resume.py); None when the job did not end on its own.
    resume_key: str | None = None
    # The created time of the report `farm matrix --resume` took this result from; None when it ran in this run.
    resumed_from: str | None = None
    # Where it ran (farm/backend): {"kind": "docker", "where": "local" | an engine's address, "cpu_model": the CPU of
    # the machine there, "image": "built" | "cached" | "tagged" | "shipped" | null}; None in reports before backends.
    backend: Mapping[str, Any] | None = None

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        runtime = data["runtime"]
        return cls(
            name=data["name"],
            platform=data["platform"],
            mode=data["mode"],
            cpu_model=data["cpu_model"],
            status=data["status"],
            reason=data["reason"],
            runtime=None if runtime is None else Runtime.from_dict(runtime),
            variants=tuple(Variant.from_dict(v) for v in data["variants"]),
            recommended=data["recommended"],
            recommendation_reason=data["recommendation_reason"],
            warnings=tuple(data["warnings"]),
            exit_code=data["exit_code"],
            log_tail=data["log_tail"],
            duration_s=data["duration_s"],
            image=data["image"],
            cpu_seen=None if data.get("cpu_seen") is None else tuple(data["cpu_seen"]),
            load_failure=data.get("load_failure"),
            export_check=data.get("export_check"),
            resume_key=data.get("resume_key"),
            resumed_from=data.get("resumed_from"),
            backend=data.get("backend"),
        )

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
            "exit_code": self.exit_code,
            "log_tail": self.log_tail,
            "duration_s": self.duration_s,
            "image": self.image,
            "cpu_seen": None if self.cpu_seen is None else list(self.cpu_seen),
            "load_failure": None if self.load_failure is None else dict(self.load_failure),
            "export_check": None if self.export_check is None else dict(self.export_check),
            "resume_key": self.resume_key,
            "resumed_from": self.resumed_from,
            "backend": None if self.backend is None else dict(self.backend),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Report:
    farm_version: str
    created: str
    model: ModelSummary
    data: DataSummary
    tolerance: Tolerance
    targets: tuple[TargetResult, ...]
    warnings: tuple[str, ...] = ()
    # None only in farm.report/1 reports, written before farm recorded it.
    run: RunInfo | None = None
    # Why the run stopped before every target finished (Ctrl-C, SIGTERM, a lost engine); None when it finished.
    incomplete: str | None = None
    schema: str = field(default=SCHEMA_ID)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            schema=data["schema"],
            farm_version=data["farm_version"],
            created=data["created"],
            model=ModelSummary.from_dict(data["model"]),
            data=DataSummary.from_dict(data["data"]),
            tolerance=Tolerance.from_dict(data["tolerance"]),
            run=None if data.get("run") is None else RunInfo.from_dict(data["run"]),
            incomplete=data.get("incomplete"),
            warnings=tuple(data["warnings"]),
            targets=tuple(TargetResult.from_dict(t) for t in data["targets"]),
        )

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Parse and validate a report read from a file; raises InvalidReport (a BadInput) when it is not one."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise InvalidReport("$", f"not JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
        validate(document)
        try:
            return cls.from_dict(document)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            # Without jsonschema (an install without [dev]) only the top level was checked: a broken file ends here.
            raise InvalidReport("$", f"not a farm report ({type(error).__name__}: {error})") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "farm_version": self.farm_version,
            "created": self.created,
            "model": self.model.to_dict(),
            "data": self.data.to_dict(),
            "tolerance": self.tolerance.to_dict(),
            **({} if self.run is None else {"run": self.run.to_dict()}),
            "incomplete": self.incomplete,
            "warnings": list(self.warnings),
            "targets": [t.to_dict() for t in self.targets],
        }

    def to_json(self) -> str:
        # Key order is the contract's, which reads better than sorted; the trailing newline makes it a proper file.
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
