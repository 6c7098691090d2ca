"""The profile child's answer (farm.job.profile.child.measure's figures, as JSON) made the variant's ``Profile``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from farm.job.report import Profile, Timing

MIB = 1 << 20


class BadAnswer(ValueError):
    """The answer lacks a figure or holds one of the wrong kind: farm's bug, reported as the variant's warning."""


def to_profile(answer: Mapping[str, Any], *, emulated: bool, threads: int, timing: Timing) -> Profile:
    """The ``Profile`` the answer says. ``timing``: what a time measured on this target stands for (ignored under
    emulation, which has no times). Raises BadAnswer."""
    growth_mib = (_number(answer, "hwm_kib") - _number(answer, "rss_start_kib")) / 1024.0
    if emulated:
        heap_mib = (_number(answer, "heap_end") - _number(answer, "heap_start")) / MIB
        return Profile(
            memory="guest-heap",
            peak_rss_mib=_round(heap_mib),
            rss_upper_bound_mib=_round(growth_mib),
            session_threads=threads,
        )
    return Profile(
        memory="process",
        peak_rss_mib=_round(growth_mib),
        session_threads=threads,
        session_create_ms=_round(_number(answer, "create_ms")),
        first_run_ms=_round(_number(answer, "first_run_ms")),
        timing=timing,
    )


def _number(answer: Mapping[str, Any], key: str) -> float:
    value = answer.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadAnswer(f"the profile's answer has no number {key!r} ({value!r})")
    return float(value)


def _round(value: float) -> float:
    # Never below zero: a process whose start figure was read before a page was returned (rare) grew by nothing.
    return round(max(value, 0.0), 3)
