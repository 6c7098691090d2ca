"""The job's input, ``farm.spec/1`` (docs/contracts.md section 1), parsed and checked before any work starts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self, cast

from farm.job.codec import ContractError, decode
from farm.job.tunecontract import CalibrationMethod, Candidate, Point
from farm.job.variants import CANDIDATES, RECIPES

SCHEMA = "farm.spec/1"
STAGES = ("prepare", "evaluate", "tune")
MODES = ("native", "masked", "emulated")
ARCHES = ("x86_64", "aarch64")
LEVELS = ("basic", "extended", "all")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
KNOWN_CANDIDATES = CANDIDATES
KNOWN_MITIGATIONS = ("x64quantprecision",)

Stage = Literal["prepare", "evaluate", "tune"]
Mode = Literal["native", "masked", "emulated"]
Level = Literal["basic", "extended", "all"]


class SpecError(ValueError):
    """The spec cannot be used; the message names the key and what was expected."""


def _get(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise SpecError(f"{where}{key} is missing")
    value = data[key]
    # bool is an int subclass, and "threads": true is a mistake, not one thread.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise SpecError(f"{where}{key} must be {_kind_name(kind)}, not {type(value).__name__} {value!r}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join("null" if k is type(None) else k.__name__ for k in _as_tuple(kind))


def _choice(data: Mapping[str, Any], key: str, choices: tuple[str, ...], where: str) -> str:
    value = cast(str, _get(data, key, str, where))
    if value not in choices:
        raise SpecError(f"{where}{key} is {value!r}; expected one of {', '.join(choices)}")
    return value


def _positive(data: Mapping[str, Any], key: str, where: str, *, minimum: int = 1) -> int:
    value = cast(int, _get(data, key, int, where))
    if value < minimum:
        raise SpecError(f"{where}{key} must be at least {minimum}, not {value}")
    return value


def _fraction(data: Mapping[str, Any], key: str, where: str, *, low: float) -> float:
    value = float(_get(data, key, (int, float), where))
    if not low <= value <= 1.0:
        raise SpecError(f"{where}{key} must lie in [{low:g}, 1], not {value}")
    return value


def _names(data: Mapping[str, Any], key: str, known: tuple[str, ...] | None, where: str) -> tuple[str, ...]:
    values = _get(data, key, list, where)
    if not all(isinstance(v, str) for v in values):
        raise SpecError(f"{where}{key} must be a list of strings, not {values!r}")
    if known is not None:
        unknown = [v for v in values if v not in known]
        if unknown:
            raise SpecError(f"{where}{key} holds unknown names {unknown}; known: {', '.join(known)}")
    if len(set(values)) != len(values):
        raise SpecError(f"{where}{key} names an entry twice: {values!r}")
    return tuple(values)


@dataclass(frozen=True, kw_only=True, slots=True)
class SpecTarget:
    name: str
    platform: str
    arch: str
    mode: Mode
    cpu_model: str | None
    providers: tuple[str, ...]
    x86_vnni: bool | None
    # CPU features (numpy's names) a masked tier's runtime must not see: the proof its mask took.
    cpu_unseen: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        w = "target."
        providers = _names(data, "providers", None, w)
        if not providers:
            raise SpecError("target.providers is empty; name at least CPUExecutionProvider")
        return cls(
            name=_get(data, "name", str, w),
            platform=_get(data, "platform", str, w),
            arch=_choice(data, "arch", ARCHES, w),
            mode=cast(Mode, _choice(data, "mode", MODES, w)),
            cpu_model=_get(data, "cpu_model", (str, type(None)), w),
            providers=providers,
            x86_vnni=_get(data, "x86_vnni", (bool, type(None)), w),
            cpu_unseen=_names(data, "cpu_unseen", None, w),
        )

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


@dataclass(frozen=True, kw_only=True, slots=True)
class Timing:
    warmup: int
    iterations: int
    # The iterations are timed in this many rounds; the spread of the rounds' p50 is the noise a speed claim beats.
    rounds: int


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricRef:
    """The user's ``--metric``: a Python file shipped beside the spec, and the function in it to call."""

    file: Path
    function: str


@dataclass(frozen=True, kw_only=True, slots=True)
class SpecTolerance:
    cosine: float
    top1_agreement: float


# What the tune stage writes into its output folder (farm.job.tune), and the controller reads (farm/tune.py).
TUNE_FILE = "tune.json"
TUNED_MODEL = "tuned.onnx"
TUNE_KEYS = ("budget_s", "budget_trials", "floor", "ranking", "start", "candidate")
DEFAULT_FLOOR = 1.1


@dataclass(frozen=True, kw_only=True, slots=True)
class Tune:
    """The ``tune`` stage's search (farm.job.tune): its budgets, the speedup over fp32 an int8 model must keep, and,
    for an emulated target, the native search's ranking and start to reuse. Every key is optional."""

    budget_s: float | None = None
    budget_trials: int | None = None
    floor: float = DEFAULT_FLOOR
    # The points as the native search's tune.json lists them (its ``ranking``).
    ranking: tuple[Point, ...] | None = None
    start: str | None = None
    # For an emulated target: the native search's tuned model, as its tune.json's ``best`` says it, plus the
    # ``target`` that found it. The search checks it here first and returns to int8 what this target does not need
    # kept out.
    candidate: Candidate | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        w = "tune."
        unknown = sorted(set(data) - set(TUNE_KEYS))
        if unknown:
            raise SpecError(f"tune holds unknown keys {unknown}; known: {', '.join(TUNE_KEYS)}")
        budget_s = _get(data, "budget_s", (int, float, type(None)), w) if "budget_s" in data else None
        if budget_s is not None and not budget_s > 0:
            raise SpecError(f"tune.budget_s must be above 0 (seconds), not {budget_s}")
        trials = _positive(data, "budget_trials", w, minimum=0) if data.get("budget_trials") is not None else None
        floor = float(_get(data, "floor", (int, float), w)) if "floor" in data else DEFAULT_FLOOR
        if not floor >= 0:
            raise SpecError(f"tune.floor must be at least 0 (a speedup over fp32), not {floor}")
        start = _get(data, "start", (str, type(None)), w) if "start" in data else None
        if start is not None and (start not in RECIPES or RECIPES[start].kind != "static"):
            static = [name for name, recipe in RECIPES.items() if recipe.kind == "static"]
            raise SpecError(f"tune.start is {start!r}; expected one of {', '.join(static)}")
        ranking = _get(data, "ranking", (list, type(None)), w) if "ranking" in data else None
        candidate = _get(data, "candidate", (dict, type(None)), w) if "candidate" in data else None
        return cls(
            budget_s=None if budget_s is None else float(budget_s),
            budget_trials=trials,
            floor=floor,
            ranking=None if ranking is None else tuple(_point(entry, index) for index, entry in enumerate(ranking)),
            start=start,
            candidate=None if candidate is None else _candidate(candidate),
        )


