"""One trial: make a model from a config, measure it, and judge it against the lane's current model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.job.codec import decode
from farm.job.data import Dataset
from farm.job.kernels import KernelFinding
from farm.job.quantize import quantize
from farm.job.recommend import NOISE_FLOOR
from farm.job.result import error_text
from farm.job.session import open_session
from farm.job.spec import Calibration, Spec
from farm.job.tune import progress
from farm.job.tune.judge import Judge
from farm.job.tune.measure import MIN_GAIN, Measure
from farm.job.tune.record import QuantConfig, Record, Trial
from farm.job.tune.source import Sources
from farm.job.tune.words import figures, speed
from farm.job.tunecontract import Step
from farm.job.types import NodeCount


@dataclass(kw_only=True, slots=True)
class Lane:
    """A search from one start: its index in tune.json's ``lanes``, the model it must beat (a later lane's rival),
    and the model it builds on, the last kept trial (the one thing a lane changes as it goes)."""

    index: int
    rival: Trial | None = None
    current: Trial | None = None

    @property
    def done(self) -> bool:
        return self.current is not None and self.current.within

    def over(self, record: Record) -> str | None:
        """Why the lane cannot go on, if it cannot: within tolerance, the budget, or no longer able to beat its
        rival (every further change keeps more in fp32, which only makes it slower)."""
        current, rival = self.current, self.rival
        assert current is not None
        if self.done:
            return f"{current.config.variant}: trial {current.index} is within tolerance"
        if (spent := record.budget_spent()) is not None:
            return spent
        if (
            rival is not None
            and current.speedup is not None
            and rival.speedup is not None
            and current.speedup <= rival.speedup
        ):
            return (
                f"{current.config.variant}: trial {current.index} is no faster than trial "
                f"{rival.index}'s {speed(rival.speedup)}"
            )
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Trials:
    """Makes and measures the search's models, into ``work``; every trial lands in the record."""

    spec: Spec
    work: Path
    dataset: Dataset
    record: Record
    measure: Measure
    sources: Sources
    judge: Judge

    def make(self, config: QuantConfig, path: Path, trial: Trial | None = None) -> Path:
        record = quantize(
            config.variant,
            self.sources.for_config(config),
            path,
            dataset=self.dataset,
            calibration=Calibration(method=config.method, samples=self.spec.calibration.samples),
            exclude=config.exclude,
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            seven_bit=config.seven_bit,
        )
        if config.fused:
            record["fused"] = [f"{', '.join(f.replaced)} -> {f.kind} {f.node}" for f in self.sources.fusions]
        if trial is not None:
            trial.record = record
            nodes = record.get("nodes")
            trial.nodes = dict(nodes) if isinstance(nodes, dict) else None
        return path

    def run(
        self,
        lane: Lane,
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
    ) -> Trial:
        """Make, measure and judge one model. A ``return`` trial (a change undone) is kept when the model stays
        within tolerance (and the floor); any other when it is closer to the tolerance than the current model (the
        start of a lane always is)."""
        trial = Trial(
            index=len(self.record.trials),
            lane=lane.index,
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
            trial.model = self.make(config, self.work / f"trial-{trial.index}.onnx", trial)
            session = open_session(trial.model, target=self.spec.target, threads=self.spec.threads)
            trial.accuracy = self.measure.run(session)
        except Exception as exc:  # this trial's failure (the quantizer's, the runtime's, NaN outputs), not the search's
            trial.error = error_text(exc)
            trial.note = "failed"
        if trial.accuracy is not None and not trial.int8:
            self._not_int8(trial)
        elif trial.accuracy is not None:
            self._judge(trial, lane.current, session)
        trial.seconds = time.monotonic() - began
        self.record.trials.append(trial)
        if trial.kept:
            lane.current = trial
        self._drop_models(lane)
        self.record.save()
        verdict = "kept" if trial.kept else (trial.note or "undone")
        said = trial.error if trial.accuracy is None else figures(trial.accuracy, trial.speedup)
        progress.say(f"trial {trial.index}: {change} -> {said}, {verdict}")
        return trial

    def _not_int8(self, trial: Trial) -> None:
        assert trial.accuracy is not None
        trial.within = self.measure.within(trial.accuracy)
        # A start that quantized nothing says why (every node inside If bodies, none int8 kernels exist for).
        why = decode(NodeCount, trial.nodes).not_quantized() if trial.step == "start" and trial.nodes else None
        trial.note = (
            f"undone: {why}"
            if why
            else "undone: it leaves no quantizable node in int8, so it is fp32 under another name"
        )

    def _judge(self, trial: Trial, current: Trial | None, session: Any) -> None:
        """Whether ``trial`` is kept: timed only when it may be (a timing run costs as much as the rest)."""
        assert trial.accuracy is not None
        measure, floor = self.measure, self.judge.floor
        trial.within = measure.within(trial.accuracy)
        if trial.step == "return":
            improves = trial.within
        else:
            improves = current is None or (
                current.accuracy is not None and measure.better(trial.accuracy, current.accuracy)
            )
        if not (improves or trial.within or trial.step == "fuse"):
            trial.note = (
                "undone: out of tolerance without it"
                if trial.step == "return"
                else "undone: no closer to the tolerance than the current model"
            )
            return
        # Only a model that may be kept (or that meets the tolerance) is worth its timing runs; a fusion is also
        # kept for its speed alone.
        if measure.timed:
            trial.latency, trial.speedup, problem = measure.time_against_fp32(session)
            if problem:
                self.record.warn(f"trial {trial.index} {problem}")
        if trial.step == "fuse" and not improves and current is not None:
            improves = self._as_good_and_faster(trial, current)
        trial.kept = improves
        if current is not None and measure.timed and improves and (trial.speedup or 0.0) < floor:
            trial.kept = False
            trial.note = f"undone: {speed(trial.speedup)} is below the floor {floor:g}x"
        elif not improves:
            trial.note = "undone: no closer to the tolerance than the current model"

    def _as_good_and_faster(self, trial: Trial, current: Trial) -> bool:
        """No farther from the tolerance than ``current`` (within if it was), and faster beyond noise (untimed: a
        rewrite that only removes quantization points is taken at its word)."""
        if trial.accuracy is None or current.accuracy is None or (current.within and not trial.within):
            return False
        if self.measure.gap(trial.accuracy) > self.measure.gap(current.accuracy) * (1.0 + MIN_GAIN) + 1e-9:
            return False
        if not self.measure.timed:
            return True
        return (
            trial.speedup is not None
            and current.speedup is not None
            and trial.speedup > current.speedup * (1.0 + NOISE_FLOOR)
        )

    def _drop_models(self, lane: Lane) -> None:
        """Keep on disk only the current model and the best candidate so far; a search can run for hundreds."""
        trials = self.record.trials
        keep = {t.index for t in (lane.current, self.judge.best(trials)) if t is not None}
        for trial in trials:
            if trial.model is not None and trial.index not in keep:
                trial.model.unlink(missing_ok=True)
                trial.model.with_name(trial.model.name + ".data").unlink(missing_ok=True)
                trial.model = None
