"""How the search puts a model's figures and settings into words, for its progress lines and tune.json's reasons."""

from __future__ import annotations

from collections.abc import Sequence

from farm.job.fuse import Fused, counts
from farm.job.tune.record import QuantConfig
from farm.job.types import Accuracy
from farm.job.variants import RECIPES


def fusion_text(fusions: Sequence[Fused]) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in counts(fusions).items())


def kept_text(config: QuantConfig) -> str:
    """What a config keeps out of plain int8, in words."""
    parts = []
    if config.exclude:
        count = len(config.exclude)
        parts.append(f"{count} node{'' if count == 1 else 's'} kept in fp32")
    if config.seven_bit:
        count = len(config.seven_bit)
        parts.append(f"7-bit weights for {count} node{'' if count == 1 else 's'}")
    if config.reduce_range and not RECIPES[config.variant].reduce_range:
        parts.append("7-bit weights everywhere (reduce_range)")
    return ", ".join(parts) or "nothing kept in fp32"


def speed(speedup: float | None) -> str:
    return "untimed" if speedup is None else f"{speedup:.2f}x"


def figures(accuracy: Accuracy | None, speedup: float | None) -> str:
    if accuracy is None:
        return "no figures"
    text = f"cosine {accuracy.cosine:.4f}"
    if accuracy.top1_agreement is not None:
        text += f", top-1 {accuracy.top1_agreement:.3f}"
    if accuracy.metric is not None:
        text += f", metric {'passed' if accuracy.metric.passed else 'failed'}"
    return text + ("" if speedup is None else f", {speedup:.2f}x")
