"""The search steps that change settings rather than regions: the cheap knobs, the fusion of exporter patterns, and,
within tolerance, the return to int8 of each change this target does not need."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import cast

from farm.job.spec import CALIBRATION_METHODS
from farm.job.tune.kernelstep import KernelCheck
from farm.job.tune.lineage import Lineage
from farm.job.tune.record import QuantConfig
from farm.job.tune.trials import Lane, Trials
from farm.job.tune.words import fusion_text
from farm.job.tunecontract import CalibrationMethod, Change

Knob = tuple[str, Callable[[QuantConfig], QuantConfig]]


def knobs(trials: Trials, lane: Lane, *, checked: bool) -> list[Knob]:
    """The cheap changes known to matter, each a function of the current config. 7-bit weights everywhere
    (reduce_range) only when the kernel check could not run: where it ran, it found the nodes that saturate,
    and 7-bit weights for those alone cost less accuracy."""
    spec = trials.spec
    found: list[Knob] = []
    for method in CALIBRATION_METHODS:
        if method != spec.calibration.method:
            found.append((f"calibration {method}", partial(_with_method, method=method)))
    assert lane.current is not None
    if not lane.current.config.per_channel:
        found.append(("per-channel weights", lambda c: replace(c, per_channel=True)))
    if spec.target.saturation_risk and not lane.current.config.reduce_range and not checked:
        found.append(("reduce_range (7-bit weights)", lambda c: replace(c, reduce_range=True)))
    return found


def _with_method(config: QuantConfig, *, method: str) -> QuantConfig:
    # CALIBRATION_METHODS holds exactly the CalibrationMethod literals.
    return replace(config, method=cast(CalibrationMethod, method))


def try_knobs(trials: Trials, lane: Lane, *, checked: bool) -> str | None:
    """Each knob one trial from the current config; returns why the lane ends, if it does."""
    for change, vary in knobs(trials, lane, checked=checked):
        if (over := lane.over(trials.record)) is not None:
            return over
        assert lane.current is not None
        trials.run(lane, change, vary(lane.current.config), step="knob")
    return None


def try_fusion(trials: Trials, lane: Lane) -> str | None:
    """The exporter patterns fused (farm.job.fuse), when the model has any and the current one does not fuse
    them: kept when closer to the tolerance, or as close and faster. Returns why the lane ends, if it does."""
    assert lane.current is not None
    fusions = trials.sources.fusions
    if not fusions or lane.current.config.fused:
        return None
    if (spent := trials.record.budget_spent()) is not None:
        return spent
    renamed = trials.sources.renamed()
    config = lane.current.config
    fused = replace(config, fused=True, exclude=tuple(dict.fromkeys(renamed.get(n, n) for n in config.exclude)))
    trials.run(
        lane,
        f"fuse exporter patterns ({fusion_text(fusions)}): fewer quantization points",
        fused,
        step="fuse",
        why=f"fused {fusion_text(fusions)} into single nodes",
    )
    return None


def return_to_int8(trials: Trials, lane: Lane, lineage: Lineage, kernels: KernelCheck) -> str | None:
    """Within tolerance: each change the current model keeps (a region in fp32, 7-bit weights) undone alone,
    kept undone while the model stays within tolerance. Those whose reason does not hold on this target go
    first: a node kept in fp32 for its kernel where its kernel is exact here, then the rest, latest first."""
    assert lane.current is not None
    changes = lineage.changes(lane.current)
    if any(c.kernel_node for c in changes):
        kernels.of(lane.current)  # what this target's kernels do at those nodes decides the order, and why

    def order(change: Change) -> tuple[bool, int]:
        finding = kernels.finding(lane, change.kernel_node)
        return (not (finding is not None and not finding.lossy), -(change.trial or 0))

    stopped = None
    for change in sorted(changes, key=order):
        if (spent := trials.record.budget_spent()) is not None:
            return spent
        config = lane.current.config
        nodes = [n for n in change.nodes if n in config.exclude]
        weights = [w for w in change.seven_bit if w in config.seven_bit]
        if not nodes and not weights:
            continue
        finding = kernels.finding(lane, change.kernel_node)
        here = f" ({finding.brief()})" if finding is not None else ""
        what = (
            ", ".join(nodes)
            + (" in int8" if nodes else "")
            + (f"{'; ' if nodes else ''}8-bit weights for {', '.join(weights)}" if weights else "")
        )
        trial = trials.run(
            lane,
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
