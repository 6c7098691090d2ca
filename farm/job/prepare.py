"""Stage ``prepare``: the target-independent artifacts (artifacts/pre.onnx, artifacts/<variant>.onnx, prepare.json).

It times nothing, so its candidates are quantized in worker processes (farm.job.pool) over the container's cores, as
many as its memory holds (calibration_bytes says the rule); prepare.json keeps the candidates' order whatever order
they finish in, and a worker that dies costs only the variant it was quantizing."""

from __future__ import annotations

import json
import logging
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from farm.job import capacity
from farm.job.data import Dataset, DatasetError
from farm.job.modelfile import data_files, model_size
from farm.job.pool import Answer, Lost, run_pool
from farm.job.quantize import OpsetRaiseFailed, PreProcessFailed, pre_process, quantize, raise_opset
from farm.job.result import error_text, write_json_atomic
from farm.job.spec import Spec
from farm.job.variants import PRE_PROCESSED, PRE_PROCESSED_OPSET13, RECIPES

SCHEMA = "farm.prepare/1"
STOPPED = "the job ended while quantizing this variant (it crashed or was killed)"
LOST = "{why}; the other variants went on"
# Beside calibration, a worker holds the model a few times over: the quantizer's copy, the calibration's augmented
# model (written to /tmp, a tmpfs that counts against the container's memory) and the quantized model it writes.
MODEL_COPIES = 4
WORKER_FLOOR = 128 << 20
log = logging.getLogger("farm.job")


class _State:
    """prepare.json as it stands, rewritten after each change so that a crash keeps what was done; its variants
    always in the candidates' order."""

    def __init__(self, spec: Spec, out: Path) -> None:
        self.order, self.out = spec.candidates, out
        self.warnings: list[str] = []
        self.records: dict[str, dict[str, Any]] = {}

    def set(self, name: str, status: str, error: str | None, quantization: Any = None) -> None:
        self.records[name] = {"status": status, "error": error, "quantization": quantization}
        self.save()

    def save(self) -> None:
        state = self.document()
        write_json_atomic(self.out / "prepare.json", state)
        # A copy travels with the artifacts, so evaluate can say why a variant has no model.
        write_json_atomic(self.out / "artifacts" / "prepare.json", state)

    def document(self) -> dict[str, Any]:
        variants = {name: self.records[name] for name in self.order if name in self.records}
        return {"schema": SCHEMA, "warnings": list(self.warnings), "variants": variants}


def run_prepare(spec: Spec, out: Path) -> dict[str, Any]:
    """Quantize every candidate; one variant's failure is recorded and the others go on."""
    artifacts = out / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    state = _State(spec, out)
    state.save()
    try:
        dataset = Dataset.load(spec.inputs, spec.labels)
    except DatasetError as exc:
        for name in spec.candidates:
            state.set(name, "failed", str(exc))
        return state.document()

    source = artifacts / PRE_PROCESSED
    try:
        state.warnings.extend(pre_process(spec.source_model, source))
    except PreProcessFailed as exc:
        state.warnings.append(f"{exc}; quantizing the model without pre-processing")
        source.unlink(missing_ok=True)  # not what the variants are quantized from (farm.job.variants.quantized_from)
        source = spec.source_model
    state.save()
    sources = _sources(spec, source, artifacts, state)
    tasks: list[str] = []
    for name in spec.candidates:
        made = sources[name]
        if isinstance(made, OpsetRaiseFailed):
            state.set(name, "failed", str(made))
        else:
            tasks.append(name)
    count, rule = capacity.worker_count(len(tasks), per_worker=_worker_bytes(spec, source, dataset))
    log.info("prepare: %d variant(s) in %d process(es) (%s)", len(tasks), count, rule)
    quantize_one = partial(_quantize, sources=sources, artifacts=artifacts, dataset=dataset, spec=spec)
    if count <= 1:
        for name in tasks:
            _start(state, name)
            _done(state, name, artifacts, quantize_one(name))
    else:
        run_pool(
            count,
            [partial(_encoded, quantize_one, name) for name in tasks],
            on_start=lambda task: _start(state, tasks[task]),
            on_done=lambda task, answer: _done(state, tasks[task], artifacts, answer),
        )
    shutil.rmtree(out / "quantizing", ignore_errors=True)
    return state.document()


def _sources(spec: Spec, source: Path, artifacts: Path, state: _State) -> dict[str, Path | OpsetRaiseFailed]:
    """Each candidate's source: pre.onnx, or for per-channel variants the model raised to opset 13 or above, made
    once (or the reason it could not be, which fails those variants)."""
    per_channel: Path | OpsetRaiseFailed | None = None
    if any(RECIPES[name].per_channel for name in spec.candidates):
        try:
            per_channel, note = raise_opset(source, artifacts / PRE_PROCESSED_OPSET13)
            if note:
                state.warnings.append(note)
        except OpsetRaiseFailed as exc:
            per_channel = exc
    return {
        name: per_channel if RECIPES[name].per_channel and per_channel is not None else source
        for name in spec.candidates
    }