def _point(data: object, index: int) -> Point:
    # Not strict: a newer search may rank with more figures than this one reads.
    where = f"tune.ranking[{index}]."
    try:
        point = decode(Point, data, where=where)
    except ContractError as error:
        raise SpecError(str(error)) from None
    if not point.nodes:
        raise SpecError(f"{where}nodes is empty; a point names the nodes it keeps in fp32")
    return point


def _candidate(data: Mapping[str, Any]) -> Candidate:
    try:
        candidate = decode(Candidate, data, where="tune.candidate.", strict=True)
    except ContractError as error:
        raise SpecError(str(error)) from None
    if candidate.variant not in RECIPES or RECIPES[candidate.variant].kind != "static":
        raise SpecError(f"tune.candidate.variant is {candidate.variant!r}; expected a static variant")
    return candidate


@dataclass(frozen=True, kw_only=True, slots=True)
class TunedModel:
    """The model `farm tune` made for this target, and how (its tune.json's best.quantization)."""

    model: Path
    quantization: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class Spec:
    """Paths are absolute: the spec names them relative to the directory that holds spec.json."""

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
    tune: Tune | None = None
    # The evaluate stage's tuned model (`farm matrix --tuned`), evaluated as the variant "tuned"; None: none.
    tuned: TunedModel | None = None

    @property
    def source_model(self) -> Path:
        """What optimization and quantization start from: the controller's rewrite when there is one."""
        return self.rewritten or self.model

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base: Path) -> Self:
        if not isinstance(data, Mapping):
            raise SpecError(f"the spec must be a JSON object, not {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise SpecError(f"schema is {data.get('schema')!r}; this job reads {SCHEMA!r}")

        def path(key: str, *, optional: bool = False) -> Path | None:
            value = _get(data, key, (str, type(None)) if optional else str, "")
            return None if value is None else (base / value).resolve()

        def section(key: str) -> Mapping[str, Any]:
            return cast(Mapping[str, Any], _get(data, key, dict, ""))

        calibration, timing, tolerance = section("calibration"), section("timing"), section("tolerance")
        outputs = None if _get(data, "outputs", (list, type(None)), "") is None else _names(data, "outputs", None, "")
        if outputs is not None and not outputs:
            raise SpecError("outputs is empty; give null to count every float output")
        metric = _get(data, "metric", (dict, type(None)), "")
        tune = _get(data, "tune", (dict, type(None)), "") if "tune" in data else None
        tuned = _get(data, "tuned", (dict, type(None)), "") if "tuned" in data else None
        return cls(
            stage=cast(Stage, _choice(data, "stage", STAGES, "")),
            target=SpecTarget.from_dict(section("target")),
            model=cast(Path, path("model")),
            rewritten=path("rewritten", optional=True),
            inputs=cast(Path, path("inputs")),
            labels=path("labels", optional=True),
            artifacts=path("artifacts", optional=True),
            candidates=_names(data, "candidates", KNOWN_CANDIDATES, ""),
            calibration=Calibration(
                method=cast(CalibrationMethod, _choice(calibration, "method", CALIBRATION_METHODS, "calibration.")),
                samples=_positive(calibration, "samples", "calibration."),
            ),
            optimization_level=cast(Level, _choice(data, "optimization_level", LEVELS, "")),
            threads=_positive(data, "threads", ""),
            timing=Timing(
                warmup=_positive(timing, "warmup", "timing.", minimum=0),
                iterations=_positive(timing, "iterations", "timing.", minimum=0),
                rounds=_positive(timing, "rounds", "timing."),
            ),
            tolerance=SpecTolerance(
                cosine=_fraction(tolerance, "cosine", "tolerance.", low=-1.0),
                top1_agreement=_fraction(tolerance, "top1_agreement", "tolerance.", low=0.0),
            ),
            mitigations=_names(data, "mitigations", KNOWN_MITIGATIONS, ""),
            outputs=outputs,
            metric=None
            if metric is None
            else MetricRef(
                file=(base / cast(str, _get(metric, "file", str, "metric."))).resolve(),
                function=_get(metric, "function", str, "metric."),
            ),
            tune=None if tune is None else Tune.from_dict(tune),
            tuned=None
            if tuned is None
            else TunedModel(
                model=(base / cast(str, _get(tuned, "model", str, "tuned."))).resolve(),
                quantization=dict(_get(tuned, "quantization", dict, "tuned.")),
            ),
        )

    @classmethod
    def from_file(cls, path: Path) -> Self:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SpecError(f"cannot read {path}: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path} is not JSON: {exc}") from exc
        return cls.from_dict(data, base=path.parent)
