"""The job's input, ``farm.spec/1`` (docs/contracts.md section 1): one set of dataclasses for both sides.

The controller builds a ``Spec`` (farm/controller/jobs.py) and writes ``encode(spec)``; the job reads it back with
``Spec.from_file``, which decodes it (farm.job.codec checks every key's type), checks what types cannot say
(ranges, known names, no repeats: each dataclass's ``__post_init__``, so a bad spec fails on either side), and only
then makes its paths absolute. On the wire, and in a ``Spec`` the controller builds, paths are relative to the
folder that holds spec.json.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal, Self, get_args

from farm.job.codec import ContractError, decode, keyed
from farm.job.report import Quantization, TimingMode
from farm.job.tunecontract import CalibrationMethod, Candidate, Point
from farm.job.variants import CANDIDATES, FP32, MITIGATION_SUFFIX, OPTIMIZED, RECIPES

SCHEMA: Final = "farm.spec/1"
KNOWN_CANDIDATES = CANDIDATES
KNOWN_MITIGATIONS = ("x64quantprecision",)
# The baselines an evaluate stage may leave out (`farm matrix --variant`); fp32 is every figure's reference.
SKIPPABLE = (OPTIMIZED,)

# The codec checks a Literal field's value against these names, and its message lists them.
Stage = Literal["prepare", "evaluate", "tune", "bisect"]
Mode = Literal["native", "masked", "emulated"]
Arch = Literal["x86_64", "aarch64"]
Level = Literal["basic", "extended", "all"]
CALIBRATION_METHODS: tuple[CalibrationMethod, ...] = get_args(CalibrationMethod)


class SpecError(ContractError):
    """The spec cannot be used; the message names the key and what was expected. The job exits 2 on it."""


def _at_least(key: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise SpecError(f"{key} must be at least {minimum}, not {value}")


def _within(key: str, value: float, low: float) -> None:
    if not low <= value <= 1.0:
        raise SpecError(f"{key} must lie in [{low:g}, 1], not {value}")


def _distinct(key: str, values: Sequence[str], known: tuple[str, ...] | None = None) -> None:
    """Names that must be known (when ``known`` lists them) and listed once."""
    if known is not None:
        unknown = [v for v in values if v not in known]
        if unknown:
            raise SpecError(f"{key} holds unknown names {unknown}; known: {', '.join(known)}")
    if len(set(values)) != len(values):
        raise SpecError(f"{key} names an entry twice: {list(values)!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class SpecTarget:
    name: str
    platform: str
    arch: Arch
    mode: Mode
    cpu_model: str | None
    providers: tuple[str, ...]
    x86_vnni: bool | None
    # CPU features (numpy's names) a masked tier's runtime must not see: the proof its mask took.
    cpu_unseen: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.providers:
            raise SpecError("target.providers is empty; name at least CPUExecutionProvider")
        _distinct("target.providers", self.providers)
        _distinct("target.cpu_unseen", self.cpu_unseen)

    @property
    def emulated(self) -> bool:
        return self.mode == "emulated"

    @property
    def masked(self) -> bool:
        return self.mode == "masked"

    @property
    def saturation_risk(self) -> bool:
        """x86 without VNNI: MLAS's u8s8 and s8s8 kernels use VPMADDUBSW, whose int16 pair sums can saturate."""
        return self.arch == "x86_64" and self.x86_vnni is False

    @property
    def wants_accelerator(self) -> bool:
        """The first requested provider is not the CPU one: losing it silently would void every figure."""
        return self.providers[0] != "CPUExecutionProvider"


@dataclass(frozen=True, kw_only=True, slots=True)
class Calibration:
    method: CalibrationMethod
    samples: int

    def __post_init__(self) -> None:
        _at_least("calibration.samples", self.samples, 1)


# Adaptive timing (docs/contracts.md section 2): a round of one variant ends once its runs took this long, after at
# least this many runs; never past the fixed design's count, iterations / rounds.
ROUND_S = 0.25
MIN_RUNS = 5


