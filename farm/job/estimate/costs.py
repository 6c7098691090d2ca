"""Instruction counts to time: the per-CPU cost models (costs.json) and what scripts/bench-estimate found of them
(trust.json), both shipped with the job."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from farm.job.metrics import latency_from_rounds
from farm.job.report import SpeedEstimate
from farm.job.types import Latency

HERE = Path(__file__).parent
COSTS_FILE = HERE / "costs.json"
TRUST_FILE = HERE / "trust.json"
# The classes the counting plugin writes (farm/host/native/insncount.c); a cost model prices each of them.
CLASSES = ("int_simd_mul", "fp_simd_fma", "vector_other", "load", "store", "scalar", "branch")


@dataclass(frozen=True, kw_only=True, slots=True)
class CostModel:
    name: str
    arch: str
    qemu_cpu: str
    ghz: float
    cycles: Mapping[str, float]

    def seconds(self, counts: Mapping[str, int]) -> float:
        """One run's time on this core if it issued every counted instruction at its class's throughput."""
        unknown = sorted(set(counts) - set(self.cycles))
        if unknown:
            raise ValueError(f"cost model {self.name} prices no instruction class {', '.join(unknown)}")
        cycles = sum(n * self.cycles[c] for c, n in counts.items())
        return cycles / (self.ghz * 1e9)

    def latency(self, runs: Sequence[Mapping[str, int]]) -> Latency:
        """The runs' estimated times as a Latency: one round per run (counts barely differ between runs)."""
        return latency_from_rounds([[self.seconds(c)] for c in runs])


def cost_models(path: Path = COSTS_FILE) -> dict[str, CostModel]:
    models = json.loads(path.read_text())["models"]
    return {
        name: CostModel(
            name=name, arch=m["arch"], qemu_cpu=m["qemu_cpu"], ghz=float(m["ghz"]), cycles=dict(m["cycles"])
        )
        for name, m in models.items()
    }


def cost_model_for(arch: str, qemu_cpu: str | None) -> CostModel | None:
    """The cost model of the core QEMU emulates for this target; None when farm has none for it."""
    if qemu_cpu is None:
        return None
    return next((m for m in cost_models().values() if m.arch == arch and m.qemu_cpu.lower() == qemu_cpu.lower()), None)


def trust(model: CostModel, path: Path = TRUST_FILE) -> SpeedEstimate:
    """What scripts/bench-estimate recorded of this cost model: untrusted when it recorded nothing."""
    entry = json.loads(path.read_text())["entries"].get(f"{model.arch}/{model.name}")
    if entry is None:
        return SpeedEstimate(
            cost_model=model.name, trusted=False, error_p90=None, basis="not validated: run scripts/bench-estimate"
        )
    error = entry.get("error_p90")
    return SpeedEstimate(
        cost_model=model.name,
        trusted=bool(entry["trusted"]),
        error_p90=None if error is None else float(error),
        basis=str(entry["basis"]),
    )
