"""Stage ``tune`` (``farm tune``, issue 12): the fastest int8 model of this target that holds the tolerance, found in
the target itself, with its own kernels; or the evidence that none beats fp32 by the speed floor.

1. The start: ``tune.start``, else among the target's static candidates the most accurate one that is at least
   ``floor`` times as fast as fp32 (when timed), else the most accurate. An emulated target given the native
   search's tuned model (``tune.candidate``) starts from that instead.
2. The kernel check (farm.job.kernels), once per lane: each quantized compute node cut out with its Q/DQ nodes and
   run fused, with this target's int8 kernel, against the same QDQ computed as written. A node whose kernel loses
   accuracy here (VPMADDUBSW's int16 pair sums saturate on x86 without VNNI; a run with 32-bit sums tells) first gets
   7-bit weights alone, the classic remedy that keeps its int8 speed, and fp32 when those fall short. Where several
   saturate, 7-bit weights for all of them are one trial first; ``MAX_IDLE_TRIALS`` remedies in a row that did not
   help leave the rest to the ranking.
3. The cheap knobs, each one trial: exporter patterns fused (farm.job.fuse), the other calibration methods,
   per-channel weights, and 7-bit weights everywhere (reduce_range) only where the kernel check could not run.
4. The SQNR ranking (farm.job.ranking), once, or ``tune.ranking`` as the native search wrote it; then the greedy
   search, worst point first: each trial keeps one more *region* in fp32 and is kept only when it brings the real
   metric (the tolerance's cosine and top-1, or ``--metric``) closer to the tolerance and, when timed, the model
   still beats fp32 by the floor; otherwise it is undone.
5. Within tolerance, each change is undone alone and stays undone while the model stays within: those whose reason
   does not hold on this target first (a node kept in fp32 for a kernel that is exact here). Then, for speed, the
   fusion of exporter patterns.
6. Lanes: on a timed target, each kernel family (activation and weight type) whose naive variants ran faster than
   the best model's family gets a search of its own, from its plain recipe with the best model's settings: U8S8 with
   one node in fp32 can beat U8U8 with none, whose kernels run at about half the speed on x86.

It stops when the lanes end, at the budget (``budget_trials`` search trials, ``budget_s`` seconds since the stage
started); a lane stops within tolerance, after ``MAX_IDLE_TRIALS`` trials in a row that did not help, when the points
run out, when it can no longer beat its rival, or at once when its start does not beat fp32 by the floor (keeping
more in fp32 only makes it slower).

``tune.json`` (``farm.tune/1``) is rewritten atomically after every trial, so an interrupted search keeps its log
(``status`` says "running" until the end). When nothing within tolerance beats fp32 by the floor the verdict is
"keep-fp32", with the best trade-off found: a result, not a failure. ``tuned.onnx`` is written when the verdict is
"tuned".
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from farm.job import cpu, usermetric
from farm.job.data import Dataset, DatasetError
from farm.job.evaluate import _latency, _run_all, model_size
from farm.job.fuse import Fused, counts, fuse
from farm.job.kernels import KernelFinding, check_kernels
from farm.job.metrics import compare, default_counted
from farm.job.modelfile import copy_model, keeps_external_data, save_model
from farm.job.quantize import OpsetRaiseFailed, PreProcessFailed, pre_process, quantize, raise_opset
from farm.job.ranking import rank_points
from farm.job.recommend import NOISE_FLOOR
from farm.job.result import error_text, write_json_atomic
from farm.job.session import open_session
from farm.job.spec import (
    CALIBRATION_METHODS,
    TUNE_FILE,
    TUNED_MODEL,
    Calibration,
    CalibrationMethod,
    Spec,
    Tune,
)
from farm.job.types import Accuracy, Latency, NodeCount
from farm.job.variants import RECIPES, SUBGRAPH_VARIANT

SCHEMA = "farm.tune/1"
# The search ends after this many trials in a row that were undone: the points left are ranked as less lossy.
MAX_IDLE_TRIALS = 8
# A naive variant gets a lane of its own when it ran faster than the best model within tolerance by more than the
# noise rule's margin.
FASTER_BY = NOISE_FLOOR
# What a trial does: a lane's start, a change for a node's kernel, the fusion of exporter patterns, a knob, a ranked
# point, or a change undone.
Step = Literal["start", "kernel", "fuse", "knob", "point", "return"]
# A change is kept when it closes at least this share of the gap to the tolerance (or, with the tolerance met by
# cosine and top-1 but not by --metric, raises the cosine at all).
MIN_GAIN = 0.01

log = logging.getLogger("farm.job")


class TuneFailed(RuntimeError):
    """The search cannot run at all (no data, fp32 does not run, no static candidate): tune.json says why."""


def say(text: str) -> None:
    """A progress line; the controller shows lines that start with 'farm:' as the job's stages."""
    print(f"farm: {text}", flush=True)


@dataclass(frozen=True, kw_only=True, slots=True)
class QuantConfig:
    """One quantized model the search can make: the start's recipe, varied."""

    variant: str
    method: CalibrationMethod
    per_channel: bool
    reduce_range: bool
    # Nodes left in fp32 (nodes_to_exclude), and weight initializers quantized to 7 bits (the nodes whose kernels
    # saturate on x86 without VNNI).
    exclude: tuple[str, ...] = ()
    seven_bit: tuple[str, ...] = ()
    # Quantized from the source with its exporter patterns fused (farm.job.fuse).
    fused: bool = False

    @classmethod
    def of(cls, variant: str, method: CalibrationMethod) -> QuantConfig:
        recipe = RECIPES[variant]
        return cls(variant=variant, method=method, per_channel=recipe.per_channel, reduce_range=recipe.reduce_range)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantConfig:
        """A config as tune.json's ``best`` (and the spec's ``tune.candidate``) writes it."""
        return cls(
            variant=str(data["variant"]),
            method=data["calibration"],
            per_channel=bool(data["per_channel"]),
            reduce_range=bool(data["reduce_range"]),
            exclude=tuple(data.get("exclude", ())),
            seven_bit=tuple(data.get("seven_bit", ())),
            fused=bool(data.get("fused", False)),
        )


def _fusion_text(fusions: Sequence[Fused]) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in counts(fusions).items())


def _without_reduce_range(variant: str) -> str | None:
    """The static recipe like ``variant`` but with 8-bit weights, when ``variant`` has reduce_range."""
    recipe = RECIPES[variant]
    if not recipe.reduce_range:
        return None
    return next(
        (
            name
            for name, other in RECIPES.items()
            if other.kind == "static"
            and not other.reduce_range
            and (other.activation, other.weight, other.per_channel)
            == (recipe.activation, recipe.weight, recipe.per_channel)
        ),
        None,
    )


def _covering(config: QuantConfig, changes: list[dict[str, Any]], origin: str) -> list[dict[str, Any]]:
    """The given changes, plus one for each node or weight the given config keeps out of int8 that none names."""
    named = {n for c in changes for n in c.get("nodes", ())} | {w for c in changes for w in c.get("seven_bit", ())}
    why = f"{origin}'s tuned model keeps it out of int8"
    extra: list[dict[str, Any]] = [
        {"kind": "fp32", "nodes": [n], "seven_bit": [], "cause": "given", "kernel_node": None, "why": why}
        for n in config.exclude
        if n not in named
    ]
    extra += [
        {"kind": "7-bit", "nodes": [], "seven_bit": [w], "cause": "given", "kernel_node": None, "why": why}
        for w in config.seven_bit
        if w not in named
    ]
    return changes + extra


def _family(variant: str) -> tuple[str, str]:
    """A variant's kernel family: its activation and weight types, which decide the kernels it runs."""
    recipe = RECIPES[variant]
    return recipe.activation, recipe.weight


