"""The timing phase's rule (farm.job.timing, docs/contracts.md section 2): fixed rounds as farm always timed them, and
adaptive rounds bounded by time, with early stops for the variants that can claim nothing more. Fake sessions on a
fake clock: each run advances the clock by what the session says, so every figure here is exact."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from farm.job.evaluate.file import ResultFile
from farm.job.evaluate.timed import Timer
from farm.job.report import Variant
from farm.job.spec import Timing
from farm.job.timing import OUT_OF_TOLERANCE_ROUNDS, Role, Timed, time_rounds, time_variants
from farm.job.types import Accuracy, Latency
from tests.unit.test_job_kernels import host_target
from tests.unit.test_job_profile import Sleeps


class Clock:
    """Seconds that pass only when a fake session runs."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Fake:
    """A session whose ``n``-th run (0-based, warm-up included) takes ``seconds(n)`` on ``clock``."""

    def __init__(self, clock: Clock, seconds: Callable[[int], float]) -> None:
        self.clock, self.seconds, self.runs = clock, seconds, 0

    def run(self, _: Any, feed: Any) -> list[Any]:
        self.clock.now += self.seconds(self.runs)
        self.runs += 1
        return []


def steady(clock: Clock, seconds: float) -> Fake:
    return Fake(clock, lambda _: seconds)


