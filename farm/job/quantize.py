"""Quantization recipes: the candidate variant table, pre-processing with its fallback, and calibration."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)

from farm.job.data import Dataset
from farm.job.spec import Calibration


@dataclass(frozen=True, kw_only=True, slots=True)
class Recipe:
    kind: Literal["static", "dynamic"]
    activation: Literal["uint8", "int8"]
    weight: Literal["uint8", "int8"]
    reduce_range: bool = False


# Per-tensor only: per-channel on opset < 13 writes DequantizeLinear(axis) that ORT rejects (FINDINGS.md).
RECIPES: Mapping[str, Recipe] = {
    "s8s8-qdq": Recipe(kind="static", activation="int8", weight="int8"),
    "u8s8-qdq": Recipe(kind="static", activation="uint8", weight="int8"),
    # 7-bit weights keep a VPMADDUBSW pair sum (2 * 255 * 63) below the int16 limit: the classic AVX2 remedy.
    "u8s8-qdq-rr": Recipe(kind="static", activation="uint8", weight="int8", reduce_range=True),
    "u8u8-qdq": Recipe(kind="static", activation="uint8", weight="uint8"),
    # Dynamic quantization always quantizes activations to uint8.
    "u8s8-dynamic": Recipe(kind="dynamic", activation="uint8", weight="int8"),
}

_QUANT_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
_CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class PreProcessFailed(RuntimeError):
    """quant_pre_process failed with and without symbolic shape inference."""


def pre_process(source: Path, destination: Path, *, run: Callable[..., None] | None = None) -> list[str]:
    """``quant_pre_process`` ``source`` into ``destination``; returns the warnings to record.

    Symbolic shape inference needs sympy and still fails on some real models (an AssertionError in ``_infer_Concat``),
    so a failure is retried once with ``skip_symbolic_shape=True``. ``run`` stands in for quant_pre_process in tests.
    """
    run = run or quant_pre_process
    try:
        run(str(source), str(destination))
        return []
    except Exception as first:
        try:
            run(str(source), str(destination), skip_symbolic_shape=True)
        except Exception as second:
            raise PreProcessFailed(
                f"quant_pre_process failed ({_one_line(first)}), and again with skip_symbolic_shape=True "
                f"({_one_line(second)})"
            ) from second
        return [
            f"quant_pre_process: symbolic shape inference failed ({_one_line(first)}); "
            "retried with skip_symbolic_shape=True, so quantization may miss tensors of unknown shape"
        ]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no message"
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}"


def model_input_names(path: Path) -> list[str]:
    """Graph inputs that are not initializers: what a feed must hold."""
    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


class CalibrationReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds the first ``limit`` samples once, each as quantize_static expects (0-d arrays stay arrays)."""

    def __init__(self, dataset: Dataset, names: Sequence[str], limit: int) -> None:
        self._feeds: Iterator[dict[str, Any]] = (dataset.feed(i, names) for i in range(min(limit, dataset.samples)))

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


def quantize(
    name: str, source: Path, destination: Path, *, dataset: Dataset, calibration: Calibration
) -> dict[str, Any]:
    """Write the ``name`` variant of ``source``; returns how it was quantized (prepare.json's ``quantization``)."""
    recipe = RECIPES[name]
    destination.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "kind": recipe.kind,
        "format": "QDQ" if recipe.kind == "static" else "QOperator",
        "activation_type": recipe.activation,
        "weight_type": recipe.weight,
        "reduce_range": recipe.reduce_range,
        "per_channel": False,
        "calibration": None,
    }
    if recipe.kind == "dynamic":
        quantize_dynamic(
            str(source),
            str(destination),
            weight_type=_QUANT_TYPES[recipe.weight],
            reduce_range=recipe.reduce_range,
            per_channel=False,
        )
        return record
    samples = min(calibration.samples, dataset.samples)
    quantize_static(
        str(source),
        str(destination),
        CalibrationReader(dataset, model_input_names(source), samples),
        quant_format=QuantFormat.QDQ,
        activation_type=_QUANT_TYPES[recipe.activation],
        weight_type=_QUANT_TYPES[recipe.weight],
        reduce_range=recipe.reduce_range,
        per_channel=False,
        calibrate_method=_CALIBRATION_METHODS[calibration.method],
    )
    record["calibration"] = {"method": calibration.method, "samples": samples}
    return record
