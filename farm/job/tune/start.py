"""The start: the target's static candidates made (or taken from prepare) and measured naive, timed together with
fp32; the search starts from ``tune.start``, else the most accurate of them that is at least ``floor`` times as fast
as fp32 (when timed), else the most accurate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.job.codec import encode
from farm.job.quantize import quantize
from farm.job.result import error_text
from farm.job.session import open_session
from farm.job.spec import Spec
from farm.job.timing import speedup
from farm.job.tune import progress
from farm.job.tune.measure import Measure
from farm.job.tune.record import QuantConfig, Record, TuneFailed
from farm.job.tune.trials import Trials
from farm.job.tune.words import figures
from farm.job.tunecontract import NaiveEntry
from farm.job.types import Accuracy, Latency
from farm.job.variants import RECIPES


@dataclass(kw_only=True, slots=True)
class Naive:
    """One naive variant as it is measured: its figures, or why it has none."""

    name: str
    accuracy: Accuracy | None = None
    within: bool = False
    latency: Latency | None = None
    speedup: float | None = None
    error: str | None = None
    session: Any = None

    def entry(self) -> NaiveEntry:
        """The variant as tune.json's ``naive`` lists it."""
        return NaiveEntry(
            accuracy=self.accuracy,
            within_tolerance=self.within,
            latency_ms=self.latency,
            speedup=None if self.speedup is None else round(self.speedup, 4),
            error=self.error,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Start:
    """The variant the search starts from, and the naive models made on the way (the kernel check may use them)."""

    variant: str
    models: dict[str, Path]


def naive_start(trials: Trials) -> Start:
    """Measure the naive variants into tune.json's ``naive`` and ``fp32``, and pick the start."""
    spec, record, measure = trials.spec, trials.record, trials.measure
    settings = record.settings
    static = [name for name in spec.candidates if RECIPES[name].kind == "static"]
    start = settings.start
    if start is not None and start not in static:
        static.append(start)
    if not static:
        raise TuneFailed(
            "the target has no static candidate to tune from (dynamic quantization has no "
            "calibrated points to put back into fp32)"
        )
    given = settings.candidate
    if given is not None and not measure.timed:
        # Untimed, the given model's search starts from it: of the naive variants, only its own says anything
        # here (how far its plain int8 falls on this target), and each costs an evaluation under QEMU.
        static = [given.variant]
    naive: dict[str, Naive] = {}
    models: dict[str, Path] = {}
    for name in static:
        progress.say(f"evaluating naive {name}")
        naive[name] = entry = Naive(name=name)
        try:
            path = _naive_model(trials, name)
            models[name] = path
            entry.session = open_session(path, target=spec.target, threads=spec.threads)
            entry.accuracy = measure.run(entry.session)
            entry.within = measure.within(entry.accuracy)
        except Exception as exc:  # one variant's failure must not end the others
            entry.error, entry.session = error_text(exc), None
        record.state["naive"][name] = encode(entry.entry())
        record.save()
    if measure.timed:
        _time(measure, record, [n for n in naive.values() if n.session is not None])
    for entry in naive.values():
        entry.session = None
        record.state["naive"][entry.name] = encode(entry.entry())
    record.save()
    if start is None:
        start = _pick(measure, settings.floor, [n for n in naive.values() if n.accuracy is not None])
    if start is None:
        failures = "; ".join(f"{n.name}: {n.error}" for n in naive.values())
        raise TuneFailed(f"no naive variant ran ({failures})")
    chosen = naive[start]
    progress.say(
        f"start from {start}"
        + (f" ({figures(chosen.accuracy, chosen.speedup)})" if chosen.accuracy is not None else "")
    )
    return Start(variant=start, models=models)


def _time(measure: Measure, record: Record, ran: Sequence[Naive]) -> None:
    """fp32 and the naive variants that ran, their rounds alternating."""
    progress.say(f"timing fp32 and {len(ran)} naive variants")
    latencies = measure.time([n.session for n in ran])
    fp32 = latencies[0]
    if isinstance(fp32, Exception):
        raise TuneFailed(f"fp32 could not be timed: {error_text(fp32)}")
    record.state["fp32"]["latency_ms"] = encode(fp32)
    for entry, latency in zip(ran, latencies[1:], strict=True):
        if isinstance(latency, Exception):
            entry.error = f"could not be timed: {error_text(latency)}"
            continue
        entry.latency, entry.speedup = latency, speedup(fp32, latency)


def _naive_model(trials: Trials, name: str) -> Path:
    """prepare's artifact when there is one (no calibration here, which matters under QEMU), else made now."""
    spec: Spec = trials.spec
    artifacts = spec.artifacts
    if artifacts is not None and (artifacts / f"{name}.onnx").is_file():
        return artifacts / f"{name}.onnx"
    path = trials.work / f"naive-{name}.onnx"
    config = QuantConfig.of(name, spec.calibration.method)
    quantize(name, trials.sources.for_config(config), path, dataset=trials.dataset, calibration=spec.calibration)
    return path


def _pick(measure: Measure, floor: float, ran: Sequence[Naive]) -> str | None:
    """The most accurate variant that beats fp32 by the floor (when timed), else the most accurate."""
    if not ran:
        return None
    fast = [n for n in ran if n.speedup is not None and n.speedup >= floor] if measure.timed else []

    def key(n: Naive) -> tuple[bool, float, float, float]:
        assert n.accuracy is not None
        return (n.within, -measure.gap(n.accuracy), n.accuracy.cosine, n.speedup or 0.0)

    return max(fast or ran, key=key).name