@dataclass(frozen=True, kw_only=True, slots=True)
class Timing:
    warmup: int
    iterations: int
    # The iterations are timed in this many rounds; the spread of the rounds' p50 is the noise a speed claim beats.
    rounds: int
    # How the rounds end (`farm matrix --timing`); a spec written before adaptive timing times every round in full.
    mode: TimingMode = "fixed"
    # Adaptive only: a round (and the warmup) of one variant stops once its runs took ``round_s`` seconds, after at
    # least ``min_runs`` runs (the warmup after one).
    round_s: float = ROUND_S
    min_runs: int = MIN_RUNS

    def __post_init__(self) -> None:
        _at_least("timing.warmup", self.warmup, 0)
        _at_least("timing.iterations", self.iterations, 0)
        _at_least("timing.rounds", self.rounds, 1)
        _at_least("timing.min_runs", self.min_runs, 1)
        if not self.round_s > 0:
            raise SpecError(f"timing.round_s must be above 0 (seconds), not {self.round_s}")


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricRef:
    """The user's ``--metric``: a Python file shipped beside the spec (``file``, relative to the spec's folder until
    the job resolves it), and the function in it to call."""

    file: Path
    function: str


@dataclass(frozen=True, kw_only=True, slots=True)
class SpecTolerance:
    cosine: float
    top1_agreement: float

    def __post_init__(self) -> None:
        _within("tolerance.cosine", self.cosine, -1.0)
        _within("tolerance.top1_agreement", self.top1_agreement, 0.0)


# What the tune stage writes into its output folder (farm.job.tune), and the controller reads (farm/controller/tune.py).
TUNE_FILE = "tune.json"
TUNED_MODEL = "tuned.onnx"
DEFAULT_FLOOR = 1.1


@dataclass(frozen=True, kw_only=True, slots=True)
class Tune:
    """The ``tune`` stage's search (farm.job.tune): its budgets, the speedup over fp32 an int8 model must keep, and,
    for an emulated target, the native search's ranking and start to reuse. Every key is optional."""

    budget_s: float | None = None
    budget_trials: int | None = None
    floor: float = DEFAULT_FLOOR
    # The points as the native search's tune.json lists them (its ``ranking``); a newer search may rank with more
    # figures than this one reads, so their unknown keys are read past.
    ranking: tuple[Point, ...] | None = keyed(lenient=True, default=None)
    start: str | None = None
    # For an emulated target: the native search's tuned model, as its tune.json's ``best`` says it, plus the
    # ``target`` that found it. The search checks it here first and returns to int8 what this target does not need
    # kept out.
    candidate: Candidate | None = None

    def __post_init__(self) -> None:
        if self.budget_s is not None and not self.budget_s > 0:
            raise SpecError(f"tune.budget_s must be above 0 (seconds), not {self.budget_s}")
        if self.budget_trials is not None:
            _at_least("tune.budget_trials", self.budget_trials, 0)
        if not self.floor >= 0:
            raise SpecError(f"tune.floor must be at least 0 (a speedup over fp32), not {self.floor}")
        if self.start is not None and not _static(self.start):
            static = [name for name in RECIPES if _static(name)]
            raise SpecError(f"tune.start is {self.start!r}; expected one of {', '.join(static)}")
        for index, point in enumerate(self.ranking or ()):
            if not point.nodes:
                raise SpecError(f"tune.ranking[{index}].nodes is empty; a point names the nodes it keeps in fp32")
        if self.candidate is not None and not _static(self.candidate.variant):
            raise SpecError(f"tune.candidate.variant is {self.candidate.variant!r}; expected a static variant")


def _static(variant: str) -> bool:
    return variant in RECIPES and RECIPES[variant].kind == "static"


@dataclass(frozen=True, kw_only=True, slots=True)
class TunedModel:
    """The model `farm tune` made for this target (relative to the spec's folder until the job resolves it), and how
    (its tune.json's best.quantization, as farm/controller/tuned.py copies it; the report's Quantization)."""

    model: Path
    quantization: Quantization


