"""The tune contracts' records (docs/contracts.md section 6), on both sides: the job's tune stage writes them into
tune.json (``farm.tune/1``, farm/job/tune/schema.json) and the spec's ``tune`` block; the controller
(farm/controller/tune.py, farm/controller/tuned.py) reads them back from it and writes ``farm.tune-report/1``
(farm/controller/tune-report.schema.json).

Standard library and farm.job.codec/types only: the controller reads these without loading onnx, and farm.job.spec
imports them (so this module is not inside the farm.job.tune package, whose modules import the spec).
Written with ``encode``, read with ``decode``; the field order is the key order of the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from farm.job.codec import keyed
from farm.job.report import Quantization
from farm.job.types import Accuracy, Latency

CalibrationMethod = Literal["minmax", "entropy", "percentile"]
# What a trial does: a lane's start, a change for a node's kernel, the fusion of exporter patterns, a knob, a ranked
# point, or a change undone.
Step = Literal["start", "kernel", "fuse", "knob", "point", "return"]
# Why a change keeps something out of int8: its kernel check, its SQNR rank, or the given (native) model kept it.
Cause = Literal["kernel", "sqnr", "given"]
# How a tuned model treats a node (tune-report's differences).
Treatment = Literal["fp32", "7-bit weights", "int8"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Point:
    """A ranked quantization point (tune.json's ``ranking``, the spec's ``tune.ranking``): the region of nodes that
    keeps its tensor(s) in fp32. A given ranking may name only ``nodes``, ``tensor`` and ``sqnr_db``."""

    nodes: tuple[str, ...]
    tensor: str
    tensors: tuple[str, ...] = keyed(omit="empty", default=())
    kind: Literal["weight", "activation"] | None = keyed(omit="none", default=None)
    # The lower of the whole-tensor and the median per-channel SQNR (what ranks it), and the whole-tensor one.
    sqnr_db: float | None
    tensor_sqnr_db: float | None = keyed(omit="none", default=None)


@dataclass(frozen=True, kw_only=True, slots=True)
class Change:
    """What a tuned model keeps out of plain int8 and why (``best.changes``, ``excluded``, ``seven_bit``, and the
    candidate's ``changes``). ``trial`` is absent only from a given change before the search adopts it; ``from`` is
    the target whose search made it, when it came with the candidate."""

    trial: int | None = keyed(omit="none", default=None)
    kind: Literal["fp32", "7-bit"]
    nodes: tuple[str, ...]
    seven_bit: tuple[str, ...]
    cause: Cause
    # The kernel finding's node (the worst of them when one change gives several weights 7 bits).
    kernel_node: str | None = None
    # The ranked point an "sqnr" change kept in fp32.
    tensor: str | None = None
    tensors: tuple[str, ...] = ()
    sqnr_db: float | None = None
    why: str | None
    origin: str | None = keyed(key="from", omit="none", default=None)


@dataclass(frozen=True, kw_only=True, slots=True)
class Candidate:
    """A tuned model as the spec's ``tune.candidate`` names it: the native search's ``best`` and the ``target`` whose
    search it was. The emulated search checks it first."""

    target: str | None = None
    variant: str
    calibration: CalibrationMethod
    per_channel: bool
    reduce_range: bool
    exclude: tuple[str, ...]
    seven_bit: tuple[str, ...] = ()
    fused: bool = False
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class NaiveEntry:
    """One naive variant as tune.json's ``naive`` lists it (under its name): its figures, or why it has none."""

    accuracy: Accuracy | None
    within_tolerance: bool
    latency_ms: Latency | None
    speedup: float | None
    error: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class TrialEntry:
    """One trial as tune.json's ``trials`` lists it."""

    index: int
    change: str
    lane: int
    step: Step
    point: int | None
    # Against the model it changed: nodes put in fp32, weights made 7-bit, changes undone.
    added: tuple[str, ...]
    added_seven_bit: tuple[str, ...]
    returned: tuple[str, ...]
    # The trial's whole config.
    exclude: tuple[str, ...]
    seven_bit: tuple[str, ...]
    fused: bool
    variant: str
    calibration: CalibrationMethod
    per_channel: bool
    reduce_range: bool
    # What the model quantized (farm.job.types.NodeCount as written).
    nodes: Mapping[str, int] | None
    accuracy: Accuracy | None
    latency_ms: Latency | None
    speedup: float | None
    within_tolerance: bool
    kept: bool
    note: str | None
    why: str | None
    error: str | None
    seconds: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Best:
    """tune.json's ``best``: the best trial's model, its figures, what it keeps out of int8 and why, and how the
    quantizer made it (``quantization``, farm.job.quantize's record: farm.report/2's quantization)."""

    trial: int
    variant: str
    exclude: tuple[str, ...]
    seven_bit: tuple[str, ...]
    fused: bool
    calibration: CalibrationMethod
    per_channel: bool
    reduce_range: bool
    accuracy: Accuracy
    within_tolerance: bool
    latency_ms: Latency | None
    speedup: float | None
    changes: tuple[Change, ...]
    # farm.job.quantize's record as it wrote it (its own contract: farm/report/schema.json's quantization).
    quantization: Quantization | None

    def candidate(self, target: str | None) -> Candidate:
        """This model as the spec's ``tune.candidate`` names it, for the emulated targets to check first."""
        return Candidate(
            target=target,
            variant=self.variant,
            calibration=self.calibration,
            per_channel=self.per_channel,
            reduce_range=self.reduce_range,
            exclude=self.exclude,
            seven_bit=self.seven_bit,
            fused=self.fused,
            changes=self.changes,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class CitedKernel:
    """A node's kernel check as tune.json writes it (farm.job.kernels.KernelFinding, rounded): a ``returned`` entry
    cites it, and ``kernels`` lists it with its variant (KernelEntry)."""

    node: str
    op: str
    weight: str | None
    kernel_db: float
    precise_db: float | None
    lossy: bool
    saturates: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class KernelEntry(CitedKernel):
    """One node's kernel check (tune.json's ``kernels``): the finding, and the variant it was made for."""

    variant: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Returned:
    """What a kept ``return`` trial ran in int8 again, and why (tune.json's ``returned``)."""

    trial: int
    returned: tuple[str, ...]
    kernel: CitedKernel | None
    why: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Searched:
    """What the controller reads back of one target of farm.tune-report/1 (``targets[]``): the job's tune.json with
    the controller's ``name``, ``mode``, ``status`` and ``reason``; a skipped target has those alone."""

    name: str
    mode: str
    status: Literal["ok", "failed", "skipped"]
    reason: str | None = None
    verdict: Literal["tuned", "keep-fp32"] | None = None
    best: Best | None = None
    kernels: tuple[KernelEntry, ...] = ()
    returned: tuple[Returned, ...] = ()
    ranking: tuple[Point, ...] = ()
    model_file: str | None = None
    resume_key: str | None = None

    @property
    def tuned(self) -> Best | None:
        """The tuned model's ``best``, when the search finished with one."""
        return self.best if self.status == "ok" and self.verdict == "tuned" else None


@dataclass(frozen=True, kw_only=True, slots=True)
class Treated:
    """How one target's tuned model treats a node, and why."""

    # "as" is a Python keyword; keyed gives the field its JSON name (a dataclasses.field, as RUF009 cannot tell).
    treatment: Treatment = keyed(key="as")
    why: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Difference:
    """A node that the tuned models treat differently across targets (tune-report's ``differences``)."""

    node: str
    targets: Mapping[str, Treated]