def _quantize(
    name: str, *, sources: dict[str, Path | OpsetRaiseFailed], artifacts: Path, dataset: Dataset, spec: Spec
) -> dict[str, Any]:
    """Candidate ``name``'s record: how it was quantized, or why it was not."""
    source = sources[name]
    assert isinstance(source, Path)
    folder = artifacts.parent / "quantizing" / name
    try:
        private = _linked(source, folder)
        record = quantize(name, private, artifacts / f"{name}.onnx", dataset=dataset, calibration=spec.calibration)
    except Exception as exc:  # any quantizer failure belongs to this variant alone
        return {"status": "failed", "error": error_text(exc), "quantization": None}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"status": "ok", "error": None, "quantization": record}


def _linked(source: Path, folder: Path) -> Path:
    """``source`` and its external data, linked into a folder of the variant's own: onnxruntime's quantizer writes
    a shape-inferred copy beside the model it reads (``<name>-inferred.onnx``) and deletes it, which two variants
    quantized at once from the same file would race on."""
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(source), load_external_data=False)
    for name in (source.name, *data_files(model)):
        link = folder / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to((source.parent / name).resolve())
    return folder / source.name


def _encoded(quantize_one: partial[dict[str, Any]], name: str) -> bytes:
    """In a worker: the record, as bytes for the pipe."""
    return json.dumps(quantize_one(name)).encode()


def _start(state: _State, name: str) -> None:
    log.info("prepare: %s starting", name)
    # Overwritten when it ends; what a crash inside the quantizer (or a kill) leaves behind.
    state.set(name, "failed", STOPPED)


def _done(state: _State, name: str, artifacts: Path, answer: dict[str, Any] | Answer) -> None:
    if isinstance(answer, Lost):
        record: dict[str, Any] = {"status": "failed", "error": LOST.format(why=answer.why), "quantization": None}
    elif isinstance(answer, bytes):
        record = json.loads(answer)
    else:
        record = answer
    if record["status"] != "ok":
        # What the quantizer (or a worker that died) left half written.
        (artifacts / f"{name}.onnx").unlink(missing_ok=True)
        (artifacts / f"{name}.onnx.data").unlink(missing_ok=True)
    state.set(name, record["status"], record["error"], record["quantization"])
    log.info("prepare: %s %s", name, record["status"])


def _worker_bytes(spec: Spec, source: Path, dataset: Dataset) -> int:
    """One worker's memory: the model MODEL_COPIES times over and its calibration (calibration_bytes)."""
    size = model_size(source) or 0
    samples = min(spec.calibration.samples, dataset.samples)
    return max(WORKER_FLOOR, MODEL_COPIES * size + samples * activation_bytes(source, dataset))


def activation_bytes(source: Path, dataset: Dataset) -> int:
    """The bytes of every tensor the model computes for one sample, from shape inference at the data's shapes.

    onnxruntime's calibrators keep every calibrated tensor of every calibration sample until they reduce them (its
    MinMax and histogram calibrators collect all outputs of the augmented model first), so this, times the samples,
    is what calibration holds. A tensor whose shape stays unknown counts as large as the largest known one."""
    try:
        model = onnx.load(str(source), load_external_data=False)
        for given in model.graph.input:
            if given.name in dataset.inputs:
                shape = dataset.inputs[given.name].shape[1:]
                dims = given.type.tensor_type.shape.dim
                if len(dims) == len(shape):
                    for dim, value in zip(dims, shape, strict=True):
                        dim.Clear()
                        dim.dim_value = int(value)
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # an unknown size counts as the floor's; the stage goes on
        log.info("prepare: the model's tensor sizes are unknown (%s)", error_text(exc))
        return 0
    sizes: list[int | None] = [_tensor_bytes(info) for info in (*inferred.graph.value_info, *inferred.graph.output)]
    known = [size for size in sizes if size is not None]
    largest = max(known, default=0)
    return sum(known) + largest * (len(sizes) - len(known))


def _tensor_bytes(info: onnx.ValueInfoProto) -> int | None:
    kind = info.type.tensor_type
    if not kind.HasField("shape") or any(not dim.HasField("dim_value") for dim in kind.shape.dim):
        return None
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 4
    return int(np.prod([dim.dim_value for dim in kind.shape.dim], dtype=np.int64)) * itemsize
