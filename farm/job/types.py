"""The figures the job measures and the report carries (docs/contracts.md section 2): one definition on both
sides of the container boundary.

Standard library only: ``farm report`` and ``farm gate`` read these from JSON and must not load onnx for it
(tests/unit/test_layers.py). The job computes them in farm.job.metrics (numpy) and farm.job.graph (onnx).

Written and read by farm.job.codec (``encode``/``decode``), like every contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from farm.job.codec import keyed

# Why a variant's timing stopped before its target's last round (docs/contracts.md section 2, adaptive timing): it
# already had a round faster and one slower than every baseline, so no claim could hold any more ("decided"), or it is
# out of tolerance, so no claim is ever made on it and a few rounds give its p50.
StopReason = Literal["decided", "out-of-tolerance"]
# The compute whose int8 kernels are the point of quantizing; counted in every subgraph too.
QUANTIZABLE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "Attention"})


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputAccuracy:
    """One output against fp32's. ``counted`` outputs make the variant's verdict; the others are shown only."""

    name: str
    counted: bool
    cosine: float | None
    max_abs: float | None
    top1_agreement: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricScore:
    """What the user's ``--metric`` function returned for one variant."""

    scores: Mapping[str, float]
    passed: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class Accuracy:
    """The variant's verdict figures: the worst counted output's cosine and top-1, the largest max_abs."""

    cosine: float
    max_abs: float
    top1_agreement: float | None
    accuracy: float | None
    outputs: tuple[OutputAccuracy, ...] = ()
    worst_output: str | None = None
    metric: MetricScore | None = None

    def within(self, *, cosine: float, top1_agreement: float) -> bool:
        """The verdict: the user's metric when there is one, else cosine and top-1 against the tolerance; a
        counted output whose shape changed against fp32 is out of it."""
        if self.metric is not None:
            return self.metric.passed
        if any(o.counted and o.cosine is None for o in self.outputs):
            return False
        return self.cosine >= cosine and (self.top1_agreement is None or self.top1_agreement >= top1_agreement)


@dataclass(frozen=True, kw_only=True, slots=True)
class Latency:
    """Percentiles over every timed run, and the p50 of each round, whose spread is the run's own noise."""

    p50: float
    p90: float
    p99: float
    rounds: tuple[float, ...] = ()
    # The rounds' range: the run's own noise, which a speed claim must beat. Written, never read (derived).
    spread: float = field(init=False)
    # Round i ran in the same stretch of time as round i of every other interleaved variant of the target.
    interleaved: bool = False
    # Timed in fewer rounds than the target's others, and why (adaptive timing); its rounds are ``rounds``. Such a
    # latency makes no speed claim either way (farm.job.recommend.faster). None: every round.
    stopped: StopReason | None = keyed(omit="none", default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spread", round(max(self.rounds) - min(self.rounds), 4) if self.rounds else 0.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeCount:
    """Quantizable nodes of a model, and how many of them run int8, in all and inside subgraphs."""

    quantizable: int
    quantized: int
    quantizable_in_subgraphs: int
    quantized_in_subgraphs: int

    def not_quantized(self) -> str | None:
        """Why a variant with this count is an fp32 model under an int8 name, or None when it quantized something."""
        if self.quantized:
            return None
        kinds = ", ".join(sorted(QUANTIZABLE_OPS))
        if not self.quantizable:
            return f"not quantized: the model has none of the nodes int8 kernels exist for ({kinds})"
        if self.quantizable_in_subgraphs == self.quantizable:
            return (
                f"not quantized: all {self.quantizable} quantizable nodes sit inside If/Loop/Scan bodies, which "
                "this quantizer does not enter, so it would run fp32 under an int8 name"
            )
        return f"not quantized: none of the model's {self.quantizable} quantizable nodes ({kinds}) was quantized"
