"""What a release gate demands (``gate.toml``): one definition of every key, its default and its meaning.

Every key is optional; with no file the defaults below apply. ``[targets.NAME]`` tables override the per-variant
keys for one target. An unknown key is refused with the nearest known name, as targets.toml's are.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Self

from farm.errors import ConfigError

Scope = Literal["recommended", "usable", "all"]
# The default of min_cosine and min_top1: whatever tolerance the report was judged by (None turns the rule off).
FROM_TOLERANCE: Literal["tolerance"] = "tolerance"
Severity = Literal["fail", "warn", "allow"]
SCOPES: tuple[Scope, ...] = ("recommended", "usable", "all")
SEVERITIES: tuple[Severity, ...] = ("fail", "warn", "allow")


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """The per-variant rules; ``None`` turns a rule off (``false`` in gate.toml)."""

    # Absolute minimums, on the variants of ``variants``. min_cosine and min_top1 default to the report's tolerance,
    # unless the report was judged by the user's --metric: then the metric's own minimums apply (min_metric).
    min_cosine: float | Literal["tolerance"] | None = FROM_TOLERANCE
    min_top1: float | Literal["tolerance"] | None = FROM_TOLERANCE
    min_accuracy: float | None = None
    # Per score the user's --metric returned: {"mAP": 0.5}.
    min_metric: Mapping[str, float] = field(default_factory=dict)
    # Against the baseline, on the variants of ``compare``: the largest allowed drop, in absolute units.
    max_cosine_drop: float | None = 0.01
    max_top1_drop: float | None = 0.02
    max_accuracy_drop: float | None = 0.01
    max_metric_drop: float | None = 0.01
    # The largest allowed p50 slowdown as a fraction (0.10: 10 % slower), counted only beyond the noise both runs
    # recorded: every timing round of the new run slower than every round of the baseline.
    max_latency_regression: float | None = 0.10
    # ... and by more than this many ms (false: no floor). Separate runs of one model differ by more than timing
    # rounds within a run do (each process lays its sessions out anew): on 2-core cloud hosts a p50 under 1 ms moved
    # by up to 58 us between identical runs (6 us models by +50 %, 160-300 us ones by up to 27 %), while the rounds
    # of each run stayed apart, so the pairs test alone failed identical reruns (docs/contracts.md section 5).
    latency_noise_ms: float | None = 0.1
    # Deployment budgets (farm/gate/budgets.py), on the variants of ``variants``, from each variant's profile: its
    # peak memory in MiB (the guest's heap on emulated targets) and its start-up times in ms (measured or masked
    # only). Off by default: a budget is the device's, which farm cannot guess.
    max_peak_rss_mib: float | None = None
    max_session_create_ms: float | None = None
    max_first_run_ms: float | None = None
    # Against the baseline, on the variants of ``compare``: the largest allowed growth of peak memory, as a fraction
    # of the baseline's (0.10: 10 % more), like with like only (the same memory basis, session threads and host).
    max_memory_regression: float | None = 0.10


@dataclass(frozen=True, kw_only=True, slots=True)
class Policy:
    source: str = "default policy"
    # Targets that must run and end ok; empty: every target the report did not skip.
    required_targets: tuple[str, ...] = ()
    # Which variants the minimums apply to: the recommended one, every one within tolerance, or all that ran.
    variants: Scope = "recommended"
    # Which variants are compared with the baseline (by the baseline's verdicts).
    compare: Scope = "usable"
    recommendation_change: Severity = "fail"
    new_failure: Severity = "fail"
    limits: Limits = field(default_factory=Limits)
    targets: Mapping[str, Limits] = field(default_factory=dict)

    def limits_for(self, target: str) -> Limits:
        return self.targets.get(target, self.limits)

    @classmethod
    def load(cls, path: Path | None) -> Self:
        if path is None:
            return cls()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"reading the gate policy {path} failed because {exc.strerror or exc}",
                fix="pass an existing gate.toml to --policy",
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"reading the gate policy {path} failed because it is not TOML ({exc})",
                fix="correct the file (see docs/contracts.md section 5)",
            ) from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> Self:
        top = {f.name for f in fields(cls)} - {"source", "limits", "targets"}
        limit_keys = {f.name for f in fields(Limits)}
        _known(data, top | limit_keys | {"targets"}, source, "")
        values: dict[str, Any] = {"source": source}
        for key in top & data.keys():
            values[key] = _value(key, data[key], source)
        limits = _limits(Limits(), data, source, "")
        per_target: dict[str, Limits] = {}
        targets = data.get("targets", {})
        if not isinstance(targets, Mapping):
            raise ConfigError(
                f"the gate policy {source} has targets = {targets!r}",
                fix='use tables: [targets."x86-avx2"] with the keys to override',
            )
        for name, table in targets.items():
            if not isinstance(table, Mapping):
                raise ConfigError(
                    f"the gate policy {source} has targets.{name} = {table!r}",
                    fix=f'make it a table: [targets."{name}"]',
                )
            _known(table, limit_keys, source, f"targets.{name}.")
            per_target[name] = _limits(limits, table, source, f"targets.{name}.")
        return cls(**values, limits=limits, targets=per_target)


def _known(data: Mapping[str, Any], known: set[str], source: str, prefix: str) -> None:
    for key in data:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {prefix}{near[0]}?" if near else "known keys: " + ", ".join(sorted(known))
            raise ConfigError(f"the gate policy {source} has an unknown key {prefix}{key}", fix=hint)


def _limits(base: Limits, data: Mapping[str, Any], source: str, prefix: str) -> Limits:
    changes: dict[str, Any] = {}
    for f in fields(Limits):
        if f.name not in data:
            continue
        value = data[f.name]
        where = f"{prefix}{f.name}"
        if f.name == "min_metric":
            if not isinstance(value, Mapping) or not all(_number(v) for v in value.values()):
                raise ConfigError(
                    f"the gate policy {source} has {where} = {value!r}",
                    fix=f"give each score a number: {where} = {{ mAP = 0.5 }}",
                )
            changes[f.name] = {str(k): float(v) for k, v in value.items()}
        elif value is False or (_number(value) and value >= 0):
            # false turns a rule off; TOML has no null.
            changes[f.name] = None if value is False else float(value)
        else:
            raise ConfigError(
                f"the gate policy {source} has {where} = {value!r}",
                fix=f"give {where} a number of 0 or more, or false to turn the rule off",
            )
    return replace(base, **changes)


def _value(key: str, value: Any, source: str) -> Any:
    if key == "required_targets":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(
                f"the gate policy {source} has required_targets = {value!r}",
                fix='list target names: required_targets = ["x86-avx2", "arm64"]',
            )
        return tuple(value)
    valid: tuple[str, ...] = SCOPES if key in ("variants", "compare") else SEVERITIES
    if value not in valid:
        raise ConfigError(f"the gate policy {source} has {key} = {value!r}", fix=f"use one of: {', '.join(valid)}")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
