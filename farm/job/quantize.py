"""Quantization: pre-processing with its fallback, the opset raise per-channel needs, calibration, and what each
variant actually quantized (farm.job.variants holds the recipes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
from onnx import version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)

from farm.job.codec import encode
from farm.job.data import Dataset
from farm.job.graph import GraphIndex, count_nodes
from farm.job.modelfile import EXTERNAL_DATA_ABOVE, has_external_data, save_model
from farm.job.spec import Calibration
from farm.job.variants import RECIPES

# DequantizeLinear has the ``axis`` that per-channel weights need from this opset on.
PER_CHANNEL_OPSET = 13
# ... and opset 13 needs at least this IR version.
PER_CHANNEL_IR = 7


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
            causes = [_one_line(first), _one_line(second)]
            if causes[0] == causes[1]:
                # The same error twice is one cause, said once.
                raise PreProcessFailed(
                    f"quant_pre_process failed with and without symbolic shape inference ({causes[0]})"
                ) from second
            raise PreProcessFailed(
                f"quant_pre_process failed ({causes[0]}), and again with skip_symbolic_shape=True ({causes[1]})"
            ) from second
        return [
            f"quant_pre_process: symbolic shape inference failed ({_one_line(first)}); "
            "retried with skip_symbolic_shape=True, so quantization may miss tensors of unknown shape"
        ]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no message"
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}"


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


class OpsetRaiseFailed(RuntimeError):
    """onnx.version_converter could not bring the model to the opset per-channel quantization needs."""


def raise_opset(source: Path, destination: Path) -> tuple[Path, str | None]:
    """``source`` at opset 13 or above for per-channel quantization: ``(path, note)``, the note saying what changed.

    Returns ``source`` unchanged (note None) when its opset already is; raises OpsetRaiseFailed with the
    converter's reason otherwise.
    """
    model = onnx.load(str(source))
    opset = default_opset(model)
    if opset >= PER_CHANNEL_OPSET:
        return source, None
    try:
        converted = version_converter.convert_version(model, PER_CHANNEL_OPSET)
        # The converter keeps the IR version, which may be too old for opset 13.
        converted.ir_version = max(converted.ir_version, PER_CHANNEL_IR)
        onnx.checker.check_model(converted)
        save_model(converted, destination)
    except Exception as exc:  # the converter raises anything from RuntimeError to its own adapter errors
        raise OpsetRaiseFailed(
            f"per-channel quantization needs opset {PER_CHANNEL_OPSET} (DequantizeLinear axis) and converting this "
            f"opset-{opset} model failed ({_one_line(exc)})"
        ) from exc
    note = (
        f"per-channel variants are quantized from the model converted from opset {opset} to "
        f"{PER_CHANNEL_OPSET} (onnx.version_converter), since DequantizeLinear takes an axis only from there"
    )
    return destination, note


def model_input_names(path: Path) -> list[str]:
    """Graph inputs that are not initializers: what a feed must hold."""
    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def _channel_axes(source: Path, weights: Sequence[str]) -> dict[str, int]:
    """The channel axis onnxruntime's QDQ quantizer gives each of ``weights`` by its consumer (Conv 0, ConvTranspose
    1, Gemm 0 with transB else 1, MatMul 1)."""
    index = GraphIndex.of(onnx.load(str(source), load_external_data=False).graph)
    axes = {}
    for weight in dict.fromkeys(weights):
        # The first node, in graph order, that reads it as its weight and has a channel axis decides.
        for node in index.readers(weight):
            if len(node.input) < 2 or node.input[1] != weight:
                continue
            if node.op_type == "Gemm":
                transposed = any(a.name == "transB" and a.i for a in node.attribute)
                axes[weight] = 0 if transposed else 1
                break
            if node.op_type in ("Conv", "ConvTranspose", "MatMul"):
                axes[weight] = 0 if node.op_type == "Conv" else 1
                break
    return axes


class CalibrationReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds the first ``limit`` samples once, each as quantize_static expects (0-d arrays stay arrays)."""

    def __init__(self, dataset: Dataset, names: Sequence[str], limit: int) -> None:
        self._feeds: Iterator[dict[str, Any]] = (dataset.feed(i, names) for i in range(min(limit, dataset.samples)))

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


