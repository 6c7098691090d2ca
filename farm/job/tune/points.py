"""The ranked points: the quantization points ranked by SQNR (farm.job.ranking), once, or as the native search
wrote them (``tune.ranking``); then the greedy search, worst point first, each trial keeping one more region in
fp32."""

from __future__ import annotations

from dataclasses import replace

import onnx

from farm.job.codec import decode
from farm.job.graph import GraphIndex
from farm.job.quantize import OpsetRaiseFailed
from farm.job.ranking import rank_points
from farm.job.result import error_text
from farm.job.tune import progress
from farm.job.tune.kernelstep import MAX_IDLE_TRIALS
from farm.job.tune.trials import Lane, Trials
from farm.job.tunecontract import Point


def rank(trials: Trials, lane: Lane) -> str | None:
    """Fill the record's points from the spec or by measuring, once; returns why the search cannot go on, if it
    cannot."""
    record = trials.record
    if record.state["ranking_source"] is not None:
        return None if record.points else "no quantization point to put back into fp32"
    given = record.settings.ranking
    if given is not None:
        points = list(given)
        record.state["ranking_source"] = "given"
        _warn_unknown_nodes(trials, lane, points)
    else:
        assert lane.current is not None
        progress.say("ranking the quantization points by SQNR")
        spec = trials.spec
        samples = trials.measure.feeds[: spec.calibration.samples]
        try:
            # The points of the current settings, every one of them quantized (the current model may keep some
            # in fp32 already).
            current = lane.current
            plain = replace(current.config, exclude=(), seven_bit=())
            model = (
                current.model
                if current.model is not None and current.config == plain
                else trials.make(plain, trials.work / "ranked.onnx")
            )
            ranked = rank_points(
                trials.sources.for_config(plain), model, samples, threads=spec.threads, work=trials.work
            )
            points = [decode(Point, p, where="ranking.") for p in ranked]
        except Exception as exc:  # a graph the augmented run cannot take: the search ends with what it has
            record.warn(f"ranking the quantization points failed: {error_text(exc)}")
            record.state["ranking_source"] = "failed"
            record.save()
            return f"the quantization points could not be ranked ({error_text(exc)})"
        record.state["ranking_source"] = "measured"
    record.points = points
    record.save()
    if points:
        worst = points[0]
        progress.say(
            f"{len(points)} points ranked; worst {worst.tensor} ({worst.sqnr_db} dB): {', '.join(worst.nodes)}"
        )
    return None if points else "no quantization point to put back into fp32"


def _warn_unknown_nodes(trials: Trials, lane: Lane, points: list[Point]) -> None:
    """A given ranking names nodes of the native search's model; say which this one lacks."""
    sources = trials.sources
    try:
        # The model this config quantizes: raised for per-channel weights, it has the converter's nodes.
        named = sources.for_config(lane.current.config) if lane.current is not None else sources.source
    except OpsetRaiseFailed:
        named = sources.source
    known = set(GraphIndex.of(onnx.load(str(named), load_external_data=False).graph).position)
    known |= {f.node for f in sources.fusions}
    missing = sorted({n for p in points for n in p.nodes if n not in known})
    if missing:
        trials.record.warn(f"the given ranking names nodes this model lacks: {', '.join(missing[:10])}")


def try_points(trials: Trials, lane: Lane) -> str:
    """Worst point first, each trial keeps one more region in fp32; returns why the lane stopped."""
    record = trials.record
    idle = 0
    for index, point in enumerate(record.points):
        if (over := lane.over(record)) is not None:
            return over
        assert lane.current is not None
        current = lane.current.config
        nodes = trials.sources.named_in(list(point.nodes), fused=current.fused)
        added = [n for n in nodes if n not in current.exclude]
        if not added:
            continue
        config = replace(current, exclude=(*current.exclude, *added))
        tensor, sqnr = point.tensor, point.sqnr_db
        figure = f" ({sqnr:.1f} dB)" if sqnr is not None else ""
        trial = trials.run(
            lane,
            f"exclude the region of {tensor}{figure}: {', '.join(added)}",
            config,
            step="point",
            point=index,
            added=added,
            why=f"quantizing {tensor} alone keeps {figure.strip(' ()') or 'an unmeasured'} SQNR",
        )
        idle = 0 if trial.kept else idle + 1
        if idle >= MAX_IDLE_TRIALS and not lane.done:
            return f"{MAX_IDLE_TRIALS} trials in a row did not help"
    return lane.over(record) or "every ranked point was tried"
