"""The record of a search: the configs it makes, its trials, and tune.json (``farm.tune/1``) as it stands.

tune.json is rewritten atomically after every trial, so an interrupted search keeps its log (``status`` says
"running" until the end).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.job.codec import encode
from farm.job.kernels import KernelFinding
from farm.job.result import write_json_atomic
from farm.job.spec import TUNE_FILE, Spec, Tune
from farm.job.tune import progress
from farm.job.tunecontract import CalibrationMethod, Candidate, Point, Step, TrialEntry
from farm.job.types import Accuracy, Latency
from farm.job.variants import RECIPES

SCHEMA = "farm.tune/1"


class TuneFailed(RuntimeError):
    """The search cannot run at all (no data, fp32 does not run, no static candidate): tune.json says why."""


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
    def given(cls, candidate: Candidate) -> QuantConfig:
        """The config of the spec's ``tune.candidate`` (another search's tune.json ``best``)."""
        return cls(
            variant=candidate.variant,
            method=candidate.calibration,
            per_channel=candidate.per_channel,
            reduce_range=candidate.reduce_range,
            exclude=candidate.exclude,
            seven_bit=candidate.seven_bit,
            fused=candidate.fused,
        )


@dataclass(kw_only=True, slots=True)
class Trial:
    """One model the search made, measured and judged (filled in as the trial runs, then left alone)."""

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
    # What the model quantized (farm.job.types.NodeCount, encoded); a model with none left quantized is not int8.
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

    def entry(self) -> TrialEntry:
        """The trial as tune.json's ``trials`` lists it."""
        config = self.config
        return TrialEntry(
            index=self.index,
            change=self.change,
            lane=self.lane,
            step=self.step,
            point=self.point,
            added=self.added,
            added_seven_bit=self.weights,
            returned=self.returned,
            exclude=config.exclude,
            seven_bit=config.seven_bit,
            fused=config.fused,
            variant=config.variant,
            calibration=config.method,
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            nodes=self.nodes,
            accuracy=self.accuracy,
            latency_ms=self.latency,
            speedup=None if self.speedup is None else round(self.speedup, 4),
            within_tolerance=self.within,
            kept=self.kept,
            note=self.note,
            why=self.why,
            error=self.error,
            seconds=round(self.seconds, 3),
        )


def _initial_state(spec: Spec, settings: Tune, timed: bool) -> dict[str, Any]:
    """tune.json before the search has done anything: the keys in the order the file lists them."""
    return {
        "schema": SCHEMA,
        "status": "running",
        "error": None,
        "target": spec.target.name,
        "mode": spec.target.mode,
        "timed": timed,
        "floor": settings.floor,
        "tolerance": {"cosine": spec.tolerance.cosine, "top1_agreement": spec.tolerance.top1_agreement},
        "budget": {"seconds": settings.budget_s, "trials": settings.budget_trials},
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


class Record:
    """tune.json as it stands (``state``) and the trials so far, for one target's search; ``save`` rewrites the
    file. The search steps append to it; nothing else of theirs outlives a step but the lane's current model."""

    def __init__(self, spec: Spec, out: Path, settings: Tune) -> None:
        self.out, self.settings = out, settings
        self.began = time.monotonic()
        self.trials: list[Trial] = []
        # The ranked quantization points (tune.json's ``ranking``), empty until the ranking ran.
        self.points: list[Point] = []
        # The rest of tune.json as it stands (checked against farm/job/tune/schema.json by the tests).
        self.state = _initial_state(spec, settings, timed=spec.timing.iterations > 0)

    def lane(self, index: int) -> dict[str, Any]:
        lane: dict[str, Any] = self.state["lanes"][index]
        return lane

    def save(self) -> None:
        self.state["ranking"] = [encode(p) for p in self.points]
        self.state["trials"] = [encode(t.entry()) for t in self.trials]
        self.state["seconds"] = round(time.monotonic() - self.began, 3)
        write_json_atomic(self.out / TUNE_FILE, self.state)

    def warn(self, text: str) -> None:
        progress.log.info("tune: %s", text)
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
