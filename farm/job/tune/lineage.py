"""What a trial's model keeps out of plain int8 and why, traced through the trials that made it: the changes a kept
trial made (or the given model, or the trial a lane took its settings from), and those it returned to int8."""

from __future__ import annotations

from dataclasses import dataclass, replace

from farm.job.tune.record import QuantConfig, Record, Trial
from farm.job.tune.source import Sources
from farm.job.tunecontract import Candidate, Change, Returned


@dataclass(frozen=True, kw_only=True, slots=True)
class Lineage:
    record: Record
    sources: Sources
    # The changes the given model (tune.candidate) made, each with its reason, as its search wrote them, and the
    # target whose search that was.
    given: tuple[Change, ...] = ()
    origin: str | None = None

    def changes(self, trial: Trial) -> list[Change]:
        """What ``trial``'s model keeps out of plain int8, one entry per change: the nodes a kept trial (or the given
        model, or the trial a lane took its settings from) put in fp32 or the weights it made 7-bit, why, and which
        trial did it."""
        exclude, seven = set(trial.config.exclude), set(trial.config.seven_bit)
        # A node that a fusion replaced is kept in fp32 as the fused node.
        renamed = self.sources.renamed() if trial.config.fused else {}
        entries = []
        for change in self._inherited(trial):
            nodes = tuple(dict.fromkeys(renamed.get(n, n) for n in change.nodes if renamed.get(n, n) in exclude))
            weights = tuple(w for w in change.seven_bit if w in seven)
            if nodes or weights:
                entries.append(replace(change, nodes=nodes, seven_bit=weights))
        for earlier in self.record.trials[: trial.index + 1]:
            if earlier.lane != trial.lane or earlier.step in ("start", "return"):
                continue
            if not (earlier.kept or earlier is trial):
                continue
            nodes = tuple(dict.fromkeys(renamed.get(n, n) for n in earlier.added if renamed.get(n, n) in exclude))
            weights = tuple(w for w in earlier.weights if w in seven)
            if nodes or weights:
                entries.append(self._entry(earlier, nodes, weights))
        return entries

    def _inherited(self, trial: Trial) -> list[Change]:
        lane = self.record.lane(trial.lane)
        if lane.get("from_trial") is not None:
            return self.changes(self.record.trials[lane["from_trial"]])
        if trial.lane == 0:
            return [replace(c, trial=lane["start_trial"], origin=self.origin) for c in self.given]
        return []

    def _entry(self, earlier: Trial, nodes: tuple[str, ...], weights: tuple[str, ...]) -> Change:
        points = self.record.points
        point = points[earlier.point] if earlier.point is not None and earlier.point < len(points) else None
        return Change(
            trial=earlier.index,
            kind="fp32" if nodes else "7-bit",
            nodes=nodes,
            seven_bit=weights,
            cause="kernel" if earlier.kernel is not None else "sqnr",
            kernel_node=earlier.kernel.node if earlier.kernel is not None else None,
            tensor=None if point is None else point.tensor,
            tensors=() if point is None else point.tensors or (point.tensor,),
            sqnr_db=None if point is None else point.sqnr_db,
            why=earlier.why,
        )

    def returned(self, best: Trial) -> list[Returned]:
        """What the given model (or an earlier trial of ``best``'s lineage) kept out of int8 and ``best`` runs in int8
        again, and why."""
        trials = self.record.trials
        lanes, lane = set(), best.lane
        while True:
            lanes.add(lane)
            origin = self.record.lane(lane).get("from_trial")
            if origin is None:
                break
            lane = trials[origin].lane
        kept_out = {*best.config.exclude, *best.config.seven_bit}
        entries = []
        for trial in trials[: best.index + 1]:
            returned = [name for name in trial.returned if name not in kept_out]
            if trial.step == "return" and trial.kept and trial.lane in lanes and returned:
                kernel = None if trial.kernel is None else trial.kernel.cited()
                entries.append(Returned(trial=trial.index, returned=tuple(returned), kernel=kernel, why=trial.why))
        return entries


def given_lineage(record: Record, sources: Sources) -> Lineage:
    """The lineage of this search, with the changes of the given model (tune.candidate) when there is one."""
    given = record.settings.candidate
    if given is None:
        return Lineage(record=record, sources=sources)
    origin = given.target or "the native search"
    changes = covering(given, origin)
    return Lineage(record=record, sources=sources, given=tuple(changes), origin=given.target)


def covering(given: Candidate, origin: str) -> list[Change]:
    """The given changes, plus one for each node or weight the given config keeps out of int8 that none names."""
    config = QuantConfig.given(given)
    changes = list(given.changes)
    named = {n for c in changes for n in c.nodes} | {w for c in changes for w in c.seven_bit}
    why = f"{origin}'s tuned model keeps it out of int8"
    extra = [
        Change(kind="fp32", nodes=(n,), seven_bit=(), cause="given", why=why) for n in config.exclude if n not in named
    ]
    extra += [
        Change(kind="7-bit", nodes=(), seven_bit=(w,), cause="given", why=why)
        for w in config.seven_bit
        if w not in named
    ]
    return changes + extra
