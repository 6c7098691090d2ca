"""Stage ``tune``: the search for one target, from fp32's reference to the verdict (the package's docstring says
how it searches)."""

from __future__ import annotations

import shutil
from pathlib import Path

from farm.job.codec import encode
from farm.job.spec import Spec, Tune
from farm.job.tune import measure, progress
from farm.job.tune.judge import Judge
from farm.job.tune.kernelstep import KernelCheck
from farm.job.tune.lanes import Lanes
from farm.job.tune.lineage import given_lineage
from farm.job.tune.record import Record, TuneFailed
from farm.job.tune.source import prepare_sources
from farm.job.tune.start import naive_start
from farm.job.tune.trials import Trials
from farm.job.tune.verdict import Verdict


def run_tune(spec: Spec, out: Path) -> None:
    """Run the search for ``spec``'s target and write ``out``/tune.json (and ``out``/tuned.onnx when tuned), saved
    at every step; a search that cannot run at all ends with status "failed" and why."""
    record = Record(spec, out, spec.tune or Tune())
    work = out / "tune-work"
    out.mkdir(parents=True, exist_ok=True)
    record.save()
    try:
        _search(spec, record, out, work)
    except TuneFailed as exc:
        progress.say(f"tune failed: {exc}")
        record.state.update(status="failed", error=str(exc))
        record.save()
        return
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record.state["status"] = "done"
    record.save()


def _search(spec: Spec, record: Record, out: Path, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    dataset, measured = measure.load(spec, record)
    sources = prepare_sources(spec.source_model, work, record)
    judge = Judge(measure=measured, floor=record.settings.floor)
    trials = Trials(
        spec=spec, work=work, dataset=dataset, record=record, measure=measured, sources=sources, judge=judge
    )
    start = naive_start(trials)
    given = record.settings.candidate
    record.state["start"] = start.variant if given is None else given.variant
    record.state["candidate"] = None if given is None else encode(given)
    kernels = KernelCheck(spec=spec, work=work, record=record, sources=sources, trials=trials, naive=start.models)
    lineage = given_lineage(record, sources)
    stopped = Lanes(trials=trials, kernels=kernels, lineage=lineage).search(start.variant)
    record.state["stopped"] = stopped
    Verdict(record=record, judge=judge, lineage=lineage, kernels=kernels, out=out, work=work).give(stopped)
