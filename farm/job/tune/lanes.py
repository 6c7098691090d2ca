"""The lanes: a lane is a search from one start. The first starts from the native search's tuned model when an
emulated target is given one (it checks it here and returns to int8 what this target does not need in fp32), else
from the start. On a timed target, once a model is within tolerance, each kernel family (activation and weight type)
whose naive variants ran faster than it gets a lane of its own: u8s8 with one node kept in fp32 can beat u8u8 with
none, since u8u8's kernels run at about half of u8s8's speed on x86."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from farm.job.recommend import NOISE_FLOOR
from farm.job.tune import points, steps
from farm.job.tune.kernelstep import KernelCheck, remedy_kernels
from farm.job.tune.lineage import Lineage
from farm.job.tune.record import QuantConfig, Trial
from farm.job.tune.trials import Lane, Trials
from farm.job.tune.words import kept_text, speed
from farm.job.variants import RECIPES

# A naive variant gets a lane of its own when it ran faster than the best model within tolerance by more than the
# noise rule's margin.
FASTER_BY = NOISE_FLOOR


@dataclass(frozen=True, kw_only=True, slots=True)
class Lanes:
    """The search's collaborators, which each lane uses as it finds them; a lane's own state is its ``Lane``."""

    trials: Trials
    kernels: KernelCheck
    lineage: Lineage

    def search(self, start: str) -> str:
        """Run the lanes; returns why the search stopped."""
        record, judge = self.trials.record, self.trials.judge
        method = self.trials.spec.calibration.method
        given = record.settings.candidate
        if given is not None:
            first = QuantConfig.given(given)
            origin = given.target or "the native search"
            label = f"start: {origin}'s tuned model ({first.variant}, {kept_text(first)}), checked on this target"
        else:
            first, label = QuantConfig.of(start, method), f"start: {start}"
            plain = _without_reduce_range(start)
            if self.trials.spec.target.saturation_risk and plain is not None:
                # 7-bit weights everywhere is the blanket remedy for saturation; the kernel check finds the nodes
                # that need it, so the search starts from the family's 8-bit recipe.
                first = QuantConfig.of(plain, method)
                label = f"start: {plain} ({start} without reduce_range: the kernel check finds the nodes that saturate)"
        reasons = [self.lane(first, label)]
        while judge.timed:
            rival = judge.best_acceptable(record.trials)
            found = self._faster_start(rival)
            if found is None:
                break
            if (spent := record.budget_spent()) is not None:
                reasons.append(spent)
                break
            config, label = self._next_start(rival, *found)
            reasons.append(self.lane(config, label, rival=rival))
        return "; ".join(dict.fromkeys(reasons))

    def _next_start(self, rival: Trial | None, faster: str, speed: float, against: float) -> tuple[QuantConfig, str]:
        """The config and label of a lane that starts from ``faster``, with the rival's settings when there is one."""
        recipe = RECIPES[faster]
        if rival is None:
            config = QuantConfig.of(faster, self.trials.spec.calibration.method)
            label = (
                f"start: {faster} (its kernels ran {speed:.2f}x fp32 naive, against {against:.2f}x for "
                f"{self.trials.record.state['lanes'][-1]['variant']}, whose lane found nothing within tolerance)"
            )
            return config, label
        # What made the rival accurate (its calibration, per-channel weights, the nodes it keeps in fp32) is carried
        # over: those reasons do not depend on the kernels.
        config = replace(
            rival.config,
            variant=faster,
            reduce_range=recipe.reduce_range,
            per_channel=rival.config.per_channel or recipe.per_channel,
            seven_bit=rival.config.seven_bit if recipe.weight == "int8" else (),
        )
        label = (
            f"start: {faster} with trial {rival.index}'s settings ({kept_text(config)}): its kernels "
            f"ran {speed:.2f}x fp32 naive, against {against:.2f}x for {rival.config.variant}'s"
        )
        return config, label

    def _faster_start(self, rival: Trial | None) -> tuple[str, float, float] | None:
        """The start of the next lane, with its family's naive speed and the reference's: the plain recipe (no
        reduce_range, no per-channel: those are knobs) of the
        fastest kernel family not searched yet, when it ran faster by more than noise than the rival's family (kept
        out of int8 where the rival is, it may beat it: more in fp32 only makes a model slower), or with no rival
        yet, than the last lane's. A family is an activation and weight type: its variants run the same kernels."""
        state = self.trials.record.state
        speeds: dict[tuple[str, str], float] = {}
        members: dict[tuple[str, str], list[str]] = {}
        for name, entry in state["naive"].items():
            if entry.get("accuracy") is None or entry.get("speedup") is None:
                continue
            family = _family(name)
            speeds[family] = max(speeds.get(family, 0.0), float(entry["speedup"]))
            members.setdefault(family, []).append(name)
        reference = _family(rival.config.variant if rival is not None else state["lanes"][-1]["variant"])
        if reference not in speeds:
            return None
        bar = max(speeds[reference], self.trials.judge.floor) * (1.0 + FASTER_BY)
        searched = {_family(lane["variant"]) for lane in state["lanes"]}
        faster = [(speed, family) for family, speed in speeds.items() if family not in searched and speed > bar]
        if not faster:
            return None
        speed, family = max(faster)
        plain = min(members[family], key=lambda n: (RECIPES[n].reduce_range, RECIPES[n].per_channel, n))
        return plain, speed, speeds[reference]

    def lane(self, config: QuantConfig, label: str, *, rival: Trial | None = None) -> str:
        """One lane: its start, then (out of tolerance) the kernels, the knobs and the ranked points, then (within)
        the changes this target does not need returned to int8. Returns why it stopped."""
        record, trials = self.trials.record, self.trials
        entry: dict[str, Any] = {
            "variant": config.variant,
            "start_trial": len(record.trials),
            "from_trial": None if rival is None else rival.index,
            "stopped": None,
        }
        record.state["lanes"].append(entry)
        lane = Lane(index=len(record.state["lanes"]) - 1, rival=rival)
        first = trials.run(lane, label, config, step="start")
        name, floor = config.variant, trials.judge.floor
        if first.accuracy is None:
            stopped = f"{name}: the start could not be made or run ({first.error})"
        elif not first.kept:
            stopped = f"{name}: the start was {first.note}"
        elif trials.judge.timed and (first.speedup is None or first.speedup < floor):
            stopped = (
                f"{name}: the start is {speed(first.speedup)} fp32's speed, below the floor "
                f"{floor:g}x, and keeping nodes in fp32 only makes it slower"
            )
        else:
            stopped = self._repair(lane) if not first.within else f"{name}: trial {first.index} is within tolerance"
            if lane.done:
                stopped = steps.return_to_int8(trials, lane, self.lineage, self.kernels) or stopped
                # Within tolerance, fusing is for speed: kept while it stays within and runs faster.
                steps.try_fusion(trials, lane)
        entry["stopped"] = stopped
        record.save()
        return stopped

    def _repair(self, lane: Lane) -> str:
        """Out of tolerance: the nodes whose kernels lose accuracy here first (7-bit weights where they saturate,
        else fp32), then the cheap knobs, then the ranked points."""
        trials, record = self.trials, self.trials.record
        assert lane.current is not None
        if (spent := record.budget_spent()) is not None:
            return spent
        findings = self.kernels.of(lane.current)
        if (over := lane.over(record)) is not None:
            return over
        if (over := remedy_kernels(trials, lane, [f for f in findings if f.lossy])) is not None:
            return over
        # A later lane carries the first lane's settings: the knobs were tried there.
        if lane.rival is None:
            if (over := steps.try_fusion(trials, lane)) is not None:
                return over
            if (over := steps.try_knobs(trials, lane, checked=bool(findings))) is not None:
                return over
        if (over := lane.over(record)) is not None:
            return over
        ranked = points.rank(trials, lane)
        if ranked is not None:
            return ranked
        return points.try_points(trials, lane)


def _family(variant: str) -> tuple[str, str]:
    """A variant's kernel family: its activation and weight types, which decide the kernels it runs."""
    recipe = RECIPES[variant]
    return recipe.activation, recipe.weight


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