def quantize(
    name: str,
    source: Path,
    destination: Path,
    *,
    dataset: Dataset,
    calibration: Calibration,
    exclude: Sequence[str] = (),
    per_channel: bool | None = None,
    reduce_range: bool | None = None,
    seven_bit: Sequence[str] = (),
) -> dict[str, Any]:
    """Write the ``name`` variant of ``source``; returns how it was quantized (prepare.json's ``quantization``).

    The tune stage varies a recipe: ``exclude`` names nodes the quantizer leaves in fp32 (``nodes_to_exclude``; the
    record then lists them as ``nodes_to_exclude``), ``per_channel`` and ``reduce_range``, when given, replace the
    recipe's, and ``seven_bit`` names weight initializers quantized to 7 bits alone (onnxruntime's
    TensorQuantOverrides ``reduce_range``; the record lists them as ``seven_bit``), which keeps the int16 pair sums
    of x86's u8s8 kernels from saturating at those nodes only. ``calibration`` is the method and sample count to
    calibrate with.
    """
    recipe = RECIPES[name]
    if per_channel is not None or reduce_range is not None:
        recipe = replace(
            recipe,
            per_channel=recipe.per_channel if per_channel is None else per_channel,
            reduce_range=recipe.reduce_range if reduce_range is None else reduce_range,
        )
    excluded = list(exclude)
    destination.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "kind": recipe.kind,
        "format": "QDQ" if recipe.kind == "static" else "QOperator",
        "activation_type": recipe.activation,
        "weight_type": recipe.weight,
        "reduce_range": recipe.reduce_range,
        "per_channel": recipe.per_channel,
        "subgraphs": recipe.subgraphs,
        "calibration": None,
        "opset": default_opset(onnx.load(str(source), load_external_data=False)),
        "nodes": None,
    }
    # Large models, and models whose weights were external to begin with, keep them in <variant>.onnx.data.
    external = source.stat().st_size >= EXTERNAL_DATA_ABOVE or has_external_data(source)
    if recipe.kind == "dynamic":
        quantize_dynamic(
            str(source),
            str(destination),
            weight_type=_QUANT_TYPES[recipe.weight],
            reduce_range=recipe.reduce_range,
            per_channel=recipe.per_channel,
            use_external_data_format=external,
            extra_options={"EnableSubgraph": recipe.subgraphs},
            nodes_to_exclude=excluded or None,
        )
        if excluded:
            record["nodes_to_exclude"] = excluded
        record["nodes"] = encode(count_nodes(onnx.load(str(destination), load_external_data=False)))
        return record
    samples = min(calibration.samples, dataset.samples)
    # An override without an axis makes the quantizer treat the weight as per-tensor, so per-channel weights name
    # theirs: 7-bit weights must change the bits only.
    axes = _channel_axes(source, seven_bit) if recipe.per_channel else {}
    overrides = {
        weight: [{"reduce_range": True, **({"axis": axes[weight]} if weight in axes else {})}] for weight in seven_bit
    }
    quantize_static(
        str(source),
        str(destination),
        CalibrationReader(dataset, model_input_names(source), samples),
        quant_format=QuantFormat.QDQ,
        activation_type=_QUANT_TYPES[recipe.activation],
        weight_type=_QUANT_TYPES[recipe.weight],
        reduce_range=recipe.reduce_range,
        per_channel=recipe.per_channel,
        calibrate_method=_CALIBRATION_METHODS[calibration.method],
        use_external_data_format=external,
        nodes_to_exclude=excluded or None,
        extra_options={"TensorQuantOverrides": overrides} if overrides else None,
    )
    record["calibration"] = {"method": calibration.method, "samples": samples}
    if excluded:
        record["nodes_to_exclude"] = excluded
    if overrides:
        record["seven_bit"] = list(overrides)
    record["nodes"] = encode(count_nodes(onnx.load(str(destination), load_external_data=False)))
    return record
