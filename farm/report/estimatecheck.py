"""How well a target's estimated latencies predict measured ones (scripts/bench-estimate): the same variants run on a
timed target (native or masked) and on an estimated one (under farm's counting QEMU), compared as speedups over fp32.

Only speedups are compared: an estimate is a throughput bound, so its milliseconds are not the target's, and what a
recommendation needs is whether a variant is faster than fp32, and by how much. Two naive predictors run beside the
estimate on the same counts: the raw instruction count and QEMU's wall time; an estimate worth trusting beats both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from farm.job.report import TargetResult

# Trust goals (docs/contracts.md section 2; issue 19): per-model Spearman, sign agreement, median speedup error.
MIN_SPEARMAN = 0.8
MIN_SIGN_AGREEMENT = 0.9
MAX_MEDIAN_ERROR = 0.25


@dataclass(frozen=True, kw_only=True)
class Pair:
    """One variant's speedup over fp32 as measured, as estimated, and as the two naive predictors say."""

    variant: str
    measured: float
    estimated: float
    count: float
    qemu_time: float


@dataclass(frozen=True, kw_only=True)
class ModelCheck:
    model: str
    pairs: tuple[Pair, ...]

    def spearman(self, predictor: str = "estimated") -> float:
        return spearman([p.measured for p in self.pairs], [getattr(p, predictor) for p in self.pairs])


@dataclass(frozen=True, kw_only=True)
class Summary:
    spearman: float
    variants: int
    models: int
    sign_agreement: float
    median_error: float
    error_p90: float
    naive_count: float
    naive_qemu_time: float

    @property
    def trusted(self) -> bool:
        return (
            self.models >= 5
            and self.spearman >= MIN_SPEARMAN
            and self.sign_agreement >= MIN_SIGN_AGREEMENT
            and self.median_error <= MAX_MEDIAN_ERROR
            and self.spearman > max(self.naive_count, self.naive_qemu_time)
        )

    def line(self) -> str:
        return (
            f"estimate vs native: spearman {self.spearman:.2f} over {self.variants} variants on {self.models} models; "
            f"sign agreement {self.sign_agreement:.0%}; speedup error median {self.median_error:.0%}; "
            f"naive: count {self.naive_count:.2f}, qemu time {self.naive_qemu_time:.2f}"
        )


def pairs(timed: TargetResult, estimated: TargetResult) -> tuple[Pair, ...]:
    """Every variant both targets have a figure for, as speedups over each target's own fp32."""
    fp32_t, fp32_e = timed.variant("fp32"), estimated.variant("fp32")
    if fp32_t is None or fp32_e is None or fp32_t.latency_ms is None or fp32_e.latency_ms is None:
        return ()
    base_count = fp32_e.instructions
    found = []
    for variant in timed.variants:
        other = estimated.variant(variant.name)
        if variant.name == "fp32" or other is None or variant.latency_ms is None or other.latency_ms is None:
            continue
        if other.timing != "estimated" or other.instructions is None or base_count is None:
            continue
        found.append(
            Pair(
                variant=variant.name,
                measured=fp32_t.latency_ms.p50 / variant.latency_ms.p50,
                estimated=fp32_e.latency_ms.p50 / other.latency_ms.p50,
                count=sum(base_count.per_run.values()) / max(1, sum(other.instructions.per_run.values())),
                qemu_time=base_count.qemu_wall_ms / other.instructions.qemu_wall_ms,
            )
        )
    return tuple(found)


def summarize(checks: Sequence[ModelCheck]) -> Summary:
    usable = [c for c in checks if len(c.pairs) >= 2]
    if not usable:
        raise ValueError("no model gave two or more variants with both a measured and an estimated latency")
    every = [p for c in usable for p in c.pairs]
    errors = [abs(p.estimated / p.measured - 1.0) for p in every]
    return Summary(
        spearman=min(c.spearman() for c in usable),
        variants=len(every),
        models=len(usable),
        sign_agreement=sum((p.estimated > 1.0) == (p.measured > 1.0) for p in every) / len(every),
        median_error=float(np.median(errors)),
        error_p90=float(np.percentile(errors, 90)),
        naive_count=min(c.spearman("count") for c in usable),
        naive_qemu_time=min(c.spearman("qemu_time") for c in usable),
    )


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation, ties ranked by their mean rank; 0 when either side does not vary."""
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0.0 or rb.std() == 0.0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    order = array.argsort(kind="stable")
    ranks = np.empty(len(array), dtype=np.float64)
    ranks[order] = np.arange(len(array), dtype=np.float64)
    for value in np.unique(array):
        tied = array == value
        ranks[tied] = ranks[tied].mean()
    return ranks