def _kept_text(config: QuantConfig) -> str:
    """What a config keeps out of plain int8, in words."""
    parts = []
    if config.exclude:
        count = len(config.exclude)
        parts.append(f"{count} node{'' if count == 1 else 's'} kept in fp32")
    if config.seven_bit:
        count = len(config.seven_bit)
        parts.append(f"7-bit weights for {count} node{'' if count == 1 else 's'}")
    if config.reduce_range and not RECIPES[config.variant].reduce_range:
        parts.append("7-bit weights everywhere (reduce_range)")
    return ", ".join(parts) or "nothing kept in fp32"


# ---------------------------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------------------------
# The search.


@dataclass(kw_only=True, slots=True)
class _Trial:
    index: int
    # Which lane (a search from one start) it belongs to.
    lane: int
    change: str
    config: QuantConfig
    step: Step
    point: int | None = None
    # What this trial changed against the current model: nodes put in fp32, weights made 7-bit, changes undone.
    added: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    returned: tuple[str, ...] = ()
    # The kernel finding a "kernel" trial acts on (or a "return" trial cites), and why the change was tried.
    kernel: KernelFinding | None = None
    why: str | None = None
    # How the quantizer made its model (farm.job.quantize's record): the tuned model's, in tune.json's best.
    record: dict[str, Any] | None = None
    # What the model quantized (farm.job.types.NodeCount.to_dict()); a model with none left quantized is not int8.
    nodes: dict[str, int] | None = None
    accuracy: Accuracy | None = None
    latency: Latency | None = None
    speedup: float | None = None
    within: bool = False
    kept: bool = False
    note: str | None = None
    error: str | None = None
    seconds: float = 0.0
    model: Path | None = None

    @property
    def int8(self) -> bool:
        """Something is still quantized (unknown counts as yes: the quantizer said nothing about it)."""
        return self.nodes is None or self.nodes.get("quantized", 1) > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "change": self.change,
            "lane": self.lane,
            "step": self.step,
            "point": self.point,
            "added": list(self.added),
            "added_seven_bit": list(self.weights),
            "returned": list(self.returned),
            "exclude": list(self.config.exclude),
            "seven_bit": list(self.config.seven_bit),
            "fused": self.config.fused,
            "variant": self.config.variant,
            "calibration": self.config.method,
            "per_channel": self.config.per_channel,
            "reduce_range": self.config.reduce_range,
            "nodes": self.nodes,
            "accuracy": None if self.accuracy is None else self.accuracy.to_dict(),
            "latency_ms": None if self.latency is None else self.latency.to_dict(),
            "speedup": None if self.speedup is None else round(self.speedup, 4),
            "within_tolerance": self.within,
            "kept": self.kept,
            "note": self.note,
            "why": self.why,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


@dataclass(kw_only=True, slots=True)
class _Naive:
    name: str
    accuracy: Accuracy | None = None
    within: bool = False
    latency: Latency | None = None
    speedup: float | None = None
    error: str | None = None
    session: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": None if self.accuracy is None else self.accuracy.to_dict(),
            "within_tolerance": self.within,
            "latency_ms": None if self.latency is None else self.latency.to_dict(),
            "speedup": None if self.speedup is None else round(self.speedup, 4),
            "error": self.error,
        }


