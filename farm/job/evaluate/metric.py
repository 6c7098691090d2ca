"""The user's ``--metric``, loaded once and called on each variant's outputs against fp32's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from farm.job import usermetric
from farm.job.spec import MetricRef
from farm.job.types import MetricScore

Loaded: TypeAlias = usermetric.UserMetric | usermetric.UserMetricError


def load(ref: MetricRef) -> Loaded:
    """The metric function, or why it cannot be loaded: that failure becomes every variant's error."""
    try:
        return usermetric.load(ref.file, ref.function)
    except usermetric.UserMetricError as exc:
        return exc


@dataclass(frozen=True, kw_only=True, slots=True)
class Metric:
    """A loaded (or failed) metric, with fp32's outputs by name, the model's output names and the labels."""

    function: str
    loaded: Loaded
    reference: Mapping[str, Any]
    names: Sequence[str]
    labels: np.ndarray | None

    def score(self, outputs: list[list[np.ndarray]]) -> MetricScore:
        """The metric's verdict on ``outputs``; raises UserMetricError when it cannot give one."""
        if isinstance(self.loaded, usermetric.UserMetricError):
            raise self.loaded
        candidate = usermetric.by_name(self.names, outputs)
        return usermetric.score(self.loaded, self.function, self.reference, candidate, self.labels)
