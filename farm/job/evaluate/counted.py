"""The estimate phase of an emulated target under farm's counting QEMU: each variant's instructions, in a session opened
for it, counted over a few marked runs (farm.job.estimate.marks) and priced by the target's cost model
(farm.job.estimate.costs)."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from farm.job.estimate.costs import CostModel, cost_models, trust
from farm.job.estimate.marks import MarkedRun, Marks, NotCounting
from farm.job.evaluate.file import ResultFile
from farm.job.report import InstructionCounts, Variant
from farm.job.result import error_text
from farm.job.spec import Estimate

log = logging.getLogger("farm.job")
WARMUP = 2
NO_ESTIMATE = "no speed estimate: {why}; the variants keep their accuracy figures"


def count_opened(
    names: Iterable[str],
    opened: Callable[[str], Any],
    feed: Callable[[Iterable[str]], dict[str, np.ndarray]],
    estimate: Estimate,
    file: ResultFile,
) -> dict[str, list[MarkedRun]]:
    """Each named variant's marked runs on ``feed(its session's input names)``, its session from ``opened`` only when
    its turn comes (and dropped after); what cannot be counted says why in ``file``'s warnings and is left out, and
    so is a variant for which ``opened`` gives None (one that does not open, whose failure its evaluation reports)."""
    model = cost_models().get(estimate.cost_model)
    if model is None:
        file.warn(NO_ESTIMATE.format(why=f"farm has no cost model named {estimate.cost_model}"))
        return {}
    file.save(estimate=trust(model))
    marks = Marks(file.out)
    counted: dict[str, list[MarkedRun]] = {}
    for name in names:
        if time.monotonic() - file.started > estimate.budget_s:
            file.warn(
                NO_ESTIMATE.format(
                    why=f"counting stopped before {name}: the job ran past {estimate.budget_s:.0f} s, the estimate's "
                    "share of the target's budget"
                )
            )
            break
        session = opened(name)
        if session is None:
            continue
        log.info("evaluate: counting %s's instructions (%d runs)", name, estimate.runs)
        try:
            with file.underway(name):
                counted[name] = _count(session, feed(i.name for i in session.get_inputs()), estimate.runs, marks)
        except NotCounting as exc:
            file.warn(NO_ESTIMATE.format(why=str(exc)))
            break
        except Exception as exc:  # the runtime's error for this variant alone
            file.warn(f"{name} could not be counted: {error_text(exc)}")
    return counted


def put_counts(file: ResultFile, counted: Mapping[str, Sequence[MarkedRun]], estimate: Estimate) -> None:
    """Each counted variant's estimate into its result, where that variant ran ok."""
    model = cost_models().get(estimate.cost_model)
    if model is None:  # count_opened said so
        return
    ok = {v.name for v in file.result.variants if v.status == "ok"}
    for name, runs in counted.items():
        if name in ok:
            _put(file, name, model, runs)


def _count(session: Any, feed: dict[str, np.ndarray], runs: int, marks: Marks) -> list[MarkedRun]:
    # The first runs allocate and plan (and one later run on Haswell executed a one-off ~5% more, measured in
    # tests/integration/countjob.py); after them every run of the same feed executes nearly the same instructions.
    for _ in range(WARMUP):
        session.run(None, feed)
    # No garbage collection inside a mark: when one falls there depends on what the process allocated before, which
    # the order of the profile server's answers varies, and it added up to 5% to fp32's runs on x86 Haswell (the
    # runs' spread 0.017-0.074 in 3 of 4 processes, 0.0001 in the other). The collection before starts each variant
    # from the same garbage.
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        return [marks.count(lambda: session.run(None, feed)) for _ in range(runs)]
    finally:
        if collecting:
            gc.enable()


def _put(file: ResultFile, name: str, model: CostModel, counted: Sequence[MarkedRun]) -> None:
    totals = [sum(c.counts.values()) for c in counted]
    low = min(totals)
    # The run that executed least: what a run of the variant costs, since what varies between runs (a one-off
    # allocation, the interpreter's own work) only ever adds; the runs' spread says how much it did.
    fewest = counted[totals.index(low)]
    instructions = InstructionCounts(
        runs=len(counted),
        per_run=dict(sorted(fewest.counts.items())),
        spread=round((max(totals) - low) / low, 6) if low else 0.0,
        qemu_wall_ms=round(float(np.median([c.wall_s for c in counted])) * 1000.0, 4),
    )
    latency = model.latency([c.counts for c in counted])
    variants: tuple[Variant, ...] = tuple(
        replace(v, latency_ms=latency, timing="estimated", instructions=instructions) if v.name == name else v
        for v in file.result.variants
    )
    file.save(variants=variants)
