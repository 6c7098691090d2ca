"""The rule that tells a container thrashing at its memory limit from one that works (farm/backend/thrashing.py)."""

from __future__ import annotations

from farm.backend.thrashing import FAULTS_PER_S, WINDOW_S, Sample, ThrashWatch, sample_of

MIB = 2**20
LIMIT = 48 * MIB


def feed(watch: ThrashWatch, readings: list[tuple[float, int, int]]) -> list[str | None]:
    """(seconds, usage in MiB, major faults so far) per reading."""
    return [
        watch.feed(Sample(at_s=at, usage_bytes=usage * MIB, limit_bytes=LIMIT, major_faults=faults))
        for at, usage, faults in readings
    ]


def test_at_its_limit_and_faulting_for_the_whole_window_is_thrashing() -> None:
    rate = int(FAULTS_PER_S * 8)  # what a thrashing import of onnxruntime does (thousands a second)
    said = feed(ThrashWatch(), [(float(t), 48, rate * t) for t in range(int(WINDOW_S) + 2)])
    assert said[: int(WINDOW_S)] == [None] * int(WINDOW_S)  # not before the window is full
    found = said[int(WINDOW_S)]
    assert found is not None and "memory limit of 48 MiB" in found and f"{rate:,} pages a second" in found


def test_at_its_limit_without_faulting_is_a_full_page_cache_not_thrashing() -> None:
    # A job that writes files fills its page cache to the limit and goes on working: few major faults.
    assert feed(ThrashWatch(), [(float(t), 48, 10 * t) for t in range(30)]) == [None] * 30


def test_a_burst_of_faults_under_the_limit_is_a_job_loading() -> None:
    assert feed(ThrashWatch(), [(float(t), 30, 20_000 * t) for t in range(30)]) == [None] * 30


def test_a_sample_under_the_limit_starts_the_window_again() -> None:
    readings = [(float(t), 48 if t != 8 else 40, 10_000 * t) for t in range(int(WINDOW_S) + 12)]
    said = feed(ThrashWatch(), readings)
    first = next(i for i, found in enumerate(said) if found is not None)
    assert first == 9 + int(WINDOW_S)  # a full window from the first sample at the limit again


def test_the_rate_is_over_the_last_window_not_since_the_start() -> None:
    # Faulting hard while it loaded, then quiet at its limit: the window slides past the burst.
    readings = [(float(t), 48, 50_000 * min(t, 3)) for t in range(40)]
    said = feed(ThrashWatch(), readings)
    assert all(found is None for found in said[int(WINDOW_S) + 4 :])


def test_samples_come_from_the_engines_memory_stats_on_both_cgroup_versions() -> None:
    v1 = {
        "memory_stats": {
            "usage": 50 * MIB,
            "limit": LIMIT,
            "max_usage": LIMIT,
            "stats": {"pgmajfault": 7, "total_pgmajfault": 7, "cache": 0},
        }
    }
    v2 = {"memory_stats": {"usage": 50 * MIB, "limit": LIMIT, "stats": {"pgmajfault": 7, "file": 0}}}
    for stats in (v1, v2):
        assert sample_of(stats, 1.5) == Sample(at_s=1.5, usage_bytes=50 * MIB, limit_bytes=LIMIT, major_faults=7)
    assert sample_of({"memory_stats": {}}, 0.0) is None  # a container that has ended
    assert sample_of({}, 0.0) is None
