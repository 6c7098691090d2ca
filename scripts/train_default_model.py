#!/usr/bin/env python3
"""Make farm's bundled default model: a small MLP on scikit-learn's digits, exported with onnx.helper.

    .venv/bin/python scripts/train_default_model.py

Writes farm/models/digits.onnx, digits.npz (the held-out split in contracts.md section 1 form), digits_labels.npy and
README.md. Seeds are fixed, so a rerun with the same library versions gives the same files.
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

OUT = Path(__file__).resolve().parent.parent / "farm" / "models"
SEED = 0
HIDDEN = 32
# IR 9 / opset 17 load on every onnxruntime farm targets; the host's onnx would otherwise stamp IR 14.
IR_VERSION = 9
OPSET = 17
# Digits pixels are 0..16; the model takes them raw and scales inside its first layer, so the bundled inputs stay
# small integers that compress well and the int8 calibration sees the model's real input range.
PIXEL_MAX = 16.0


def train() -> tuple[MLPClassifier, np.ndarray, np.ndarray]:
    digits = load_digits()
    features = digits.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        features, digits.target, test_size=0.2, random_state=SEED, stratify=digits.target
    )
    classifier = MLPClassifier(hidden_layer_sizes=(HIDDEN,), max_iter=600, random_state=SEED)
    classifier.fit(x_train / PIXEL_MAX, y_train)
    return classifier, x_test, y_test.astype(np.int64)


def export(classifier: MLPClassifier) -> onnx.ModelProto:
    w1, w2 = (w.astype(np.float32) for w in classifier.coefs_)
    b1, b2 = (b.astype(np.float32) for b in classifier.intercepts_)
    initializers = [
        numpy_helper.from_array(w1 / np.float32(PIXEL_MAX), "fc1.weight"),
        numpy_helper.from_array(b1, "fc1.bias"),
        numpy_helper.from_array(w2, "fc2.weight"),
        numpy_helper.from_array(b2, "fc2.bias"),
    ]
    nodes = [
        helper.make_node("MatMul", ["pixels", "fc1.weight"], ["fc1.matmul"], name="fc1/MatMul"),
        helper.make_node("Add", ["fc1.matmul", "fc1.bias"], ["fc1.out"], name="fc1/Add"),
        helper.make_node("Relu", ["fc1.out"], ["fc1.relu"], name="fc1/Relu"),
        helper.make_node("MatMul", ["fc1.relu", "fc2.weight"], ["fc2.matmul"], name="fc2/MatMul"),
        helper.make_node("Add", ["fc2.matmul", "fc2.bias"], ["logits"], name="fc2/Add"),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        # Fixed batch 1: the job feeds and times one sample per run.
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="farm-train-default-model",
        producer_version="1",
        doc_string="MLP 64-32-10 on scikit-learn load_digits; input: raw 8x8 pixels 0..16 as float32 [1, 64]",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def accuracy(model_bytes: bytes, inputs: np.ndarray, labels: np.ndarray) -> float:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    predictions = [int(np.argmax(session.run(None, {"pixels": feed})[0])) for feed in inputs]
    return float(np.mean(np.asarray(predictions) == labels))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed, but with a fixed timestamp so reruns give identical bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def main() -> int:
    classifier, x_test, y_test = train()
    model = export(classifier)
    model_bytes = model.SerializeToString()
    # Contract form: axis 0 is the sample, each [i] one feed of the model's shape [1, 64].
    inputs = x_test.reshape(-1, 1, 64).astype(np.float32)
    held_out = accuracy(model_bytes, inputs, y_test)
    if held_out <= 0.9:
        print(f"held-out accuracy {held_out:.4f} is too low for a default model", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "digits.onnx").write_bytes(model_bytes)
    write_npz(OUT / "digits.npz", {"pixels": inputs})
    np.save(OUT / "digits_labels.npy", y_test, allow_pickle=False)
    sizes = {name: (OUT / name).stat().st_size for name in ("digits.onnx", "digits.npz", "digits_labels.npy")}
    digest = hashlib.sha256(model_bytes).hexdigest()
    (OUT / "README.md").write_text(readme(held_out, len(y_test), sizes, digest))
    print(f"held-out accuracy {held_out:.4f} on {len(y_test)} samples; sizes {sizes}")
    return 0


def readme(held_out: float, samples: int, sizes: dict[str, int], digest: str) -> str:
    listing = "\n".join(f"| `{name}` | {size:,} |" for name, size in sizes.items())
    return f"""# farm's bundled default model

`farm run` without a model uses these files, so that farm shows what it does before you bring your own model.
They are made by `scripts/train_default_model.py` (fixed seeds; rerun it to make them again):

- Data: scikit-learn's `load_digits` (1,797 images of 8x8 pixels, values 0..16, 10 classes), split 80/20 with
  `train_test_split(test_size=0.2, random_state={SEED}, stratify=y)`.
- Model: scikit-learn `MLPClassifier(hidden_layer_sizes=({HIDDEN},), random_state={SEED})` trained on pixels / 16,
  exported with `onnx.helper` as MatMul → Add → Relu → MatMul → Add. The 1/16 scaling is folded into the first
  weight, so the model takes raw pixels.
- `digits.onnx`: IR version {IR_VERSION}, opset {OPSET}; input `pixels` float32 `[1, 64]`, output `logits` float32
  `[1, 10]`. sha256 `{digest}`.
- `digits.npz`: the {samples} held-out samples as `pixels`, shape `({samples}, 1, 64)` float32 (axis 0 = sample,
  docs/contracts.md section 1).
- `digits_labels.npy`: their class indexes, int64 shape `({samples},)`.

Held-out accuracy (onnxruntime, CPUExecutionProvider): **{held_out:.4f}** ({round(held_out * samples)}/{samples}).

| file | bytes |
|---|---|
{listing}
"""


if __name__ == "__main__":
    sys.exit(main())
