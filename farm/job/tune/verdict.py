"""The verdict: "tuned" with tuned.onnx when the best trial is within tolerance and beats fp32 by the floor (when
timed); else "keep-fp32", with the best trade-off found: a result, not a failure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from farm.job.codec import decode, encode
from farm.job.modelfile import copy_model
from farm.job.report import Quantization
from farm.job.spec import TUNED_MODEL
from farm.job.tune import progress
from farm.job.tune.judge import Judge
from farm.job.tune.kernelstep import KernelCheck
from farm.job.tune.lineage import Lineage
from farm.job.tune.record import Record, Trial, TuneFailed
from farm.job.tune.words import figures, kept_text, speed
from farm.job.tunecontract import Best
from farm.job.types import NodeCount
from farm.job.variants import SUBGRAPH_VARIANT


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    record: Record
    judge: Judge
    lineage: Lineage
    kernels: KernelCheck
    out: Path
    work: Path

    def give(self, stopped: str) -> None:
        """Write the verdict, its reason and the best model into tune.json (and tuned.onnx when tuned)."""
        record, judge = self.record, self.judge
        best = judge.best(record.trials)
        if best is None:
            self._nothing_to_compare(stopped)
            return
        assert best.accuracy is not None
        if best.int8 and best.config.variant not in self.kernels.findings:
            # Where the start was within tolerance nothing needed the check; the report still says, per node, what
            # this target's kernels do (the differences between targets rest on it).
            self.kernels.of(best)
        changes = self.lineage.changes(best)
        record.state["best"] = encode(
            Best(
                trial=best.index,
                variant=best.config.variant,
                exclude=best.config.exclude,
                seven_bit=best.config.seven_bit,
                fused=best.config.fused,
                calibration=best.config.method,
                per_channel=best.config.per_channel,
                reduce_range=best.config.reduce_range,
                accuracy=best.accuracy,
                within_tolerance=best.within,
                latency_ms=best.latency,
                speedup=None if best.speedup is None else round(best.speedup, 4),
                changes=tuple(changes),
                quantization=None if best.record is None else decode(Quantization, best.record),
            )
        )
        record.state["excluded"] = [encode(c) for c in changes if c.nodes]
        record.state["seven_bit"] = [encode(c) for c in changes if c.seven_bit]
        record.state["returned"] = [encode(r) for r in self.lineage.returned(best)]
        if judge.acceptable(best):
            self._tuned(best)
            return
        floor = judge.floor
        claim = (
            f"nothing within tolerance beats fp32 by {floor:g}x"
            if judge.timed
            else "no int8 model within tolerance was found"
        )
        reason = (
            f"{claim} ({stopped}); best trade-off: trial {best.index} ({best.config.variant}, "
            f"{kept_text(best.config)}): {figures(best.accuracy, best.speedup)}"
        )
        record.state.update(verdict="keep-fp32", reason=reason)
        progress.say(f"keep fp32: {reason}")

    def _nothing_to_compare(self, stopped: str) -> None:
        reason = f"no trial produced a model to compare ({stopped})"
        counted = [decode(NodeCount, t.nodes) for t in self.record.trials if t.nodes]
        if counted and all(c.quantizable and c.quantizable_in_subgraphs == c.quantizable for c in counted):
            reason += (
                "; this search makes static QDQ models, which leave If/Loop/Scan bodies in fp32: "
                f"dynamic quantization enters them (`farm matrix` adds {SUBGRAPH_VARIANT} beside "
                "u8s8-dynamic)"
            )
        self.record.state.update(verdict="keep-fp32", reason=reason)
        progress.say(f"keep fp32: {self.record.state['reason']}")

    def _tuned(self, best: Trial) -> None:
        floor = self.judge.floor
        speed_text = (
            f"{speed(best.speedup)} fp32's speed (floor {floor:g}x)"
            if self.judge.timed
            else "not timed (emulated target: accuracy only)"
        )
        reason = (
            f"trial {best.index} ({best.config.variant}, {kept_text(best.config)}) is within tolerance: "
            f"{figures(best.accuracy, best.speedup)}; {speed_text}"
        )
        if best.model is None or not best.model.is_file():
            raise TuneFailed(f"the tuned model of trial {best.index} is gone from {self.work}")
        copy_model(best.model, self.out / TUNED_MODEL)
        self.record.state.update(verdict="tuned", reason=reason, tuned_model=TUNED_MODEL)
        progress.say(f"tuned: {reason}")
