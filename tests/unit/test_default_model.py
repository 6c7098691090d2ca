"""The bundled digits model: present, small, loadable by older runtimes, and accurate on its own labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from farm.inputs.data import prepare_data
from farm.job.report import DataSummary
from farm.model.inspect import TensorInfo, inspect_model
from farm.model.rewrite import rewrite_model
from farm.models import default_model


def test_files_exist_and_are_small() -> None:
    bundled = default_model()
    files = [bundled.model, bundled.data, bundled.labels, bundled.model.parent / "README.md"]
    assert all(path.is_file() for path in files)
    assert sum(path.stat().st_size for path in files) < 200_000


def test_model_metadata() -> None:
    info = inspect_model(default_model().model)
    # IR 9 / opset 17, not the host onnx's defaults: target runtimes may be older.
    assert info.ir_version == 9
    assert dict(info.opsets) == {"ai.onnx": 17}
    assert info.inputs == (TensorInfo(name="pixels", dtype="float32", shape=(1, 64)),)
    assert info.outputs == (TensorInfo(name="logits", dtype="float32", shape=(1, 10)),)
    assert not info.external_data


def test_bundled_data_in_contract_form_and_accurate(tmp_path: Path) -> None:
    bundled = default_model()
    info = inspect_model(bundled.model)
    prepared = prepare_data(info, data=bundled.data, labels=bundled.labels, source="bundled")
    assert prepared.summary() == DataSummary(source="bundled", samples=360, synthetic=False, labels=True)
    assert prepared.warnings == ()
    files = prepared.write(tmp_path)
    with np.load(files.inputs, allow_pickle=False) as written:
        pixels = written["pixels"]
    assert pixels.shape == (360, 1, 64) and pixels.dtype == np.float32
    assert files.labels is not None
    labels = np.load(files.labels)
    assert labels.shape == (360,) and set(labels.tolist()) == set(range(10))
    session = ort.InferenceSession(str(bundled.model), providers=["CPUExecutionProvider"])
    predictions = np.array([int(np.argmax(session.run(None, {"pixels": feed})[0])) for feed in pixels])
    assert float(np.mean(predictions == labels)) > 0.9


def test_rewrite_keeps_ir_9(tmp_path: Path) -> None:
    result = rewrite_model(default_model().model, tmp_path / "rewritten.onnx")
    assert result.warning is None
    assert inspect_model(result.path).ir_version == 9
