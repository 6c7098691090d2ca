"""fp32's outputs on the samples, the reference every variant (evaluate) and every trial (tune) is compared with.

One loader for both stages, so they feed the same samples in the same order and count the same outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from farm.job import usermetric
from farm.job.data import Dataset
from farm.job.metrics import default_counted
from farm.job.timing import run_all


@dataclass(frozen=True, kw_only=True, slots=True)
class Reference:
    """The feeds built from the dataset for the model's inputs, fp32's outputs for each, in session order, and the
    dataset's labels."""

    feeds: list[dict[str, np.ndarray]]
    outputs: list[list[np.ndarray]]
    names: list[str]
    labels: np.ndarray | None

    @classmethod
    def run(cls, session: Any, dataset: Dataset) -> Reference:
        """Feed every sample to the fp32 ``session``; raises what the runtime raises (the model does not run)."""
        inputs = [i.name for i in session.get_inputs()]
        feeds = [dataset.feed(i, inputs) for i in range(dataset.samples)]
        outputs = run_all(session, feeds)
        return cls(feeds=feeds, outputs=outputs, names=[o.name for o in session.get_outputs()], labels=dataset.labels)

    def unknown(self, requested: Sequence[str] | None) -> list[str]:
        """The names in ``--output`` the model does not output."""
        return [n for n in requested or () if n not in self.names]

    def counted(self, requested: Sequence[str] | None) -> tuple[str, ...]:
        """The outputs a verdict counts: ``--output``'s, else those finite in fp32 (metrics.default_counted)."""
        return tuple(requested) if requested else default_counted(self.names, self.outputs)

    def by_name(self) -> dict[str, Any]:
        """The outputs as a --metric function takes them (usermetric.by_name)."""
        return usermetric.by_name(self.names, self.outputs)