@dataclass(frozen=True, kw_only=True, slots=True)
class Estimate:
    """The job runs under farm's counting QEMU (farm.job.estimate): count each variant over ``runs`` marked runs
    and price them with the cost model ``cost_model`` (farm/job/estimate/costs.json), until ``budget_s`` seconds
    after the job began; the variants not counted by then keep their accuracy and go without an estimate."""

    cost_model: str
    runs: int
    budget_s: float

    def __post_init__(self) -> None:
        _at_least("estimate.runs", self.runs, 1)
        if self.budget_s <= 0:
            raise SpecError(f"estimate.budget_s must be positive, not {self.budget_s}")


@dataclass(frozen=True, kw_only=True, slots=True)
class BisectSpec:
    """The bisect stage (farm.job.bisect): where ``variant`` (a prepared candidate, or one with a runtime mitigation)
    leaves fp32 on this target (or, for fp32 itself, where this target's fp32 leaves another's), over the first
    ``samples`` samples; a point below ``threshold_db`` diverges; one sample's marked values stay within
    ``limit_bytes`` (farm.job.divergence)."""

    variant: str  # FP32: fp32 itself, compared with another target's (save or against)
    threshold_db: float
    limit_bytes: int
    samples: int
    # Write the variant's values at its points (farm bisect --against's reference target) instead of comparing.
    save: bool = keyed(omit="empty", default=False)
    # Compare with those values of another target (a folder relative to the spec's) instead of fp32 here.
    against: Path | None = keyed(omit="none", default=None)

    def __post_init__(self) -> None:
        if self.save and self.against is not None:
            raise SpecError("bisect.save and bisect.against exclude each other: a job saves or compares")
        base = self.variant.removesuffix(MITIGATION_SUFFIX)
        if self.variant == FP32:
            if not self.save and self.against is None:
                raise SpecError(
                    "bisect.variant fp32 needs bisect.save or bisect.against: fp32 is compared across targets"
                )
        elif base not in KNOWN_CANDIDATES:
            raise SpecError(
                f"bisect.variant {self.variant!r} is neither fp32 nor an int8 candidate; known: {', '.join(CANDIDATES)}"
            )
        _at_least("bisect.samples", self.samples, 1)
        _at_least("bisect.limit_bytes", self.limit_bytes, 1 << 20)


@dataclass(frozen=True, kw_only=True, slots=True)
class DivergenceSpec:
    """The evaluate stage's divergence (`farm matrix --divergence`, farm.job.evaluate.drift): where each of the
    ``count`` out-of-tolerance int8 variants closest to tolerance (None: every one) leaves fp32, over the first
    ``samples`` samples, as farm bisect compares them (``threshold_db``, ``limit_bytes``)."""

    count: int | None
    threshold_db: float
    limit_bytes: int
    samples: int

    def __post_init__(self) -> None:
        if self.count is not None:
            _at_least("divergence.count", self.count, 1)
        _at_least("divergence.samples", self.samples, 1)
        _at_least("divergence.limit_bytes", self.limit_bytes, 1 << 20)