def by_round(clock: Clock, per_round: int, seconds: Callable[[int], float]) -> Fake:
    """A session whose runs in round ``r`` take ``seconds(r)`` (no warm-up, ``per_round`` runs every round)."""
    return Fake(clock, lambda n: seconds(n // per_round))


def adaptive(**changes: Any) -> Timing:
    """farm matrix's adaptive timing: 10 warm-up runs at most, 200 runs in 10 rounds at most, 0.25 s a round."""
    return Timing(**{"warmup": 10, "iterations": 200, "rounds": 10, "mode": "adaptive", **changes})


def latencies(entries: list[Timed], timing: Timing, clock: Clock) -> list[Latency]:
    found = time_variants(entries, [{}], timing, clock=clock)
    assert all(isinstance(f, Latency) for f in found), found
    return [f for f in found if isinstance(f, Latency)]


# Runs that take a power of two of a second add up exactly on the fake clock.
SLOW, FAST = 1 / 8, 1 / 64


def test_an_adaptive_round_stops_at_a_quarter_second_after_five_runs_and_never_past_the_fixed_count() -> None:
    clock = Clock()
    slow, medium, fast = steady(clock, SLOW), steady(clock, FAST), steady(clock, 1 / 1024)
    found = latencies([Timed(session=s, role="baseline") for s in (slow, medium, fast)], adaptive(), clock)
    # Warm-up: one run at least, then until a quarter second, at most 10. Rounds: 5 runs at least (slow: 0.625 s),
    # then until a quarter second (medium: 16 runs), at most the fixed design's 20 (fast: 20 runs, 0.02 s).
    assert slow.runs == 2 + 10 * 5
    assert medium.runs == 10 + 10 * 16
    assert fast.runs == 10 + 10 * 20
    assert [len(f.rounds) for f in found] == [10, 10, 10]
    assert all(f.stopped is None and f.interleaved for f in found)
    assert found[0].p50 == pytest.approx(SLOW * 1000)


def test_fixed_timing_runs_every_round_in_full_whatever_a_run_takes() -> None:
    clock = Clock()
    sessions = [steady(clock, SLOW), steady(clock, FAST)]
    roles: list[Role] = ["drifted", "candidate"]
    entries = [Timed(session=s, role=r) for s, r in zip(sessions, roles, strict=True)]
    found = latencies(entries, adaptive(mode="fixed"), clock)
    assert [s.runs for s in sessions] == [10 + 200, 10 + 200]
    assert [len(f.rounds) for f in found] == [10, 10]
    assert all(f.stopped is None for f in found)
    # time_rounds, which the tune search uses, is the fixed design.
    clock.now = 0.0
    again = [steady(clock, SLOW), steady(clock, FAST)]
    assert all(isinstance(f, Latency) for f in time_rounds(again, [{}], warmup=10, iterations=200, rounds=10))
    assert [s.runs for s in again] == [210, 210]


def test_a_candidate_with_a_faster_and_a_slower_round_against_every_baseline_stops_as_decided() -> None:
    clock = Clock()
    per_round = 2

    def timing() -> Timing:
        # Rounds that always reach the fixed count: no warm-up, 2 runs a round, a round time never reached.
        return adaptive(warmup=0, iterations=20, round_s=60.0, min_runs=1)

    fp32 = by_round(clock, per_round, lambda r: 0.010)
    optimized = by_round(clock, per_round, lambda r: 0.010 + (0.001 if r % 2 else -0.001))
    mixed = by_round(clock, per_round, lambda r: 0.009 if r == 0 else 0.011)  # faster in round 1, slower in 2
    faster = by_round(clock, per_round, lambda r: 0.005)  # faster in every round: it may claim, so it runs on
    # Mixed against fp32 after round 4, against optimized only after round 5: it stops then.
    late = by_round(clock, per_round, lambda r: 0.0085 if r < 3 else 0.0105)
    entries = [
        Timed(session=fp32, role="baseline"),
        Timed(session=optimized, role="baseline"),
        Timed(session=mixed),
        Timed(session=faster),
        Timed(session=late),
    ]
    found = latencies(entries, timing(), clock)
    assert [len(f.rounds) for f in found] == [10, 10, 2, 10, 5]
    assert [f.stopped for f in found] == [None, None, "decided", None, "decided"]
    assert [s.runs for s in (fp32, optimized, mixed, faster, late)] == [20, 20, 4, 20, 10]


def test_a_variant_out_of_tolerance_gets_three_rounds_and_a_baseline_every_round_even_when_mixed() -> None:
    clock = Clock()
    fp32 = by_round(clock, 2, lambda r: 0.010 + (0.001 if r % 2 else -0.001))
    optimized = by_round(clock, 2, lambda r: 0.010 - (0.001 if r % 2 else -0.001))
    drifted = by_round(clock, 2, lambda r: 0.002)
    timing = adaptive(warmup=0, iterations=20, round_s=60.0, min_runs=1)
    entries = [Timed(session=fp32, role="baseline"), Timed(session=optimized, role="baseline")]
    found = latencies([*entries, Timed(session=drifted, role="drifted")], timing, clock)
    assert [len(f.rounds) for f in found] == [10, 10, OUT_OF_TOLERANCE_ROUNDS]
    assert [f.stopped for f in found] == [None, None, "out-of-tolerance"]
    # With no more rounds than that, it runs them all and is not labelled.
    clock.now = 0.0
    three = adaptive(warmup=0, iterations=6, rounds=3, round_s=60.0, min_runs=1)
    few = latencies([Timed(session=steady(clock, 0.01), role="drifted")], three, clock)
    assert len(few[0].rounds) == 3 and few[0].stopped is None


def test_without_a_timed_baseline_no_candidate_stops_and_a_follower_stops_with_its_variant() -> None:
    clock = Clock()
    timing = adaptive(warmup=0, iterations=20, round_s=60.0, min_runs=1)
    alone = [Timed(session=by_round(clock, 2, lambda r: 0.009 if r % 2 else 0.011)) for _ in range(2)]
    assert [len(f.rounds) for f in latencies(alone, timing, clock)] == [10, 10]
    # The variant's session at another thread count runs in its rounds and stops when it stops, unlabelled.
    mixed = by_round(clock, 2, lambda r: 0.009 if r == 0 else 0.011)
    other = by_round(clock, 2, lambda r: 0.020)
    entries = [
        Timed(session=steady(clock, 0.010), role="baseline"),
        Timed(session=mixed),
        Timed(session=other, follows=1),
    ]
    found = latencies(entries, timing, clock)
    assert [len(f.rounds) for f in found] == [10, 2, 2]
    assert [f.stopped for f in found] == [None, "decided", None]


def test_a_session_that_breaks_under_adaptive_timing_costs_only_its_own_latency() -> None:
    clock = Clock()

    def breaks(n: int) -> float:
        if n == 7:
            raise RuntimeError("broke")
        return 0.01

    entries = [Timed(session=steady(clock, 0.01), role="baseline"), Timed(session=Fake(clock, breaks))]
    found = time_variants(entries, [{}], adaptive(), clock=clock)
    assert isinstance(found[1], RuntimeError)
    assert isinstance(found[0], Latency) and len(found[0].rounds) == 10


NATIVE = host_target(saturation_risk=True)


def test_the_evaluate_timer_gives_each_variant_its_role_from_its_verdict(tmp_path: Path) -> None:
    """fp32 and optimized run every round; a variant out of tolerance only a few; one faster than both, all."""
    file = ResultFile(NATIVE, tmp_path)
    accuracy = Accuracy(cosine=0.5, max_abs=1.0, top1_agreement=None, accuracy=None)
    verdicts = {"fp32": True, "optimized": True, "u8u8-qdq": True, "s8s8-qdq": False}
    for name, within in verdicts.items():
        file.add(Variant(name=name, status="ok", accuracy=accuracy, within_tolerance=within))
    timing = Timing(warmup=0, iterations=20, rounds=10, mode="adaptive", round_s=60.0, min_runs=1)
    timer = Timer(timing=timing, target=NATIVE, feeds=[{}], file=file)
    for name, seconds in (("fp32", 0.002), ("optimized", 0.002), ("u8u8-qdq", 0.0), ("s8s8-qdq", 0.0)):
        assert timer.keep(name, Sleeps(seconds), 1) is None
    timer.time_kept()
    timed = {v.name: v.latency_ms for v in file.result.variants}
    assert all(latency is not None for latency in timed.values()), timed
    rounds = {name: (len(latency.rounds), latency.stopped) for name, latency in timed.items() if latency}
    assert rounds == {
        "fp32": (10, None),
        "optimized": (10, None),
        "u8u8-qdq": (10, None),
        "s8s8-qdq": (OUT_OF_TOLERANCE_ROUNDS, "out-of-tolerance"),
    }


class Recorder:
    """A session that notes its name in a shared log at each run."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def run(self, _: Any, feed: Any) -> list[Any]:
        self.log.append(self.name)
        return []


def test_each_round_starts_one_session_later_than_the_round_before() -> None:
    log: list[str] = []
    sessions = [Recorder(name, log) for name in ("fp32", "optimized", "u8s8")]
    timing = Timing(warmup=0, iterations=3, rounds=3, mode="fixed")
    time_variants([Timed(session=s, role="baseline") for s in sessions], [{}], timing, clock=Clock())
    # One run per session per round; the warm-up (none here) keeps the report's order.
    assert log == ["fp32", "optimized", "u8s8", "optimized", "u8s8", "fp32", "u8s8", "fp32", "optimized"]
