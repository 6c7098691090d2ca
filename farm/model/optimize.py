"""``farm optimize``: onnxoptimizer's graph rewriting as a command, with or without constant folding, checked.

Rewriting (fusions, eliminations) is onnxoptimizer's, as in every matrix (farm/model/rewrite.py). Constant folding is
kept apart, as onnxoptimizer's own users asked (onnx/optimizer issue 9): onnxruntime's basic level folds constants and
removes redundant nodes, without hardware-specific layouts. The result is run against the input on the model's data
(or synthetic inputs, which the command says) with the host's onnxruntime, and saved with an IR version that the
selected targets read.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxoptimizer
import onnxruntime as ort

from farm.errors import BadInput, ModelError
from farm.inputs.data import PreparedData
from farm.model.inspect import ModelInfo
from farm.model.rewrite import default_passes, rewrite_model
from farm.targets.config import nearest

# What "matches the input" means: fusions reorder float arithmetic, by about 1e-6 on typical models.
ATOL = 1e-5
RTOL = 1e-5


@dataclass(frozen=True, kw_only=True)
class OptimizeResult:
    path: Path
    passes: tuple[str, ...]
    folded: bool
    ir_version: int
    nodes_before: int
    nodes_after: int
    samples: int
    synthetic: bool
    max_abs: float
    matches: bool

    def summary(self) -> str:
        what = f"onnxoptimizer ({len(self.passes)} passes)" + (" and constant folding" if self.folded else "")
        data = f"{self.samples} {'synthetic ' if self.synthetic else ''}samples"
        verdict = "matches" if self.matches else "DOES NOT match"
        return (
            f"wrote {self.path} (IR {self.ir_version}): {what}, {self.nodes_before} → {self.nodes_after} nodes; "
            f"{verdict} the input on {data} (max abs difference {self.max_abs:.3g}, tolerance {ATOL:g})"
        )


def available_passes() -> list[str]:
    return sorted(onnxoptimizer.get_available_passes())


def check_passes(passes: tuple[str, ...]) -> None:
    known = available_passes()
    for name in passes:
        if name not in known:
            raise BadInput(
                f"--passes names '{name}', which onnxoptimizer {onnxoptimizer.__version__} does not have",
                fix=f"{nearest(name, known)} (farm optimize --list shows them all)",
            )


def optimize_model(
    source: Path,
    destination: Path,
    info: ModelInfo,
    data: PreparedData,
    *,
    passes: tuple[str, ...] | None,
    fold: bool,
    max_ir: int | None,
) -> OptimizeResult:
    chosen = passes if passes is not None else default_passes()
    check_passes(chosen)
    with tempfile.TemporaryDirectory(prefix="farm-optimize-") as scratch:
        rewritten = rewrite_model(source, Path(scratch) / "rewritten.onnx", passes=chosen)
        if not rewritten.rewritten:
            # The model is what onnxoptimizer cannot take (or nests too deep for it): the user's to change, exit 2.
            raise ModelError(
                f"optimizing {source.name} failed because {rewritten.warning}",
                fix="pick other passes with --passes (farm optimize --list)",
            )
        result_path = rewritten.path
        if fold:
            result_path = Path(scratch) / "folded.onnx"
            _fold(rewritten.path, result_path)
        ir_version = _stamp(result_path, destination, like=rewritten.path, max_ir=max_ir)
        for extra in rewritten.extra_files:
            shutil.copyfile(rewritten.path.parent / extra, destination.parent / extra)
    # Each model runs once; both checks read the same outputs.
    pairs = list(zip(_outputs(source, data), _outputs(destination, data), strict=True))
    max_abs = _max_difference(pairs)
    after = onnx.load(str(destination), load_external_data=False)
    return OptimizeResult(
        path=destination,
        passes=chosen,
        folded=fold,
        ir_version=ir_version,
        nodes_before=rewritten.nodes_before,
        nodes_after=len(after.graph.node),
        samples=data.samples,
        synthetic=data.synthetic,
        max_abs=max_abs,
        matches=max_abs <= ATOL or _close(pairs),
    )


def _fold(source: Path, destination: Path) -> None:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(destination)
    ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])


def _stamp(written: Path, destination: Path, *, like: Path, max_ir: int | None) -> int:
    """Save ``written`` at ``destination`` with the rewritten model's IR version, capped at what targets read."""
    model = onnx.load(str(written))
    reference = onnx.load(str(like), load_external_data=False)
    ir_version = reference.ir_version if max_ir is None else min(reference.ir_version, max_ir)
    model.ir_version = ir_version
    destination.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(destination))
    onnx.checker.check_model(str(destination))
    return ir_version


def _outputs(path: Path, data: PreparedData) -> list[list[Any]]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return [session.run(None, {n: np.asarray(data.inputs[n][i]) for n in names}) for i in range(data.samples)]


Pairs = list[tuple[list[Any], list[Any]]]


def _max_difference(pairs: Pairs) -> float:
    worst = 0.0
    for before, after in pairs:
        for a, b in zip(before, after, strict=True):
            a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            if a64.shape != b64.shape:
                return float("inf")
            if a64.size:
                worst = max(worst, float(np.max(np.abs(a64 - b64))))
    return worst


def _close(pairs: Pairs) -> bool:
    """Beyond ATOL, large outputs may still match within RTOL."""
    for before, after in pairs:
        for a, b in zip(before, after, strict=True):
            if not np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=RTOL, atol=ATOL):
                return False
    return True