@dataclass(frozen=True, kw_only=True, slots=True)
class ProfileSpec:
    """The deployment profile (farm.job.profile, docs/contracts.md): each variant's start-up and memory in a process
    of its own; ``threads``, the intra-op thread counts whose p50 is timed beside ``Spec.threads`` (profile only)."""

    threads: tuple[int, ...]
    # Seconds from the stage's start after which no profile is waited for (the job must still end on its own within
    # the container's budget); None: no limit but the profile's own timeouts.
    budget_s: float | None = keyed(omit="none", default=None)

    def __post_init__(self) -> None:
        if self.budget_s is not None and self.budget_s <= 0:
            raise SpecError(f"profile.budget_s must be positive, not {self.budget_s}")
        if not self.threads:
            raise SpecError("profile.threads must name at least one thread count")
        for count in self.threads:
            _at_least("profile.threads[]", count, 1)
        if len(set(self.threads)) != len(self.threads):
            raise SpecError(f"profile.threads must not repeat a count: {list(self.threads)}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Spec:
    """``farm.spec/1`` in the JSON's order. Paths are relative to the folder that holds spec.json, as written;
    ``Spec.from_file`` (the job) makes them absolute."""

    schema: Literal["farm.spec/1"] = SCHEMA
    stage: Stage
    target: SpecTarget
    model: Path
    rewritten: Path | None
    inputs: Path
    labels: Path | None
    artifacts: Path | None
    candidates: tuple[str, ...]
    calibration: Calibration
    optimization_level: Level
    threads: int
    timing: Timing
    tolerance: SpecTolerance
    mitigations: tuple[str, ...]
    # The outputs that make a variant's verdict; None: every float output (docs/contracts.md section 2).
    outputs: tuple[str, ...] | None
    metric: MetricRef | None
    # The tune stage's settings (the spec's optional "tune" block); None where the spec has none.
    tune: Tune | None = keyed(omit="none", default=None)
    # The evaluate stage's tuned model (`farm matrix --tuned`), evaluated as the variant "tuned"; None: none.
    tuned: TunedModel | None = keyed(omit="none", default=None)
    # Count instructions and estimate latencies (an emulated target under farm's counting QEMU); None: do not.
    estimate: Estimate | None = keyed(omit="none", default=None)
    # None: no deployment profile (--no-profile).
    profile: ProfileSpec | None = keyed(omit="none", default=None)
    # Baselines the evaluate stage leaves out (`farm matrix --variant` without "optimized"); empty: none.
    skip: tuple[str, ...] = keyed(omit="empty", default=())
    # The bisect stage's settings; None where the spec has none.
    bisect: BisectSpec | None = keyed(omit="none", default=None)
    # The evaluate stage's divergence of out-of-tolerance variants; None: none (--divergence none).
    divergence: DivergenceSpec | None = keyed(omit="none", default=None)

    def __post_init__(self) -> None:
        _distinct("candidates", self.candidates, KNOWN_CANDIDATES)
        _at_least("threads", self.threads, 1)
        _distinct("mitigations", self.mitigations, KNOWN_MITIGATIONS)
        _distinct("skip", self.skip, SKIPPABLE)
        if self.outputs is not None:
            if not self.outputs:
                raise SpecError("outputs is empty; give null to count every float output")
            _distinct("outputs", self.outputs)

    @property
    def source_model(self) -> Path:
        """What optimization and quantization start from: the controller's rewrite when there is one."""
        return self.rewritten or self.model

    def resolved(self, base: Path) -> Self:
        """This spec with its paths made absolute against ``base``, the folder that holds spec.json."""

        def at(path: Path) -> Path:
            return (base / path).resolve()

        return replace(
            self,
            model=at(self.model),
            rewritten=None if self.rewritten is None else at(self.rewritten),
            inputs=at(self.inputs),
            labels=None if self.labels is None else at(self.labels),
            artifacts=None if self.artifacts is None else at(self.artifacts),
            metric=None if self.metric is None else replace(self.metric, file=at(self.metric.file)),
            tuned=None if self.tuned is None else replace(self.tuned, model=at(self.tuned.model)),
            bisect=self.bisect
            if self.bisect is None or self.bisect.against is None
            else replace(self.bisect, against=at(self.bisect.against)),
        )

    @classmethod
    def from_dict(cls, data: object, *, base: Path) -> Self:
        """The spec a JSON object says, checked whole, its paths resolved against ``base``; raises SpecError."""
        if not isinstance(data, Mapping):
            raise SpecError(f"the spec must be a JSON object, not {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise SpecError(f"schema is {data.get('schema')!r}; this job reads {SCHEMA!r}")
        tune = data.get("tune")
        if tune is not None and not isinstance(
            tune, Mapping
        ):  # the message says null is allowed, as the codec's would not
            raise SpecError(f"tune must be an object or null, not {type(tune).__name__}")
        try:
            spec = decode(cls, data, strict=True)
        except SpecError:
            raise
        except ContractError as exc:  # the codec's type checks: the job's exit status is the same as for any bad spec
            raise SpecError(str(exc)) from exc
        return spec.resolved(base)

    @classmethod
    def from_file(cls, path: Path) -> Self:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SpecError(f"cannot read {path}: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path} is not JSON: {exc}") from exc
        return cls.from_dict(data, base=path.parent)