class _Tuner:
    """The search for one target; ``state`` is tune.json as it stands."""

    def __init__(self, spec: Spec, out: Path) -> None:
        self.spec, self.out = spec, out
        self.began = time.monotonic()
        self.trials: list[_Trial] = []
        self.points: list[dict[str, Any]] = []
        # The model the search builds on: the last kept trial.
        self.current: _Trial | None = None
        self.settings = spec.tune or Tune()
        self.work = self.out / "tune-work"
        self.timed = spec.timing.iterations > 0
        self.tolerance = (spec.tolerance.cosine, spec.tolerance.top1_agreement)
        self.state: dict[str, Any] = {
            "schema": SCHEMA,
            "status": "running",
            "error": None,
            "target": spec.target.name,
            "mode": spec.target.mode,
            "timed": self.timed,
            "floor": self.settings.floor,
            "tolerance": {"cosine": spec.tolerance.cosine, "top1_agreement": spec.tolerance.top1_agreement},
            "budget": {"seconds": self.settings.budget_s, "trials": self.settings.budget_trials},
            "start": None,
            "candidate": None,
            "fp32": None,
            "naive": {},
            "ranking": [],
            "ranking_source": None,
            "fusions": [],
            "kernels": [],
            "lanes": [],
            "trials": [],
            "stopped": None,
            "verdict": None,
            "reason": None,
            "best": None,
            "excluded": [],
            "seven_bit": [],
            "returned": [],
            "tuned_model": None,
            "warnings": [],
            "seconds": 0.0,
        }
        self.feeds: list[dict[str, np.ndarray]] = []
        self.reference: list[list[np.ndarray]] = []
        self.names: list[str] = []
        self.counted: tuple[str, ...] = ()
        self.labels: np.ndarray | None = None
        self.dataset: Dataset | None = None
        self.metric: usermetric.UserMetric | None = None
        self.reference_by_name: dict[str, Any] = {}
        self.fp32_session: Any = None
        self.fp32_latency: Latency | None = None
        self.source: Path = spec.source_model
        # The kernel check of each lane's variant, and the naive models it may check.
        self.kernels: dict[str, list[KernelFinding]] = {}
        self.naive_models: dict[str, Path] = {}
        # The changes the given model (tune.candidate) made, each with its reason, as its search wrote them.
        self.given_changes: list[dict[str, Any]] = []
        # The source with its exporter patterns fused, when it has any, and each source raised to opset 13.
        self.fused_source: Path | None = None
        self.fusions: list[Fused] = []
        self.per_channel_sources: dict[Path, Path | OpsetRaiseFailed] = {}

    # -- bookkeeping ---------------------------------------------------------------------------------------------

    def save(self) -> None:
        self.state["trials"] = [t.to_dict() for t in self.trials]
        self.state["seconds"] = round(time.monotonic() - self.began, 3)
        write_json_atomic(self.out / TUNE_FILE, self.state)

    def warn(self, text: str) -> None:
        log.info("tune: %s", text)
        if text not in self.state["warnings"]:
            self.state["warnings"].append(text)

    def budget_spent(self) -> str | None:
        searched = sum(1 for t in self.trials if t.index > 0)
        trials = self.settings.budget_trials
        if trials is not None and searched >= trials:
            return f"the trial budget ({trials}) is spent"
        seconds = self.settings.budget_s
        if seconds is not None and time.monotonic() - self.began >= seconds:
            return f"the time budget ({seconds:g} s) is spent"
        return None

    # -- the stage -----------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        self.save()
        try:
            self._run()
        except TuneFailed as exc:
            say(f"tune failed: {exc}")
            self.state.update(status="failed", error=str(exc))
            self.save()
            return self.state
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
        self.state["status"] = "done"
        self.save()
        return self.state

    def _run(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self._load()
        self._prepare_source()
        start = self._naive()
        given = self.settings.candidate
        self.state["start"] = start if given is None else given["variant"]
        self.state["candidate"] = None if given is None else dict(given)
        stopped = self._search(start)
        self.state["stopped"] = stopped
        self._verdict(stopped)

    def _load(self) -> None:
        spec = self.spec
        try:
            dataset = Dataset.load(spec.inputs, spec.labels)
        except DatasetError as exc:
            raise TuneFailed(str(exc)) from exc
        self.dataset, self.labels = dataset, dataset.labels
        if spec.target.masked:
            seen = cpu.features_seen() if spec.target.arch == "x86_64" else None
            problem = cpu.mask_problem(spec.target.cpu_unseen, seen)
            if problem:
                raise TuneFailed(problem)
        if spec.metric is not None:
            try:
                self.metric = usermetric.load(spec.metric.file, spec.metric.function)
            except usermetric.UserMetricError as exc:
                raise TuneFailed(str(exc)) from exc
        say("evaluating fp32")
        try:
            session = open_session(spec.model, target=spec.target, threads=spec.threads)
            inputs = [i.name for i in session.get_inputs()]
            self.feeds = [dataset.feed(i, inputs) for i in range(dataset.samples)]
            self.reference = _run_all(session, self.feeds)
        except Exception as exc:  # ORT's own words: the model does not run here
            raise TuneFailed(f"fp32 does not run: {error_text(exc)}") from exc
        self.fp32_session = session
        self.names = [o.name for o in session.get_outputs()]
        unknown = [n for n in spec.outputs or () if n not in self.names]
        if unknown:
            raise TuneFailed(f"--output names {', '.join(unknown)}, which the model does not output")
        self.counted = spec.outputs or default_counted(self.names, self.reference)
        if self.metric is not None:
            self.reference_by_name = usermetric.by_name(self.names, self.reference)
        accuracy = self._accuracy(self.reference)
        self.state["fp32"] = {"accuracy": accuracy.to_dict(), "latency_ms": None, "size_bytes": model_size(spec.model)}
        self.save()

    def _prepare_source(self) -> None:
        """quant_pre_process, as prepare does, then a unique name on every node (``nodes_to_exclude`` names them),
        and the same with its exporter patterns fused (farm.job.fuse), for the knob that tries it."""
        pre = self.work / "pre.onnx"
        source = self.spec.source_model
        try:
            for warning in pre_process(source, pre):
                self.warn(warning)
            source = pre
        except PreProcessFailed as exc:
            self.warn(f"{exc}; tuning the model without pre-processing")
        source, model, external = _named_nodes(source, self.work / "source.onnx")
        self.source = source
        try:
            fused, self.fusions = fuse(model)
        except Exception as exc:  # a graph the pattern matcher cannot read: no fusion knob, the search goes on
            self.warn(f"fusing exporter patterns failed: {error_text(exc)}")
            fused, self.fusions = model, []
        if self.fusions:
            self.fused_source = save_model(fused, self.work / "source-fused.onnx", external=external)
            self.state["fusions"] = [
                {"kind": f.kind, "replaced": list(f.replaced), "node": f.node} for f in self.fusions
            ]
            say(f"exporter patterns to fuse: {_fusion_text(self.fusions)}")

    def _source_for(self, config: QuantConfig) -> Path:
        base = self.fused_source if config.fused and self.fused_source is not None else self.source
        if not config.per_channel:
            return base
        raised = self.per_channel_sources.get(base)
        if raised is None:
            try:
                # Into the work folder: the source may be the spec's model, in the read-only input folder.
                raised, note = raise_opset(base, self.work / f"{base.stem}-opset13.onnx")
                if note:
                    self.warn(note)
                # The version converter adds nodes of its own, unnamed: an exclusion must never name "".
                raised, _, _ = _named_nodes(raised, self.work / f"{base.stem}-opset13-named.onnx")
            except OpsetRaiseFailed as exc:
                raised = exc
            self.per_channel_sources[base] = raised
        if isinstance(raised, OpsetRaiseFailed):
            raise raised
        return raised

    # -- measuring -----------------------------------------------------------------------------------------------

    def _accuracy(self, outputs: list[list[np.ndarray]]) -> Accuracy:
        accuracy = compare(
            self.reference, outputs, self.labels, names=self.names, counted=self.counted, tolerance=self.tolerance
        )
        if self.metric is not None and self.spec.metric is not None:
            score = usermetric.score(
                self.metric,
                self.spec.metric.function,
                self.reference_by_name,
                usermetric.by_name(self.names, outputs),
                self.labels,
            )
            accuracy = replace(accuracy, metric=score)
        return accuracy

    def _within(self, accuracy: Accuracy) -> bool:
        return accuracy.within(cosine=self.tolerance[0], top1_agreement=self.tolerance[1])

    def _gap(self, accuracy: Accuracy) -> float:
        """How far from the tolerance, in units of the loss it allows (0 when cosine and top-1 are within)."""
        cosine, top1 = self.tolerance
        gap = max(0.0, cosine - accuracy.cosine) / max(1.0 - cosine, 1e-6)
        if accuracy.top1_agreement is not None:
            gap += max(0.0, top1 - accuracy.top1_agreement) / max(1.0 - top1, 1e-6)
        return gap

    def better(self, new: Accuracy, old: Accuracy) -> bool:
        """``new`` is closer to the tolerance than ``old`` by enough to pay for what the change costs."""
        new_within, old_within = self._within(new), self._within(old)
        if new_within != old_within:
            return new_within
        new_gap, old_gap = self._gap(new), self._gap(old)
        if old_gap > 0:
            return new_gap < old_gap * (1.0 - MIN_GAIN)
        return not old_within and new.cosine > old.cosine + 1e-6

    def _time(self, session: Any) -> tuple[Latency | None, float | None, str | None]:
        """``session`` against fp32, their rounds alternating: (latency, speedup, why there is none)."""
        timing = self.spec.timing
        both = _latency(
            [self.fp32_session, session],
            self.feeds,
            warmup=timing.warmup,
            iterations=timing.iterations,
            rounds=timing.rounds,
        )
        fp32, latency = both
        if isinstance(latency, Exception):
            return None, None, f"could not be timed: {error_text(latency)}"
        if isinstance(fp32, Exception):
            return latency, None, f"fp32 could not be timed: {error_text(fp32)}"
        return latency, _speedup(fp32, latency), None

    # -- naive variants and the start ----------------------------------------------------------------------------

    def _naive(self) -> str:
        spec = self.spec
        static = [name for name in spec.candidates if RECIPES[name].kind == "static"]
        start = self.settings.start
        if start is not None and start not in static:
            static.append(start)
        if not static:
            raise TuneFailed(
                "the target has no static candidate to tune from (dynamic quantization has no "
                "calibrated points to put back into fp32)"
            )
        given = self.settings.candidate
        if given is not None and not self.timed:
            # Untimed, the given model's search starts from it: of the naive variants, only its own says anything
            # here (how far its plain int8 falls on this target), and each costs an evaluation under QEMU.
            static = [str(given["variant"])]
        naive: dict[str, _Naive] = {}
        for name in static:
            say(f"evaluating naive {name}")
            naive[name] = entry = _Naive(name=name)
            try:
                path = self._naive_model(name)
                self.naive_models[name] = path
                entry.session = open_session(path, target=spec.target, threads=spec.threads)
                entry.accuracy = self._accuracy(_run_all(entry.session, self.feeds))
                entry.within = self._within(entry.accuracy)
            except Exception as exc:  # one variant's failure must not end the others
                entry.error, entry.session = error_text(exc), None
            self.state["naive"][name] = entry.to_dict()
            self.save()
        ran = [n for n in naive.values() if n.session is not None]
        if self.timed:
            say(f"timing fp32 and {len(ran)} naive variants")
            timing = spec.timing
            latencies = _latency(
                [self.fp32_session, *(n.session for n in ran)],
                self.feeds,
                warmup=timing.warmup,
                iterations=timing.iterations,
                rounds=timing.rounds,
            )
            fp32 = latencies[0]
            if isinstance(fp32, Exception):
                raise TuneFailed(f"fp32 could not be timed: {error_text(fp32)}")
            self.fp32_latency = fp32
            self.state["fp32"]["latency_ms"] = fp32.to_dict()
            for entry, latency in zip(ran, latencies[1:], strict=True):
                if isinstance(latency, Exception):
                    entry.error = f"could not be timed: {error_text(latency)}"
                    continue
                entry.latency, entry.speedup = latency, _speedup(fp32, latency)
        for entry in naive.values():
            entry.session = None
            self.state["naive"][entry.name] = entry.to_dict()
        self.save()
        if start is None:
            start = self._pick_start([n for n in naive.values() if n.accuracy is not None])
        if start is None:
            failures = "; ".join(f"{n.name}: {n.error}" for n in naive.values())
            raise TuneFailed(f"no naive variant ran ({failures})")
        chosen = naive[start]
        say(
            f"start from {start}"
            + (f" ({_figures(chosen.accuracy, chosen.speedup)})" if chosen.accuracy is not None else "")
        )
        return start

    def _naive_model(self, name: str) -> Path:
        """prepare's artifact when there is one (no calibration here, which matters under QEMU), else made now."""
        artifacts = self.spec.artifacts
        if artifacts is not None and (artifacts / f"{name}.onnx").is_file():
            return artifacts / f"{name}.onnx"
        assert self.dataset is not None
        path = self.work / f"naive-{name}.onnx"
        config = QuantConfig.of(name, self.spec.calibration.method)
        quantize(name, self._source_for(config), path, dataset=self.dataset, calibration=self.spec.calibration)
        return path

    def _pick_start(self, ran: Sequence[_Naive]) -> str | None:
        """The most accurate variant that beats fp32 by the floor (when timed), else the most accurate."""
        if not ran:
            return None
        fast = [n for n in ran if n.speedup is not None and n.speedup >= self.settings.floor] if self.timed else []

        def key(n: _Naive) -> tuple[bool, float, float, float]:
            assert n.accuracy is not None
            return (n.within, -self._gap(n.accuracy), n.accuracy.cosine, n.speedup or 0.0)

        return max(fast or ran, key=key).name

    # -- trials --------------------------------------------------------------------------------------------------

    def _trial(
        self,
        change: str,
        config: QuantConfig,
        *,
        step: Step,
        point: int | None = None,
        added: Sequence[str] = (),
        weights: Sequence[str] = (),
        returned: Sequence[str] = (),
        kernel: KernelFinding | None = None,
        why: str | None = None,
    ) -> _Trial:
        """Make, measure and judge one model. A ``return`` trial (a change undone) is kept when the model stays
        within tolerance (and the floor); any other when it is closer to the tolerance than the current model (the
        start of a lane always is)."""
        spec = self.spec
        assert self.dataset is not None
        trial = _Trial(
            index=len(self.trials),
            lane=len(self.state["lanes"]) - 1,
            change=change,
            config=config,
            step=step,
            point=point,
            added=tuple(added),
            weights=tuple(weights),
            returned=tuple(returned),
            kernel=kernel,
            why=why,
        )
        began = time.monotonic()
        session = None
        try:
            trial.model = self._make(config, self.work / f"trial-{trial.index}.onnx", trial)
            session = open_session(trial.model, target=spec.target, threads=spec.threads)
            trial.accuracy = self._accuracy(_run_all(session, self.feeds))
        except Exception as exc:  # this trial's failure (the quantizer's, the runtime's, NaN outputs), not the search's
            trial.error = error_text(exc)
            trial.note = "failed"
        if trial.accuracy is not None and not trial.int8:
            trial.within = self._within(trial.accuracy)
            # A start that quantized nothing says why (every node inside If bodies, none int8 kernels exist for).
            why = NodeCount.from_dict(trial.nodes).not_quantized() if step == "start" and trial.nodes else None
            trial.note = (
                f"undone: {why}"
                if why
                else "undone: it leaves no quantizable node in int8, so it is fp32 under another name"
            )
        elif trial.accuracy is not None:
            trial.within = self._within(trial.accuracy)
            current = self.current
            if step == "return":
                improves = trial.within
            else:
                improves = current is None or (
                    current.accuracy is not None and self.better(trial.accuracy, current.accuracy)
                )
            if improves or trial.within or step == "fuse":
                # Only a model that may be kept (or that meets the tolerance) is worth its timing runs; a fusion is
                # also kept for its speed alone.
                if self.timed:
                    trial.latency, trial.speedup, problem = self._time(session)
                    if problem:
                        self.warn(f"trial {trial.index} {problem}")
                if step == "fuse" and not improves and current is not None:
                    improves = self._as_good_and_faster(trial, current)
                trial.kept = improves
                if current is not None and self.timed and improves and (trial.speedup or 0.0) < self.settings.floor:
                    trial.kept = False
                    trial.note = f"undone: {_speed(trial.speedup)} is below the floor {self.settings.floor:g}x"
                elif not improves:
                    trial.note = "undone: no closer to the tolerance than the current model"
            else:
                trial.note = (
                    "undone: out of tolerance without it"
                    if step == "return"
                    else "undone: no closer to the tolerance than the current model"
                )
        trial.seconds = time.monotonic() - began
        self.trials.append(trial)
        if trial.kept:
            self.current = trial
        self._drop_models()
        self.save()
        verdict = "kept" if trial.kept else (trial.note or "undone")
        figures = trial.error if trial.accuracy is None else _figures(trial.accuracy, trial.speedup)
        say(f"trial {trial.index}: {change} -> {figures}, {verdict}")
        return trial

    def _as_good_and_faster(self, trial: _Trial, current: _Trial) -> bool:
        """No farther from the tolerance than ``current`` (within if it was), and faster beyond noise (untimed: a
        rewrite that only removes quantization points is taken at its word)."""
        if trial.accuracy is None or current.accuracy is None or (current.within and not trial.within):
            return False
        if self._gap(trial.accuracy) > self._gap(current.accuracy) * (1.0 + MIN_GAIN) + 1e-9:
            return False
        if not self.timed:
            return True
        return (
            trial.speedup is not None
            and current.speedup is not None
            and trial.speedup > current.speedup * (1.0 + NOISE_FLOOR)
        )

    def _make(self, config: QuantConfig, path: Path, trial: _Trial | None = None) -> Path:
        assert self.dataset is not None
        record = quantize(
            config.variant,
            self._source_for(config),
            path,
            dataset=self.dataset,
            calibration=Calibration(method=config.method, samples=self.spec.calibration.samples),
            exclude=config.exclude,
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            seven_bit=config.seven_bit,
        )
        if config.fused:
            record["fused"] = [f"{', '.join(f.replaced)} -> {f.kind} {f.node}" for f in self.fusions]
        if trial is not None:
            trial.record = record
            nodes = record.get("nodes")
            trial.nodes = dict(nodes) if isinstance(nodes, dict) else None
        return path

    def _drop_models(self) -> None:
        """Keep on disk only the current model and the best candidate so far; a search can run for hundreds."""
        keep = {t.index for t in (self.current, self._best()) if t is not None}
        for trial in self.trials:
            if trial.model is not None and trial.index not in keep:
                trial.model.unlink(missing_ok=True)
                trial.model.with_name(trial.model.name + ".data").unlink(missing_ok=True)
                trial.model = None

    # -- the search ----------------------------------------------------------------------------------------------

    def _search(self, start: str) -> str:
        """Run the lanes; returns why the search stopped.

        A lane is a search from one start. The first starts from the native search's tuned model when an emulated
        target is given one (it checks it here and returns to int8 what this target does not need in fp32), else
        from ``start``. On a timed target, once a model is within tolerance, each naive variant that ran faster
        than it gets a lane of its own: u8s8 with one node kept in fp32 can beat u8u8 with none, since u8u8's kernels
        run at about half of u8s8's speed on x86.
        """
        given = self.settings.candidate
        if given is not None:
            first = QuantConfig.from_dict(given)
            origin = str(given.get("target") or "the native search")
            self.given_changes = _covering(first, [dict(c) for c in given.get("changes", ())], origin)
            label = f"start: {origin}'s tuned model ({first.variant}, {_kept_text(first)}), checked on this target"
        else:
            first, label = QuantConfig.of(start, self.spec.calibration.method), f"start: {start}"
            plain = _without_reduce_range(start)
            if self.spec.target.saturation_risk and plain is not None:
                # 7-bit weights everywhere is the blanket remedy for saturation; the kernel check finds the nodes
                # that need it, so the search starts from the family's 8-bit recipe.
                first = QuantConfig.of(plain, self.spec.calibration.method)
                label = f"start: {plain} ({start} without reduce_range: the kernel check finds the nodes that saturate)"
        reasons = [self._lane(first, label)]
        while self.timed:
            rival = self._best_acceptable()
            found = self._faster_start(rival)
            if found is None:
                break
            if (spent := self.budget_spent()) is not None:
                reasons.append(spent)
                break
            faster, speed, against = found
            recipe = RECIPES[faster]
            if rival is None:
                config = QuantConfig.of(faster, self.spec.calibration.method)
                label = (
                    f"start: {faster} (its kernels ran {speed:.2f}x fp32 naive, against {against:.2f}x for "
                    f"{self.state['lanes'][-1]['variant']}, whose lane found nothing within tolerance)"
                )
            else:
                # What made the rival accurate (its calibration, per-channel weights, the nodes it keeps in fp32)
                # is carried over: those reasons do not depend on the kernels.
                config = replace(
                    rival.config,
                    variant=faster,
                    reduce_range=recipe.reduce_range,
                    per_channel=rival.config.per_channel or recipe.per_channel,
                    seven_bit=rival.config.seven_bit if recipe.weight == "int8" else (),
                )
                label = (
                    f"start: {faster} with trial {rival.index}'s settings ({_kept_text(config)}): its kernels "
                    f"ran {speed:.2f}x fp32 naive, against {against:.2f}x for {rival.config.variant}'s"
                )
            reasons.append(self._lane(config, label, rival=rival))
        return "; ".join(dict.fromkeys(reasons))

    def _faster_start(self, rival: _Trial | None) -> tuple[str, float, float] | None:
        """The start of the next lane, with its family's naive speed and the reference's: the plain recipe (no
        reduce_range, no per-channel: those are knobs) of the
        fastest kernel family not searched yet, when it ran faster by more than noise than the rival's family (kept
        out of int8 where the rival is, it may beat it: more in fp32 only makes a model slower), or with no rival
        yet, than the last lane's. A family is an activation and weight type: its variants run the same kernels."""
        speeds: dict[tuple[str, str], float] = {}
        members: dict[tuple[str, str], list[str]] = {}
        for name, entry in self.state["naive"].items():
            if entry.get("accuracy") is None or entry.get("speedup") is None:
                continue
            family = _family(name)
            speeds[family] = max(speeds.get(family, 0.0), float(entry["speedup"]))
            members.setdefault(family, []).append(name)
        reference = _family(rival.config.variant if rival is not None else self.state["lanes"][-1]["variant"])
        if reference not in speeds:
            return None
        bar = max(speeds[reference], self.settings.floor) * (1.0 + FASTER_BY)
        searched = {_family(lane["variant"]) for lane in self.state["lanes"]}
        faster = [(speed, family) for family, speed in speeds.items() if family not in searched and speed > bar]
        if not faster:
            return None
        speed, family = max(faster)
        plain = min(members[family], key=lambda n: (RECIPES[n].reduce_range, RECIPES[n].per_channel, n))
        return plain, speed, speeds[reference]

    def _lane(self, config: QuantConfig, label: str, *, rival: _Trial | None = None) -> str:
        """One lane: its start, then (out of tolerance) the kernels, the knobs and the ranked points, then (within)
        the changes this target does not need returned to int8. Returns why it stopped."""
        self.current = None
        lane: dict[str, Any] = {
            "variant": config.variant,
            "start_trial": len(self.trials),
            "from_trial": None if rival is None else rival.index,
            "stopped": None,
        }
        self.state["lanes"].append(lane)
        first = self._trial(label, config, step="start")
        name = config.variant
        if first.accuracy is None:
            stopped = f"{name}: the start could not be made or run ({first.error})"
        elif not first.kept:
            stopped = f"{name}: the start was {first.note}"
        elif self.timed and (first.speedup is None or first.speedup < self.settings.floor):
            stopped = (
                f"{name}: the start is {_speed(first.speedup)} fp32's speed, below the floor "
                f"{self.settings.floor:g}x, and keeping nodes in fp32 only makes it slower"
            )
        else:
            stopped = self._repair(rival) if not first.within else f"{name}: trial {first.index} is within tolerance"
            if self._done():
                stopped = self._return_to_int8() or stopped
                # Within tolerance, fusing is for speed: kept while it stays within and runs faster.
                self._fuse()
        lane["stopped"] = stopped
        self.save()
        return stopped

    def _lane_over(self, rival: _Trial | None) -> str | None:
        """Why the lane cannot go on, if it cannot: within tolerance, the budget, or no longer able to beat its
        rival (every further change keeps more in fp32, which only makes it slower)."""
        assert self.current is not None
        if self._done():
            return f"{self.current.config.variant}: trial {self.current.index} is within tolerance"
        if (spent := self.budget_spent()) is not None:
            return spent
        if (
            rival is not None
            and self.current.speedup is not None
            and rival.speedup is not None
            and self.current.speedup <= rival.speedup
        ):
            return (
                f"{self.current.config.variant}: trial {self.current.index} is no faster than trial "
                f"{rival.index}'s {_speed(rival.speedup)}"
            )
        return None

    def _repair(self, rival: _Trial | None) -> str:
        """Out of tolerance: the nodes whose kernels lose accuracy here first (7-bit weights where they saturate,
        else fp32), then the cheap knobs, then the ranked points."""
        assert self.current is not None
        if (spent := self.budget_spent()) is not None:
            return spent
        findings = self._kernels(self.current)
        lossy = [f for f in findings if f.lossy]
        if (over := self._lane_over(rival)) is not None:
            return over
        group, covered = self._seven_bit_for_all(lossy)
        idle = 1 if group is not None and not group.kept else 0
        for finding in lossy:
            if (over := self._lane_over(rival)) is not None:
                return over
            if idle >= MAX_IDLE_TRIALS:
                # The metric did not move: something else (often the output's own quantization) decides it, and
                # the ranking finds that; each lossy node tried alone would spend the budget first.
                say(f"{idle} kernel remedies in a row did not help; on to the knobs and the ranking")
                break
            base = self.current.config
            if finding.node in base.exclude or finding.node in covered:
                continue
            tried = len(self.trials)
            why = finding.describe()
            if self._seven_bit_fits(finding, base) and finding.weight:
                seven = self._trial(
                    f"7-bit weights for {finding.node} ({finding.weight}): {finding.brief()}",
                    replace(base, seven_bit=(*base.seven_bit, finding.weight)),
                    step="kernel",
                    weights=(finding.weight,),
                    kernel=finding,
                    why=f"{why}; 7-bit weights keep its pair sums within int16",
                )
                if seven.within or (over := self._lane_over(rival)) is not None:
                    idle = 0 if seven.kept else idle + 1
                    continue
            # fp32 from the same base, measured against the 7-bit try when that was kept: the closer one stays.
            self._trial(
                f"keep {finding.node} in fp32: {finding.brief()}",
                replace(base, exclude=(*base.exclude, finding.node)),
                step="kernel",
                added=(finding.node,),
                kernel=finding,
                why=self._fp32_why(finding),
            )
            idle = 0 if any(t.kept for t in self.trials[tried:]) else idle + len(self.trials) - tried
        # A later lane carries the first lane's settings: the knobs were tried there.
        if rival is None and (over := self._fuse()) is not None:
            return over
        for change, vary in self._knobs(checked=bool(findings)) if rival is None else []:
            if (over := self._lane_over(rival)) is not None:
                return over
            assert self.current is not None
            self._trial(change, vary(self.current.config), step="knob")
        if (over := self._lane_over(rival)) is not None:
            return over
        ranked = self._ranking()
        if ranked is not None:
            return ranked
        idle = 0
        for index, point in enumerate(self.points):
            if (over := self._lane_over(rival)) is not None:
                return over
            assert self.current is not None
            nodes = self._named_in([str(n) for n in point.get("nodes", ())], fused=self.current.config.fused)
            added = [n for n in nodes if n not in self.current.config.exclude]
            if not added:
                continue
            config = replace(self.current.config, exclude=(*self.current.config.exclude, *added))
            tensor = point.get("tensor", "?")
            sqnr = point.get("sqnr_db")
            figure = f" ({sqnr:.1f} dB)" if isinstance(sqnr, int | float) else ""
            trial = self._trial(
                f"exclude the region of {tensor}{figure}: {', '.join(added)}",
                config,
                step="point",
                point=index,
                added=added,
                why=f"quantizing {tensor} alone keeps {figure.strip(' ()') or 'an unmeasured'} SQNR",
            )
            idle = 0 if trial.kept else idle + 1
            if idle >= MAX_IDLE_TRIALS and not self._done():
                return f"{MAX_IDLE_TRIALS} trials in a row did not help"
        return self._lane_over(rival) or "every ranked point was tried"

    @staticmethod
    def _seven_bit_fits(finding: KernelFinding, config: QuantConfig) -> bool:
        """7-bit weights are the remedy for ``finding`` in ``config``: it saturates, its int8 weights are not 7-bit
        yet."""
        return bool(
            finding.saturates
            and finding.weight
            and RECIPES[config.variant].weight == "int8"
            and finding.weight not in config.seven_bit
            and not config.reduce_range
        )

    def _seven_bit_for_all(self, lossy: Sequence[KernelFinding]) -> tuple[_Trial | None, set[str]]:
        """Where several nodes saturate, one trial first: 7-bit weights for all of them (onnxruntime's advice for x86
        without VNNI is reduce_range, 7-bit weights everywhere; this keeps the others at 8 bits), rather than a
        trial or two per node. Returns the trial (None where fewer than two saturate) and the nodes it remedied
        (none unless it was kept)."""
        assert self.current is not None
        base = self.current.config
        saturating = [f for f in lossy if f.node not in base.exclude and self._seven_bit_fits(f, base)]
        if len(saturating) < 2:
            return None, set()
        weights = tuple(dict.fromkeys(str(f.weight) for f in saturating))
        names = ", ".join(f.node for f in saturating[:4]) + (", ..." if len(saturating) > 4 else "")
        # The worst node stands for the group where one node is named (the change's kernel_node).
        trial = self._trial(
            f"7-bit weights for the {len(saturating)} nodes that saturate here ({names})",
            replace(base, seven_bit=(*base.seven_bit, *weights)),
            step="kernel",
            weights=weights,
            kernel=saturating[0],
            why=f"the int16 pair sums of {len(saturating)} nodes' int8 kernels saturate on this "
            f"target ({names}; worst: {saturating[0].brief()}); 7-bit weights keep them within "
            "int16",
        )
        return trial, {f.node for f in saturating} if trial.kept else set()

    def _fp32_why(self, finding: KernelFinding) -> str:
        seven = next((t for t in reversed(self.trials) if t.kernel is finding and t.weights), None)
        text = finding.describe()
        if seven is not None and seven.accuracy is not None:
            text += f"; 7-bit weights for it (trial {seven.index}) left {_figures(seven.accuracy, None)}"
        return text

    def _kernels(self, start: _Trial) -> list[KernelFinding]:
        """The kernel check of the lane's start, measured here once per variant (farm.job.kernels)."""
        config = start.config
        known = self.kernels.get(config.variant)
        if known is not None:
            return known
        if self.spec.target.wants_accelerator:
            # An accelerator's int8 runs are its own, not MLAS's; a session per node there costs more than it tells.
            self.warn("the kernel check measures CPU int8 kernels; it does not run on accelerator targets")
            self.kernels[config.variant] = []
            return []
        say(f"checking the int8 kernels of {config.variant} node by node")
        try:
            plain = replace(config, exclude=(), seven_bit=())
            if plain == config and start.model is not None:
                model = start.model
            elif (
                plain == QuantConfig.of(config.variant, self.spec.calibration.method)
                and config.variant in self.naive_models
            ):
                model = self.naive_models[config.variant]
            else:
                # The start keeps some nodes out of int8; the check needs them in.
                model = self._make(plain, self.work / f"plain-{config.variant}.onnx")
            findings = check_kernels(
                self._source_for(config),
                model,
                self.feeds,
                target=self.spec.target,
                threads=self.spec.threads,
                work=self.work,
            )
        except Exception as exc:  # a model the check cannot cut apart: the search goes on without it
            self.warn(f"the kernel check of {config.variant} failed: {error_text(exc)}")
            findings = []
        self.kernels[config.variant] = findings
        self.state["kernels"] += [{"variant": config.variant, **f.to_dict()} for f in findings]
        lossy = [f for f in findings if f.lossy]
        if lossy:
            say(
                f"{len(lossy)} node(s) lose accuracy in this target's int8 kernels: "
                + ", ".join(f"{f.node} ({f.kernel_db:.1f} dB)" for f in lossy[:6])
            )
        self.save()
        return findings

    def _fuse(self) -> str | None:
        """The exporter patterns fused (farm.job.fuse), when the model has any and the current one does not fuse
        them: kept when closer to the tolerance, or as close and faster. Returns why the lane ends, if it does."""
        assert self.current is not None
        if not self.fusions or self.current.config.fused:
            return None
        if (spent := self.budget_spent()) is not None:
            return spent
        renamed = self._renamed()
        config = self.current.config
        fused = replace(config, fused=True, exclude=tuple(dict.fromkeys(renamed.get(n, n) for n in config.exclude)))
        self._trial(
            f"fuse exporter patterns ({_fusion_text(self.fusions)}): fewer quantization points",
            fused,
            step="fuse",
            why=f"fused {_fusion_text(self.fusions)} into single nodes",
        )
        return None

    def _renamed(self) -> dict[str, str]:
        """Each node a fusion replaced, and the node that replaced it."""
        return {name: f.node for f in self.fusions for name in f.replaced}

    def _named_in(self, nodes: Sequence[str], *, fused: bool) -> list[str]:
        """``nodes`` (a ranked region, measured with or without the fusion) as the fused or the plain source names
        them: a fused node stands for the nodes it replaced, and they for it."""
        if fused:
            renamed = self._renamed()
            return list(dict.fromkeys(renamed.get(n, n) for n in nodes))
        replaced = {f.node: f.replaced for f in self.fusions}
        return list(dict.fromkeys(m for n in nodes for m in replaced.get(n, (n,))))

    def _knobs(self, *, checked: bool) -> list[tuple[str, Any]]:
        """The cheap changes known to matter, each a function of the current config. 7-bit weights everywhere
        (reduce_range) only when the kernel check could not run: where it ran, it found the nodes that saturate,
        and 7-bit weights for those alone cost less accuracy."""
        knobs: list[tuple[str, Any]] = []
        for method in CALIBRATION_METHODS:
            if method != self.spec.calibration.method:
                knobs.append((f"calibration {method}", lambda c, m=method: replace(c, method=m)))
        assert self.current is not None
        if not self.current.config.per_channel:
            knobs.append(("per-channel weights", lambda c: replace(c, per_channel=True)))
        if self.spec.target.saturation_risk and not self.current.config.reduce_range and not checked:
            knobs.append(("reduce_range (7-bit weights)", lambda c: replace(c, reduce_range=True)))
        return knobs

    def _return_to_int8(self) -> str | None:
        """Within tolerance: each change the current model keeps (a region in fp32, 7-bit weights) undone alone,
        kept undone while the model stays within tolerance. Those whose reason does not hold on this target go
        first: a node kept in fp32 for its kernel where its kernel is exact here, then the rest, latest first."""
        assert self.current is not None
        changes = self._changes(self.current)
        if any(c.get("kernel_node") for c in changes):
            self._kernels(self.current)  # what this target's kernels do at those nodes decides the order, and why

        def order(change: dict[str, Any]) -> tuple[bool, int]:
            finding = self._finding(change.get("kernel_node"))
            return (not (finding is not None and not finding.lossy), -int(change.get("trial") or 0))

        stopped = None
        for change in sorted(changes, key=order):
            if (spent := self.budget_spent()) is not None:
                return spent
            config = self.current.config
            nodes = [n for n in change.get("nodes", ()) if n in config.exclude]
            weights = [w for w in change.get("seven_bit", ()) if w in config.seven_bit]
            if not nodes and not weights:
                continue
            finding = self._finding(change.get("kernel_node"))
            here = f" ({finding.brief()})" if finding is not None else ""
            what = (
                ", ".join(nodes)
                + (" in int8" if nodes else "")
                + (f"{'; ' if nodes else ''}8-bit weights for {', '.join(weights)}" if weights else "")
            )
            trial = self._trial(
                f"return to {what}{here}",
                replace(
                    config,
                    exclude=tuple(n for n in config.exclude if n not in nodes),
                    seven_bit=tuple(w for w in config.seven_bit if w not in weights),
                ),
                step="return",
                returned=(*nodes, *weights),
                kernel=finding,
                why="within tolerance without it" + (f": {finding.describe()}" if finding is not None else ""),
            )
            if trial.kept:
                stopped = f"{config.variant}: trial {trial.index} is within tolerance with less kept out of int8"
        return stopped

    def _finding(self, node: Any) -> KernelFinding | None:
        """The current lane's kernel finding at ``node``, if measured."""
        if not isinstance(node, str) or self.current is None:
            return None
        return next((f for f in self.kernels.get(self.current.config.variant, []) if f.node == node), None)

    def _changes(self, trial: _Trial) -> list[dict[str, Any]]:
        """What ``trial``'s model keeps out of plain int8, one entry per change: the nodes a kept trial (or the given
        model, or the trial a lane took its settings from) put in fp32 or the weights it made 7-bit, why, and which
        trial did it."""
        exclude, seven = set(trial.config.exclude), set(trial.config.seven_bit)
        # A node that a fusion replaced is kept in fp32 as the fused node.
        renamed = self._renamed() if trial.config.fused else {}
        lane = self.state["lanes"][trial.lane]
        if lane.get("from_trial") is not None:
            inherited = self._changes(self.trials[lane["from_trial"]])
        elif trial.lane == 0:
            origin = self.settings.candidate.get("target") if self.settings.candidate else None
            inherited = [{**c, "trial": lane["start_trial"], "from": origin} for c in self.given_changes]
        else:
            inherited = []
        entries = []
        for change in inherited:
            nodes = list(
                dict.fromkeys(renamed.get(n, n) for n in change.get("nodes", ()) if renamed.get(n, n) in exclude)
            )
            weights = [w for w in change.get("seven_bit", ()) if w in seven]
            if nodes or weights:
                entries.append({**change, "nodes": nodes, "seven_bit": weights})
        for earlier in self.trials[: trial.index + 1]:
            if earlier.lane != trial.lane or earlier.step in ("start", "return"):
                continue
            if not (earlier.kept or earlier is trial):
                continue
            nodes = list(dict.fromkeys(renamed.get(n, n) for n in earlier.added if renamed.get(n, n) in exclude))
            weights = [w for w in earlier.weights if w in seven]
            if not nodes and not weights:
                continue
            point = self.points[earlier.point] if earlier.point is not None and earlier.point < len(self.points) else {}
            entries.append(
                {
                    "trial": earlier.index,
                    "kind": "fp32" if nodes else "7-bit",
                    "nodes": nodes,
                    "seven_bit": weights,
                    "cause": "kernel" if earlier.kernel is not None else "sqnr",
                    "kernel_node": earlier.kernel.node if earlier.kernel is not None else None,
                    "tensor": point.get("tensor"),
                    "tensors": point.get("tensors", [point.get("tensor")]) if point else [],
                    "sqnr_db": point.get("sqnr_db"),
                    "why": earlier.why,
                }
            )
        return entries

    def _done(self) -> bool:
        return self.current is not None and self.current.within

    def _ranking(self) -> str | None:
        """Fill ``points`` from the spec or by measuring, once; returns why the search cannot go on, if it cannot."""
        if self.state["ranking_source"] is not None:
            return None if self.points else "no quantization point to put back into fp32"
        given = self.settings.ranking
        if given is not None:
            self.points = [dict(p) for p in given]
            self.state["ranking_source"] = "given"
            try:
                # The model this config quantizes: raised for per-channel weights, it has the converter's nodes.
                named = self._source_for(self.current.config) if self.current is not None else self.source
            except OpsetRaiseFailed:
                named = self.source
            known = {n.name for n in onnx.load(str(named), load_external_data=False).graph.node}
            known |= {f.node for f in self.fusions}
            missing = sorted({str(n) for p in self.points for n in p.get("nodes", ()) if n not in known})
            if missing:
                self.warn(f"the given ranking names nodes this model lacks: {', '.join(missing[:10])}")
        else:
            assert self.current is not None
            say("ranking the quantization points by SQNR")
            samples = self.feeds[: self.spec.calibration.samples]
            try:
                # The points of the current settings, every one of them quantized (the current model may keep some
                # in fp32 already).
                current = self.current
                plain = replace(current.config, exclude=(), seven_bit=())
                model = (
                    current.model
                    if current.model is not None and current.config == plain
                    else self._make(plain, self.work / "ranked.onnx")
                )
                self.points = rank_points(
                    self._source_for(plain), model, samples, threads=self.spec.threads, work=self.work
                )
            except Exception as exc:  # a graph the augmented run cannot take: the search ends with what it has
                self.warn(f"ranking the quantization points failed: {error_text(exc)}")
                self.state["ranking_source"] = "failed"
                self.save()
                return f"the quantization points could not be ranked ({error_text(exc)})"
            self.state["ranking_source"] = "measured"
        self.state["ranking"] = self.points
        self.save()
        if self.points:
            worst = self.points[0]
            say(
                f"{len(self.points)} points ranked; worst {worst.get('tensor')} "
                f"({worst.get('sqnr_db')} dB): {', '.join(map(str, worst.get('nodes', ())))}"
            )
        return None if self.points else "no quantization point to put back into fp32"

    # -- the verdict ---------------------------------------------------------------------------------------------

    def _acceptable(self, trial: _Trial) -> bool:
        if trial.accuracy is None or not trial.within:
            return False
        return not self.timed or (trial.speedup is not None and trial.speedup >= self.settings.floor)

    def _best_acceptable(self) -> _Trial | None:
        best = self._best()
        return best if best is not None and self._acceptable(best) else None

    def _best(self) -> _Trial | None:
        """The tuned model when one is acceptable (the fastest, or untimed the one keeping least out of int8);
        else the best trade-off: the fastest within tolerance, else the most accurate that beats the floor, else
        the most accurate."""
        measured = [t for t in self.trials if t.accuracy is not None and t.int8]
        if not measured:
            return None
        # Kept trials only: an acceptable trial is undone only when the model was within tolerance already and it
        # was no faster beyond noise (a fusion tried for speed), and then its own figure must not decide.
        good = [t for t in measured if self._acceptable(t) and t.kept]
        if good:
            if self.timed:
                return max(good, key=lambda t: t.speedup or 0.0)
            # Untimed, the fewest nodes out of int8, then the fewest quantization points, then accuracy.
            return min(
                good,
                key=lambda t: (
                    len(t.config.exclude),
                    len(t.config.seven_bit),
                    not t.config.fused,
                    -self._cosine(t),
                    t.index,
                ),
            )
        within = [t for t in measured if t.within and t.speedup is not None]
        if within:
            return max(within, key=lambda t: t.speedup or 0.0)
        fast = [t for t in measured if not self.timed or (t.speedup or 0.0) >= self.settings.floor]
        return min(fast or measured, key=lambda t: (self._rank_key(t), t.index))

    def _cosine(self, trial: _Trial) -> float:
        return trial.accuracy.cosine if trial.accuracy is not None else -2.0

    def _rank_key(self, trial: _Trial) -> tuple[bool, float, float]:
        assert trial.accuracy is not None
        return (not trial.within, self._gap(trial.accuracy), -trial.accuracy.cosine)

    def _verdict(self, stopped: str) -> None:
        best = self._best()
        floor = self.settings.floor
        if best is None:
            reason = f"no trial produced a model to compare ({stopped})"
            counted = [NodeCount.from_dict(t.nodes) for t in self.trials if t.nodes]
            if counted and all(c.quantizable and c.quantizable_in_subgraphs == c.quantizable for c in counted):
                reason += (
                    "; this search makes static QDQ models, which leave If/Loop/Scan bodies in fp32: "
                    f"dynamic quantization enters them (`farm matrix` adds {SUBGRAPH_VARIANT} beside "
                    "u8s8-dynamic)"
                )
            self.state.update(verdict="keep-fp32", reason=reason)
            say(f"keep fp32: {self.state['reason']}")
            return
        assert best.accuracy is not None
        if best.int8 and best.config.variant not in self.kernels:
            # Where the start was within tolerance nothing needed the check; the report still says, per node, what
            # this target's kernels do (the differences between targets rest on it).
            self.current = best
            self._kernels(best)
        changes = self._changes(best)
        self.state["best"] = {
            "trial": best.index,
            "variant": best.config.variant,
            "exclude": list(best.config.exclude),
            "seven_bit": list(best.config.seven_bit),
            "fused": best.config.fused,
            "calibration": best.config.method,
            "per_channel": best.config.per_channel,
            "reduce_range": best.config.reduce_range,
            "accuracy": best.accuracy.to_dict(),
            "within_tolerance": best.within,
            "latency_ms": None if best.latency is None else best.latency.to_dict(),
            "speedup": None if best.speedup is None else round(best.speedup, 4),
            "changes": changes,
            "quantization": best.record,
        }
        self.state["excluded"] = [c for c in changes if c["nodes"]]
        self.state["seven_bit"] = [c for c in changes if c["seven_bit"]]
        self.state["returned"] = self._returned(best)
        figures = _figures(best.accuracy, best.speedup)
        kept = _kept_text(best.config)
        if self._acceptable(best):
            speed = (
                f"{_speed(best.speedup)} fp32's speed (floor {floor:g}x)"
                if self.timed
                else "not timed (emulated target: accuracy only)"
            )
            reason = f"trial {best.index} ({best.config.variant}, {kept}) is within tolerance: {figures}; {speed}"
            self._write_tuned(best)
            self.state.update(verdict="tuned", reason=reason, tuned_model=TUNED_MODEL)
            say(f"tuned: {reason}")
            return
        claim = (
            f"nothing within tolerance beats fp32 by {floor:g}x"
            if self.timed
            else "no int8 model within tolerance was found"
        )
        reason = f"{claim} ({stopped}); best trade-off: trial {best.index} ({best.config.variant}, {kept}): {figures}"
        self.state.update(verdict="keep-fp32", reason=reason)
        say(f"keep fp32: {reason}")

    def _returned(self, best: _Trial) -> list[dict[str, Any]]:
        """What the given model (or an earlier trial of ``best``'s lineage) kept out of int8 and ``best`` runs in int8
        again, and why."""
        lanes, lane = set(), best.lane
        while True:
            lanes.add(lane)
            origin = self.state["lanes"][lane].get("from_trial")
            if origin is None:
                break
            lane = self.trials[origin].lane
        kept_out = {*best.config.exclude, *best.config.seven_bit}
        entries = []
        for trial in self.trials[: best.index + 1]:
            returned = [name for name in trial.returned if name not in kept_out]
            if trial.step == "return" and trial.kept and trial.lane in lanes and returned:
                entries.append(
                    {
                        "trial": trial.index,
                        "returned": returned,
                        "kernel": None if trial.kernel is None else trial.kernel.to_dict(),
                        "why": trial.why,
                    }
                )
        return entries

    def _write_tuned(self, best: _Trial) -> None:
        if best.model is None or not best.model.is_file():
            raise TuneFailed(f"the tuned model of trial {best.index} is gone from {self.work}")
        copy_model(best.model, self.out / TUNED_MODEL)


def _named_nodes(path: Path, destination: Path) -> tuple[Path, onnx.ModelProto, bool]:
    """The model at ``path`` with every node named (``_name_nodes``): ``path`` itself, or where some node was not
    named, its copy at ``destination``; with the model loaded (weights and all) and whether they are external."""
    model = onnx.load(str(path), load_external_data=False)
    external = keeps_external_data(model)
    if external:
        model = onnx.load(str(path))
    if _name_nodes(model):
        path = save_model(model, destination, external=external)
    return path, model, external


def _name_nodes(model: onnx.ModelProto) -> bool:
    """Give every unnamed (or twice-named) node of the main graph a unique, deterministic name; True if any
    changed. The native search and an emulated one name the same nodes alike, so a ranking travels between them."""
    taken = {n.name for n in model.graph.node if n.name}
    seen: set[str] = set()
    changed = False
    for index, node in enumerate(model.graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = f"{node.name or node.op_type}_{index}"
        name, suffix = base, 0
        while name in taken or name in seen:
            suffix += 1
            name = f"{base}_{suffix}"
        node.name = name
        seen.add(name)
        taken.add(name)
        changed = True
    return changed


def _speedup(fp32: Latency, variant: Latency) -> float | None:
    return fp32.p50 / variant.p50 if variant.p50 > 0 else None


def _speed(speedup: float | None) -> str:
    return "untimed" if speedup is None else f"{speedup:.2f}x"


def _figures(accuracy: Accuracy | None, speedup: float | None) -> str:
    if accuracy is None:
        return "no figures"
    text = f"cosine {accuracy.cosine:.4f}"
    if accuracy.top1_agreement is not None:
        text += f", top-1 {accuracy.top1_agreement:.3f}"
    if accuracy.metric is not None:
        text += f", metric {'passed' if accuracy.metric.passed else 'failed'}"
    return text + ("" if speedup is None else f", {speedup:.2f}x")


def run_tune(spec: Spec, out: Path) -> None:
    """Run the search for ``spec``'s target and write ``out``/tune.json (and ``out``/tuned.onnx when tuned)."""
    _Tuner(spec, out).run()
