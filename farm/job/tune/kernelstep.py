"""The kernel check step: each quantized node run with this target's int8 kernel against the same QDQ computed as
written (farm.job.kernels), once per lane's variant; then, for the nodes whose kernel loses accuracy here, 7-bit
weights (the classic remedy where VPMADDUBSW's int16 pair sums saturate, which keeps their int8 speed) and fp32
when those fall short."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from farm.job.codec import encode
from farm.job.kernels import KernelFinding, check_kernels
from farm.job.result import error_text
from farm.job.spec import Spec
from farm.job.tune import progress
from farm.job.tune.record import QuantConfig, Record, Trial
from farm.job.tune.source import Sources
from farm.job.tune.trials import Lane, Trials
from farm.job.tune.words import figures
from farm.job.variants import RECIPES

# The search ends after this many trials in a row that were undone: the points left are ranked as less lossy.
MAX_IDLE_TRIALS = 8


class KernelCheck:
    """The findings of each variant's kernel check, measured once (a session per node costs)."""

    def __init__(
        self, *, spec: Spec, work: Path, record: Record, sources: Sources, trials: Trials, naive: Mapping[str, Path]
    ) -> None:
        self._spec, self._work, self._record, self._sources, self._trials = spec, work, record, sources, trials
        # The naive models the check may use as they are.
        self._naive = dict(naive)
        self.findings: dict[str, list[KernelFinding]] = {}

    def of(self, start: Trial) -> list[KernelFinding]:
        """The kernel check of the lane's start, measured here once per variant (farm.job.kernels)."""
        config = start.config
        known = self.findings.get(config.variant)
        if known is not None:
            return known
        if self._spec.target.wants_accelerator:
            # An accelerator's int8 runs are its own, not MLAS's; a session per node there costs more than it tells.
            self._record.warn("the kernel check measures CPU int8 kernels; it does not run on accelerator targets")
            self.findings[config.variant] = []
            return []
        progress.say(f"checking the int8 kernels of {config.variant} node by node")
        try:
            model = self._plain_model(start)
            findings = check_kernels(
                self._sources.for_config(config),
                model,
                self._trials.measure.feeds,
                target=self._spec.target,
                threads=self._spec.threads,
                work=self._work,
            )
        except Exception as exc:  # a model the check cannot cut apart: the search goes on without it
            self._record.warn(f"the kernel check of {config.variant} failed: {error_text(exc)}")
            findings = []
        self.findings[config.variant] = findings
        self._record.state["kernels"] += [encode(f.entry(config.variant)) for f in findings]
        lossy = [f for f in findings if f.lossy]
        if lossy:
            progress.say(
                f"{len(lossy)} node(s) lose accuracy in this target's int8 kernels: "
                + ", ".join(f"{f.node} ({f.kernel_db:.1f} dB)" for f in lossy[:6])
            )
        self._record.save()
        return findings

    def _plain_model(self, start: Trial) -> Path:
        """``start``'s model with every node in int8, as the check needs it: made only when none is at hand."""
        config = start.config
        plain = replace(config, exclude=(), seven_bit=())
        if plain == config and start.model is not None:
            return start.model
        if plain == QuantConfig.of(config.variant, self._spec.calibration.method) and config.variant in self._naive:
            return self._naive[config.variant]
        # The start keeps some nodes out of int8; the check needs them in.
        return self._trials.make(plain, self._work / f"plain-{config.variant}.onnx")

    def finding(self, lane: Lane, node: Any) -> KernelFinding | None:
        """The current lane's kernel finding at ``node``, if measured."""
        if not isinstance(node, str) or lane.current is None:
            return None
        return next((f for f in self.findings.get(lane.current.config.variant, []) if f.node == node), None)


def remedy_kernels(trials: Trials, lane: Lane, lossy: Sequence[KernelFinding]) -> str | None:
    """The nodes whose kernels lose accuracy here, worst first: 7-bit weights where they saturate, else (or when
    those fall short) fp32. Returns why the lane ends, if it does."""
    record = trials.record
    group, covered = _seven_bit_for_all(trials, lane, lossy)
    idle = 1 if group is not None and not group.kept else 0
    for finding in lossy:
        if (over := lane.over(record)) is not None:
            return over
        if idle >= MAX_IDLE_TRIALS:
            # The metric did not move: something else (often the output's own quantization) decides it, and
            # the ranking finds that; each lossy node tried alone would spend the budget first.
            progress.say(f"{idle} kernel remedies in a row did not help; on to the knobs and the ranking")
            break
        assert lane.current is not None
        base = lane.current.config
        if finding.node in base.exclude or finding.node in covered:
            continue
        tried = len(record.trials)
        why = finding.describe()
        if _seven_bit_fits(finding, base) and finding.weight:
            seven = trials.run(
                lane,
                f"7-bit weights for {finding.node} ({finding.weight}): {finding.brief()}",
                replace(base, seven_bit=(*base.seven_bit, finding.weight)),
                step="kernel",
                weights=(finding.weight,),
                kernel=finding,
                why=f"{why}; 7-bit weights keep its pair sums within int16",
            )
            if seven.within or (over := lane.over(record)) is not None:
                idle = 0 if seven.kept else idle + 1
                continue
        # fp32 from the same base, measured against the 7-bit try when that was kept: the closer one stays.
        trials.run(
            lane,
            f"keep {finding.node} in fp32: {finding.brief()}",
            replace(base, exclude=(*base.exclude, finding.node)),
            step="kernel",
            added=(finding.node,),
            kernel=finding,
            why=_fp32_why(record, finding),
        )
        idle = 0 if any(t.kept for t in record.trials[tried:]) else idle + len(record.trials) - tried
    return None


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


def _seven_bit_for_all(trials: Trials, lane: Lane, lossy: Sequence[KernelFinding]) -> tuple[Trial | None, set[str]]:
    """Where several nodes saturate, one trial first: 7-bit weights for all of them (onnxruntime's advice for x86
    without VNNI is reduce_range, 7-bit weights everywhere; this keeps the others at 8 bits), rather than a
    trial or two per node. Returns the trial (None where fewer than two saturate) and the nodes it remedied
    (none unless it was kept)."""
    assert lane.current is not None
    base = lane.current.config
    saturating = [f for f in lossy if f.node not in base.exclude and _seven_bit_fits(f, base)]
    if len(saturating) < 2:
        return None, set()
    weights = tuple(dict.fromkeys(str(f.weight) for f in saturating))
    names = ", ".join(f.node for f in saturating[:4]) + (", ..." if len(saturating) > 4 else "")
    # The worst node stands for the group where one node is named (the change's kernel_node).
    trial = trials.run(
        lane,
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


def _fp32_why(record: Record, finding: KernelFinding) -> str:
    seven = next((t for t in reversed(record.trials) if t.kernel is finding and t.weights), None)
    text = finding.describe()
    if seven is not None and seven.accuracy is not None:
        text += f"; 7-bit weights for it (trial {seven.index}) left {figures(seven.accuracy, None)}"
    return text
