"""Small, real ONNX models (and matching data) for tests, written with ``onnx.helper``.

Every builder writes opset 17 with an explicit IR version (``IR_VERSION``): onnx >= 1.23 would otherwise write IR 14,
which onnxruntime 1.31 refuses ("Unsupported model IR version: 14, max supported IR version: 13").

The public surface is stable; other test modules import it:

- ``ModelData``: what a builder returns: the model path, the inputs as one array per input name (axis 0 = sample,
  ``array[i]`` is exactly one feed) and int64 labels of shape ``(N,)``. ``save(dir)`` writes ``inputs.npz`` and
  ``labels.npy`` next to each other.
- ``make_mlp_classifier``: a two-layer MLP, input ``x`` of shape ``[1, in_features]``, output ``logits``.
- ``make_saturating_classifier``: a one-layer classifier whose U8S8/S8S8 int8 kernels saturate on x86 without VNNI
  (VPMADDUBSW), and whose U8U8 kernels do not.
- ``make_saturating_cnn``: a CNN whose classifier head saturates in U8S8/S8S8 kernels without VNNI, and whose
  head's weights need all 8 bits, so that only fp32 there (not 7-bit weights) restores it on such a tier.
- ``make_hardswish_cnn``: a MobileNetV3-style CNN whose hardswish the exporter wrote out as Add/Clip/Mul/Div (and
  as x * hardsigmoid written out), for the fusion of exporter patterns.
- ``make_scalar_input_classifier``: an MLP with a second, 0-d input ``temperature``.
- ``make_unloadable_model``: an MLP stamped with an IR version no runtime reads.
- ``write_job_spec``: a ``farm.spec/1`` (docs/contracts.md section 1) for a ``ModelData`` saved in the same directory.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8  # the IR that opset 17 came with; onnxruntime 1.31 reads up to 13
OPSET = 17


@dataclass(frozen=True, kw_only=True)
class ModelData:
    path: Path
    inputs: dict[str, np.ndarray]
    labels: np.ndarray

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write ``inputs.npz`` and ``labels.npy`` into ``directory``; returns both paths."""
        directory.mkdir(parents=True, exist_ok=True)
        inputs_path, labels_path = directory / "inputs.npz", directory / "labels.npy"
        np.savez(inputs_path, **self.inputs)  # type: ignore[arg-type]  # numpy's stub confuses **arrays with allow_pickle
        np.save(labels_path, self.labels)
        return inputs_path, labels_path


def _add_classifier_head(
    rng: np.random.Generator,
    channels: int,
    current: str,
    initializers: list[onnx.TensorProto],
    nodes: list[onnx.NodeProto],
) -> None:
    """Pool, flatten and a 10-class Gemm ``classifier`` after ``current`` (a CNN's last feature map)."""
    fc = (rng.standard_normal((10, channels)) / np.sqrt(channels)).astype(np.float32)
    initializers += [numpy_helper.from_array(fc, "fc"), numpy_helper.from_array(np.zeros(10, np.float32), "fc_b")]
    nodes += [
        helper.make_node("GlobalAveragePool", [current], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc", "fc_b"], ["logits"], transB=1, name="classifier"),
    ]


def _image_classifier(
    name: str,
    path: Path,
    rng: np.random.Generator,
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    *,
    samples: int,
    size: int,
    classes: int = 10,
) -> ModelData:
    """Save ``nodes`` as an image classifier (input ``x`` ``[1, 3, size, size]``, output ``logits``) and draw its
    samples (_image_samples)."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        initializer=initializers,
    )
    _save(graph, path)
    return _image_samples(path, rng, samples=samples, size=size)


def _conv_relu(
    index: int,
    current: str,
    w: np.ndarray,
    b: np.ndarray,
    initializers: list[onnx.TensorProto],
    nodes: list[onnx.NodeProto],
    **conv: Any,
) -> str:
    """Appends layer ``index``: ``conv{index}`` (weights ``w{index}``, bias ``b{index}``, 3x3 padded by 1, ``conv``'s
    other attributes) and ``relu{index}``; returns the Relu's output, ``r{index}``."""
    initializers += [numpy_helper.from_array(w, f"w{index}"), numpy_helper.from_array(b, f"b{index}")]
    nodes += [
        helper.make_node(
            "Conv",
            [current, f"w{index}", f"b{index}"],
            [f"c{index}"],
            name=f"conv{index}",
            **{"pads": [1, 1, 1, 1], **conv},
        ),
        helper.make_node("Relu", [f"c{index}"], [f"r{index}"], name=f"relu{index}"),
    ]
    return f"r{index}"


def _save(graph: onnx.GraphProto, path: Path, *, ir_version: int = IR_VERSION, check: bool = True) -> Path:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=ir_version, producer_name="farm-tests"
    )
    if check:
        onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _mlp_graph(in_features: int, hidden: int, classes: int, seed: int) -> tuple[onnx.GraphProto, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((in_features, hidden)) / np.sqrt(in_features)).astype(np.float32)
    b1 = (0.1 * rng.standard_normal(hidden)).astype(np.float32)
    w2 = (rng.standard_normal((hidden, classes)) / np.sqrt(hidden)).astype(np.float32)
    b2 = (0.1 * rng.standard_normal(classes)).astype(np.float32)
    weights = [w1, b1, w2, b2]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
            helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
            helper.make_node("Relu", ["h1"], ["h"], name="relu"),
            helper.make_node("MatMul", ["h", "w2"], ["l0"], name="fc2"),
            helper.make_node("Add", ["l0", "b2"], ["logits"], name="fc2_bias"),
        ],
        "mlp_classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        initializer=[numpy_helper.from_array(a, n) for a, n in zip(weights, ["w1", "b1", "w2", "b2"], strict=True)],
    )
    return graph, weights


def _mlp_forward(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    w1, b1, w2, b2 = weights
    return np.asarray(np.maximum(x @ w1 + b1, 0.0) @ w2 + b2)


def make_mlp_classifier(
    path: Path, in_features: int = 64, hidden: int = 32, classes: int = 10, seed: int = 0, *, samples: int = 32
) -> ModelData:
    """MatMul-Add-Relu-MatMul-Add; ``labels`` are the fp32 argmax, so fp32 accuracy is 1.0.

    The inputs are the ``samples`` draws (of 8 times as many) with the widest fp32 top-2 margin, so int8 rounding
    (a cosine near 0.9999) does not flip a top-1 and every int8 variant lands within the default tolerance.
    """
    graph, weights = _mlp_graph(in_features, hidden, classes, seed)
    _save(graph, path)
    pool = np.random.default_rng(seed + 1).standard_normal((8 * samples, 1, in_features)).astype(np.float32)
    logits = np.stack([_mlp_forward(pool[i], weights)[0] for i in range(len(pool))])
    top2 = np.sort(logits, axis=1)[:, -2:]
    margin = (top2[:, 1] - top2[:, 0]) / np.linalg.norm(logits, axis=1)
    x = pool[np.sort(np.argsort(margin)[-samples:])]
    labels = np.array([int(np.argmax(_mlp_forward(x[i], weights))) for i in range(samples)], dtype=np.int64)
    return ModelData(path=path, inputs={"x": x}, labels=labels)


def make_unloadable_model(path: Path, ir_version: int = 99) -> ModelData:
    """The MLP with an IR version no runtime supports; onnxruntime refuses it at load time."""
    graph, _ = _mlp_graph(64, 32, 10, 0)
    _save(graph, path, ir_version=ir_version, check=False)
    x = np.zeros((4, 1, 64), dtype=np.float32)
    return ModelData(path=path, inputs={"x": x}, labels=np.zeros(4, dtype=np.int64))


def make_scalar_input_classifier(path: Path, *, samples: int = 16, seed: int = 0) -> ModelData:
    """The MLP whose logits are divided by a 0-d float input ``temperature`` (stored as shape ``(N,)``)."""
    graph, weights = _mlp_graph(16, 8, 4, seed)
    graph.node[-1].output[0] = "raw"
    graph.node.append(helper.make_node("Div", ["raw", "temperature"], ["logits"], name="scale"))
    graph.input.append(helper.make_tensor_value_info("temperature", TensorProto.FLOAT, []))
    _save(graph, path)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((samples, 1, 16)).astype(np.float32)
    temperature = rng.uniform(0.5, 2.0, samples).astype(np.float32)
    labels = np.array([int(np.argmax(_mlp_forward(x[i], weights))) for i in range(samples)], dtype=np.int64)
    return ModelData(path=path, inputs={"x": x, "temperature": temperature}, labels=labels)


# The saturating classifier. K is cut into GROUPS segments. Class j < GROUPS ("dense") weighs every element of
# segment j by 1.0; class GROUPS + j ("sparse") weighs every other element of segment j by 1.0 and gets SPARSE_BIAS.
# A sample of class c has x near 1.0 on segment c and near 0.3 elsewhere. Quantized (activation scale 1/255, weight
# scale 1/127), a dense pair on the hot segment is 2 * ~250 * 127 ~ 63000, which VPMADDUBSW clamps to 32767: the
# dense logit roughly halves (~125 -> ~65) and drops below its sparse twin (~62 + 20), whose pairs hold one zero and
# never saturate. So on AVX2 the argmax moves for every sample and the logit vector bends (cosine ~0.95), while VNNI
# (VPDPBUSD, 32-bit sums) and U8U8 kernels (16-bit operands, VPMADDWD) stay exact up to rounding.
SATURATION_K = 512
SATURATION_GROUPS = 4
SPARSE_BIAS = 20.0


def make_saturating_classifier(path: Path, *, samples: int = 16, seed: int = 0) -> ModelData:
    """Input ``x`` ``[1, 512]`` in ``[0, 1]``, output ``logits`` ``[1, 8]``; labels are the dense class (0..3)."""
    k, groups = SATURATION_K, SATURATION_GROUPS
    seg = k // groups
    w = np.zeros((k, 2 * groups), dtype=np.float32)
    for j in range(groups):
        w[j * seg : (j + 1) * seg, j] = 1.0
        w[j * seg : (j + 1) * seg : 2, groups + j] = 1.0
    bias = np.concatenate([np.zeros(groups), np.full(groups, SPARSE_BIAS)]).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["mm"], name="fc"),
            helper.make_node("Add", ["mm", "b"], ["logits"], name="fc_bias"),
        ],
        "saturating_classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2 * groups])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")],
    )
    _save(graph, path)
    rng = np.random.default_rng(seed)
    labels = np.arange(samples, dtype=np.int64) % groups
    x = rng.uniform(0.25, 0.35, (samples, 1, k)).astype(np.float32)
    for i, c in enumerate(labels):
        x[i, 0, c * seg : (c + 1) * seg] = rng.uniform(0.95, 1.0, seg)
    return ModelData(path=path, inputs={"x": x}, labels=labels)


# The per-tensor candidates: the unit tests' default, and quick to quantize.
CANDIDATES = ("s8s8-qdq", "u8s8-qdq", "u8s8-qdq-rr", "u8u8-qdq", "u8s8-dynamic")


def write_job_spec(directory: Path, *, stage: str = "evaluate", name: str = "spec.json", **overrides: Any) -> Path:
    """Write a spec into ``directory`` for ``model.onnx``, ``inputs.npz``, ``labels.npy`` and ``artifacts/`` there.

    The default target is a native x86-avx2 without VNNI (so the x64quantprecision mitigations apply) with every
    candidate, few timing runs and the contract's default tolerance. ``overrides`` replace top-level keys; a dict
    given for ``target`` is merged into the default target.
    """
    target = {
        "name": "x86-avx2",
        "platform": "linux/amd64",
        "arch": "x86_64",
        "mode": "native",
        "cpu_model": None,
        "providers": ["CPUExecutionProvider"],
        "x86_vnni": False,
        "cpu_unseen": [],
    }
    target.update(overrides.pop("target", {}))
    spec = {
        "schema": "farm.spec/1",
        "stage": stage,
        "target": target,
        "model": "model.onnx",
        "rewritten": None,
        "inputs": "inputs.npz",
        "labels": "labels.npy",
        "artifacts": "artifacts",
        "candidates": list(CANDIDATES),
        "calibration": {"method": "minmax", "samples": 64},
        "optimization_level": "all",
        "threads": 1,
        "timing": {"warmup": 1, "iterations": 5, "rounds": 5},
        "tolerance": {"cosine": 0.99, "top1_agreement": 0.99},
        "mitigations": ["x64quantprecision"],
        "outputs": None,
        "metric": None,
    }
    spec.update(overrides)
    path = directory / name
    path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return path


def make_dynamic_batch_cnn(path: Path, *, samples: int = 8, seed: int = 0, opset: int = 11) -> ModelData:
    """A small CNN as paddle2onnx writes it: batch axis ``dim_value: -1``, opset 11 (IR 6), Conv-Relu-Conv-Pool.

    Input ``x`` ``[-1, 3, 16, 16]``, output ``y`` ``[-1, 4]``; inputs are one batch per sample (``[N, 1, 3, 16, 16]``).
    Per-channel quantization of this model needs its opset raised to 13 first.
    """
    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
        "b1": rng.standard_normal(8).astype(np.float32) * 0.1,
        "w2": rng.standard_normal((4, 8, 3, 3)).astype(np.float32) * 0.3,
    }
    # Very different ranges per output channel: what per-channel weight scales are for.
    weights["w2"] *= np.array([1.0, 0.1, 3.0, 0.5], dtype=np.float32)[:, None, None, None]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
            helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
            helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
            helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="pool"),
            helper.make_node("Flatten", ["p"], ["y"], name="flatten"),
        ],
        "dynamic_batch_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 4])],
        initializer=[numpy_helper.from_array(a, n) for n, a in weights.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=6, producer_name="farm-tests"
    )
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    x = rng.uniform(0.0, 1.0, (samples, 1, 3, 16, 16)).astype(np.float32)
    return ModelData(path=path, inputs={"x": x}, labels=np.zeros(samples, dtype=np.int64))


def _conv_matmul_branch(name: str, seed: int) -> onnx.GraphProto:
    rng = np.random.default_rng(seed)
    initializers = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3, f"{name}_w"),
        numpy_helper.from_array(rng.standard_normal((4 * 6 * 6, 5)).astype(np.float32) * 0.1, f"{name}_m"),
        numpy_helper.from_array(np.array([1, -1], dtype=np.int64), f"{name}_shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", f"{name}_w"], [f"{name}_c"], name=f"{name}_conv"),
        helper.make_node("Relu", [f"{name}_c"], [f"{name}_r"], name=f"{name}_relu"),
        helper.make_node("Reshape", [f"{name}_r", f"{name}_shape"], [f"{name}_f"], name=f"{name}_flatten"),
        helper.make_node("MatMul", [f"{name}_f", f"{name}_m"], [f"{name}_y"], name=f"{name}_matmul"),
    ]
    return helper.make_graph(
        nodes, name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None)], initializer=initializers
    )


def make_if_branch_model(path: Path, *, samples: int = 8, seed: int = 0) -> ModelData:
    """Compute inside If branches, as a voice-activity detector exports: the branch is chosen by an int64 scalar
    input ``sr`` (16000 or not), and each branch holds a Conv and a MatMul.

    Inputs ``x`` ``[-1, 3, 8, 8]`` and ``sr`` ``[]`` (int64, stored as shape ``(N,)``); output ``y`` ``[-1, 5]``.
    quantize_static leaves both branches alone.
    """
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["rate"], value=numpy_helper.from_array(np.array(16000, dtype=np.int64))),
            helper.make_node("Equal", ["sr", "rate"], ["is_16k"], name="is_16k"),
            helper.make_node(
                "If",
                ["is_16k"],
                ["y"],
                name="by_rate",
                then_branch=_conv_matmul_branch("then", seed + 1),
                else_branch=_conv_matmul_branch("else", seed + 2),
            ),
        ],
        "if_branch_model",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, 8, 8]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 5])],
    )
    _save(graph, path)
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (samples, 1, 3, 8, 8)).astype(np.float32)
    sr = np.full(samples, 16000, dtype=np.int64)
    return ModelData(path=path, inputs={"x": x, "sr": sr}, labels=np.zeros(samples, dtype=np.int64))


def make_external_data_model(path: Path, *, location: str = "weights.bin", samples: int = 16) -> ModelData:
    """The MLP classifier saved with every weight in the external file ``location`` beside the model."""
    data = make_mlp_classifier(path, samples=samples)
    model = onnx.load(str(path))
    onnx.save(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0
    )
    return data


def relocate_external_data(path: Path, location: str) -> None:
    """Point every external tensor of ``path`` at ``location`` (e.g. one that escapes the model's folder)."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(path))


# The sequence model: T positions of D features, C classes.
SEQ_T, SEQ_D, SEQ_C = 6, 16, 5


def make_sequence_and_state_model(path: Path, *, samples: int = 12, seed: int = 0) -> ModelData:
    """Two outputs, as a recognizer with a recurrent state: ``probs`` ``[1, T, C]`` (a softmax per position) and
    ``state`` ``[1, T, D]`` (Tanh of the input, no quantizable node on its path).

    ``probs`` comes from a MatMul whose weights hold one outlier a hundred times the rest, so per-tensor int8
    rounds most weights to a few levels and ``probs`` drifts, while ``state`` stays as it was: int8 shifts only
    one output.
    """
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((SEQ_D, SEQ_C)) * 0.05).astype(np.float32)
    w[0, 0] = 5.0
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["logits"], name="classifier"),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax"),
            helper.make_node("Tanh", ["x"], ["state"], name="state"),
        ],
        "sequence_and_state",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ_T, SEQ_D])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, SEQ_T, SEQ_C]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, SEQ_T, SEQ_D]),
        ],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    _save(graph, path)
    x = rng.standard_normal((samples, 1, SEQ_T, SEQ_D)).astype(np.float32)
    x[:, :, :, 0] *= 0.05  # the outlier weight's feature stays small, so every class has a say
    return ModelData(path=path, inputs={"x": x}, labels=np.zeros(samples, dtype=np.int64))


def make_cnn(
    path: Path, *, samples: int = 8, seed: int = 0, size: int = 320, widths: tuple[int, ...] = (32, 64, 128, 256)
) -> ModelData:
    """An image CNN heavy enough to time, as a 320x320 detector backbone is (about 2 GFLOP: 10 ms or more of fp32
    on one core).

    Conv(3->32, s2)-Relu-Conv(32->64, s2)-Relu-Conv(64->128, s2)-Relu-Conv(128->256)-Relu-GlobalAveragePool-Gemm(10),
    input ``x`` ``[1, 3, size, size]``, output ``logits`` ``[1, 10]``; inputs are images in [0, 1). ``widths``
    changes the convolutions' output channels (the last one is not strided): (64, 128, 256, 512) holds 6.2 MB of
    fp32 weights.
    """
    rng = np.random.default_rng(seed)
    channels = [3, *widths]
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    current = "x"
    for index, (cin, cout) in enumerate(itertools.pairwise(channels)):
        stride = 1 if index == len(channels) - 2 else 2
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        b = (0.01 * rng.standard_normal(cout)).astype(np.float32)
        current = _conv_relu(index, current, w, b, initializers, nodes, strides=[stride, stride])
    _add_classifier_head(rng, channels[-1], current, initializers, nodes)
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializer=initializers,
    )
    _save(graph, path)
    x = rng.uniform(0.0, 1.0, (samples, 1, 3, size, size)).astype(np.float32)
    return ModelData(path=path, inputs={"x": x}, labels=np.zeros(samples, dtype=np.int64))


def make_detector(path: Path, *, samples: int = 4, seed: int = 0, size: int = 320, anchors: int = 3) -> ModelData:
    """A single-stage detector as exporters write one: a strided Conv-Relu backbone with about 3 million weights,
    then two 1x1 heads at 1/32 of the input, reshaped per anchor into ``boxes`` ``[1, cells * anchors, 4]`` and
    Sigmoid ``scores`` ``[1, cells * anchors, 80]``: two outputs, neither of them classifier-like logits."""
    rng = np.random.default_rng(seed)
    layers = ((3, 32, 2), (32, 64, 2), (64, 128, 2), (128, 256, 2), (256, 384, 1), (384, 512, 2))
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    current = "x"
    for index, (cin, cout, stride) in enumerate(layers):
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        b = (0.01 * rng.standard_normal(cout)).astype(np.float32)
        current = _conv_relu(index, current, w, b, initializers, nodes, strides=[stride, stride])
    boxes = anchors * (size // 32) ** 2
    for head, per_anchor in (("box", 4), ("cls", 80)):
        w = (rng.standard_normal((per_anchor * anchors, 512, 1, 1)) / np.sqrt(512)).astype(np.float32)
        shape = np.asarray([1, per_anchor, boxes], dtype=np.int64)
        initializers += [numpy_helper.from_array(w, f"{head}_w"), numpy_helper.from_array(shape, f"{head}_shape")]
        nodes += [
            helper.make_node("Conv", [current, f"{head}_w"], [f"{head}_map"], name=f"{head}_head"),
            helper.make_node("Reshape", [f"{head}_map", f"{head}_shape"], [f"{head}_flat"], name=f"{head}_reshape"),
        ]
    nodes += [
        helper.make_node("Transpose", ["box_flat"], ["boxes"], perm=[0, 2, 1], name="box_transpose"),
        helper.make_node("Transpose", ["cls_flat"], ["cls_t"], perm=[0, 2, 1], name="cls_transpose"),
        helper.make_node("Sigmoid", ["cls_t"], ["scores"], name="cls_sigmoid"),
    ]
    graph = helper.make_graph(
        nodes,
        "detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, boxes, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, boxes, 80]),
        ],
        initializer=initializers,
    )
    _save(graph, path)
    x = rng.uniform(0.0, 1.0, (samples, 1, 3, size, size)).astype(np.float32)
    return ModelData(path=path, inputs={"x": x}, labels=np.zeros(samples, dtype=np.int64))


def make_traced_batch_model(path: Path, *, baked: bool = True, samples: int = 4, seed: int = 0) -> ModelData:
    """A CNN as a tracing exporter writes it when the example input had batch 1: ``x`` declares ``[-1, 3, 8, 8]``,
    but its flatten is a Reshape to the constant ``[1, -1]`` (node ``flatten``), so at batch 2 the two samples become
    one row of twice the features and the MatMul after it fails. ``baked=False`` writes the correct ``[-1, 144]``."""
    rng = np.random.default_rng(seed)
    shape = np.array([1, -1] if baked else [-1, 144], dtype=np.int64)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("Reshape", ["r", "shape"], ["flat"], name="flatten"),
            helper.make_node("MatMul", ["flat", "fc"], ["y"], name="fc"),
        ],
        "traced",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 5])],
        initializer=[
            numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
            numpy_helper.from_array(shape, "shape"),
            numpy_helper.from_array(rng.standard_normal((144, 5)).astype(np.float32) * 0.1, "fc"),
        ],
    )
    _save(graph, path)
    x = rng.uniform(0.0, 1.0, (samples, 1, 3, 8, 8)).astype(np.float32)
    return ModelData(path=path, inputs={"x": x}, labels=np.zeros(samples, dtype=np.int64))


def _image_samples(path: Path, rng: np.random.Generator, *, samples: int, size: int) -> ModelData:
    """Samples for the image classifier at ``path`` (input ``x`` ``[1, 3, size, size]``): the ``samples`` draws of
    8 times as many with the widest fp32 top-2 margin, labelled with their fp32 argmax."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pool = rng.uniform(0.0, 1.0, (8 * samples, 1, 3, size, size)).astype(np.float32)
    logits = np.stack([session.run(None, {"x": pool[i]})[0][0] for i in range(len(pool))])
    chosen = _widest_margin(pool, logits, samples)
    labels = np.argmax(logits[chosen], axis=-1).astype(np.int64)
    return ModelData(path=path, inputs={"x": pool[chosen]}, labels=labels)


def _widest_margin(pool: np.ndarray, logits: np.ndarray, samples: int) -> np.ndarray:
    """The indices (in order) of the ``samples`` draws whose fp32 top-2 margin is widest, relative to the logits."""
    top2 = np.sort(logits, axis=-1)[:, -2:]
    margin = (top2[:, 1] - top2[:, 0]) / np.linalg.norm(logits, axis=-1)
    return np.sort(np.argsort(margin)[-samples:])


# The sensitive CNN: SENSITIVE_HOT of its channels leave ``amplify`` SENSITIVE_GAIN times larger, and conv2's weights
# for them are as much smaller, so fp32 computes what an ordinary CNN would. Per-tensor int8 of ``amplified`` (and of
# the gain itself, a Mul input) then spends its 256 levels on the hot channels and rounds the others to 0.
SENSITIVE_GAIN = 1000.0
SENSITIVE_HOT = 4
# The nodes that keep ``amplified`` in fp32: its producer and its consumer.
SENSITIVE_REGION = ("amplify", "conv2")


def make_sensitive_cnn(
    path: Path, *, samples: int = 16, seed: int = 0, size: int = 32, channels: int = 64, layers: int = 5
) -> ModelData:
    """A CNN whose naive per-tensor int8 fails while keeping one region in fp32 fixes it (``farm tune``).

    ``layers`` Conv(3x3, ``channels``)-Relu blocks at ``size`` x ``size`` (enough compute that int8 is clearly faster
    than fp32 on one core), GlobalAveragePool, Flatten, Gemm(10). After relu1 a Mul ``amplify`` scales
    SENSITIVE_HOT channels by SENSITIVE_GAIN into ``amplified``, which conv2 reads with weights scaled back down:
    u8s8/s8s8 QDQ lands near cosine 0.5, and excluding ``amplify`` and ``conv2`` (SENSITIVE_REGION) brings it back
    above 0.999. Input ``x`` ``[1, 3, size, size]`` in [0, 1), output ``logits`` ``[1, 10]``; labels are the fp32
    argmax, and the samples are those with the widest top-2 margin of 8 times as many draws.
    """
    rng = np.random.default_rng(seed)
    gain = np.ones(channels, dtype=np.float32)
    gain[:SENSITIVE_HOT] = SENSITIVE_GAIN
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    current, cin = "x", 3
    for index in range(layers):
        w = (rng.standard_normal((channels, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        if index == 2:
            w /= gain[None, :, None, None]
        b = (0.01 * rng.standard_normal(channels)).astype(np.float32)
        current, cin = _conv_relu(index, current, w, b, initializers, nodes), channels
        if index == 1:
            initializers.append(numpy_helper.from_array(gain.reshape(1, channels, 1, 1), "gain"))
            nodes.append(helper.make_node("Mul", [current, "gain"], ["amplified"], name="amplify"))
            current = "amplified"
    _add_classifier_head(rng, channels, current, initializers, nodes)
    return _image_classifier("sensitive_cnn", path, rng, nodes, initializers, samples=samples, size=size)


# The model int8 never pays on: one hidden unit SMALL_OUTLIER times the others (its weights in fc2 as much smaller),
# so per-tensor int8 of the hidden layer loses the other units, and matrices so small that Q/DQ costs more than it
# saves (int8 about 0.8x fp32 on one core).
SMALL_OUTLIER = 300.0


def make_int8_never_pays(
    path: Path, *, samples: int = 16, seed: int = 0, features: int = 16, classes: int = 8
) -> ModelData:
    """A 16-16-8 MLP (MatMul-Add-Relu-MatMul-Add, nodes fc1, fc1_bias, relu, fc2, fc2_bias as in
    ``make_mlp_classifier``) on which naive int8 is both out of tolerance and slower than fp32: ``farm tune`` must
    say "keep fp32". Input ``x`` ``[1, features]``, output ``logits`` ``[1, classes]``; labels are the fp32 argmax."""
    graph, weights = _mlp_graph(features, features, classes, seed)
    w1, b1, w2, b2 = weights
    w1[:, 0] *= SMALL_OUTLIER
    b1[0] = abs(b1[0]) * SMALL_OUTLIER
    w2[0, :] /= SMALL_OUTLIER
    for tensor in graph.initializer:
        array = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}[tensor.name]
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    _save(graph, path)
    pool = np.random.default_rng(seed + 1).standard_normal((8 * samples, 1, features)).astype(np.float32)
    logits = np.stack([_mlp_forward(pool[i], weights)[0] for i in range(len(pool))])
    chosen = _widest_margin(pool, logits, samples)
    labels = np.argmax(logits[chosen], axis=-1).astype(np.int64)
    return ModelData(path=path, inputs={"x": pool[chosen]}, labels=labels)


# The saturating CNN (farm tune across tiers): SATURATING_CONSTANT of conv3's channels are a constant
# SATURATING_LEVEL (zero weights, bias LEVEL), so after pooling they sit at the top of the head's input range (uint8
# 255), and the Gemm ``head`` weighs a pair of them, adjacent in K, with its largest weight for every class (int8 127,
# the same sign): 2 * 255 * 127 = 64770 overflows VPMADDUBSW's int16 pair sum, which clamps it to 32767. Its bias
# cancels their fp32 contribution, so fp32 decides on the other channels alone. Those weights lie on the head's 8-bit
# grid at odd steps (+-1 and +-3 of max/127), as quantization-aware training leaves them: 8-bit weights are exact,
# while 7-bit weights (a step of max/64) move every one of them by half a step or more.
SATURATING_HEAD = "head"
SATURATING_WEIGHT = "fc"
SATURATING_CONSTANT = 8
SATURATING_LEVEL = 1.0


def make_saturating_cnn(
    path: Path, *, samples: int = 16, seed: int = 0, size: int = 32, channels: int = 64, layers: int = 4
) -> ModelData:
    """A CNN on which ``farm tune`` must decide per tier: naive U8S8 int8 is within tolerance where the head's kernel
    keeps 32-bit sums (VNNI, arm64) and far out of it where VPMADDUBSW saturates (AVX2, AVX-512 without VNNI);
    there, 7-bit weights for the head (and reduce_range everywhere) fall out of tolerance too, U8U8 is within but
    slower, and keeping the head alone in fp32 restores it at U8S8 speed.

    ``layers`` Conv(3x3, ``channels``)-Relu blocks at ``size`` x ``size``, GlobalAveragePool, Flatten and the Gemm
    SATURATING_HEAD (weight SATURATING_WEIGHT, ``[channels, 10]``). Measured on an AVX2 host (onnxruntime 1.32),
    cosine to fp32: U8S8 0.41 (0.99995 with its QDQ run as written, i.e. without the kernel), head with 7-bit weights
    0.968, reduce_range 0.971, head in fp32 0.99996, U8U8 0.9999 at about 0.7 times U8S8's speed. Input ``x``
    ``[1, 3, size, size]`` in [0, 1), output ``logits`` ``[1, 10]``; labels are the fp32 argmax of the samples with
    the widest top-2 margin of 8 times as many draws.
    """
    rng = np.random.default_rng(seed)
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    current, cin = "x", 3
    for index in range(layers):
        w = (rng.standard_normal((channels, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        b = (0.01 * rng.standard_normal(channels)).astype(np.float32)
        if index == layers - 1:
            w[:SATURATING_CONSTANT], b[:SATURATING_CONSTANT] = 0.0, SATURATING_LEVEL
        current, cin = _conv_relu(index, current, w, b, initializers, nodes), channels
    classes, top = 10, 1.0
    fc = (rng.choice([-3, -1, 1, 3], size=(channels, classes)) * (top / 127)).astype(np.float32)
    bias = np.zeros(classes, np.float32)
    for j in range(classes):
        pair = 2 * (j % (SATURATING_CONSTANT // 2))
        fc[pair : pair + 2, j] = top
        bias[j] = -2 * top * SATURATING_LEVEL
    initializers += [numpy_helper.from_array(fc, SATURATING_WEIGHT), numpy_helper.from_array(bias, "fc_b")]
    nodes += [
        helper.make_node("GlobalAveragePool", [current], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", SATURATING_WEIGHT, "fc_b"], ["logits"], name=SATURATING_HEAD),
    ]
    return _image_classifier(
        "saturating_cnn", path, rng, nodes, initializers, samples=samples, size=size, classes=classes
    )


# The CNN whose int8 model breaks in the middle: conv{BROKEN_LAYER}'s per-tensor weight scale is set by one huge weight
# on an input channel that is always zero (the Relu before it cuts channel 0), so every other weight of that layer
# rounds to zero in int8 and the layer computes its bias alone. Quantization, not a kernel, breaks it: the same on
# every target.
BROKEN_LAYER = 2


def make_broken_middle_cnn(
    path: Path, *, samples: int = 8, seed: int = 0, size: int = 16, channels: int = 16, layers: int = 6
) -> ModelData:
    """``layers`` Conv(3x3)-Relu blocks (conv{i}, relu{i}, tensors c{i} and r{i}), and the classifier head
    (_add_classifier_head). Layer BROKEN_LAYER - 1's channel 0 has a bias of -100, so r{BROKEN_LAYER - 1}[0]
    is 0 on every input, and conv{BROKEN_LAYER}'s weights from that channel are 1000 times the others: harmless in
    fp32, and in a per-tensor int8 model (u8s8-qdq) they leave the layer's other weights at zero. Input ``x``
    ``[1, 3, size, size]`` in [0, 1), output ``logits`` ``[1, 10]``."""
    rng = np.random.default_rng(seed)
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    current, cin = "x", 3
    for index in range(layers):
        w = (rng.standard_normal((channels, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        b = (0.05 + 0.01 * rng.standard_normal(channels)).astype(np.float32)
        if index == BROKEN_LAYER - 1:
            b[0] = -100.0
        if index == BROKEN_LAYER:
            w[:, 0] = 1000.0 * np.abs(w).max()
        current, cin = _conv_relu(index, current, w, b, initializers, nodes), channels
    _add_classifier_head(rng, channels, current, initializers, nodes)
    return _image_classifier("broken_middle_cnn", path, rng, nodes, initializers, samples=samples, size=size)


# The CNN whose middle layer saturates where U8S8 kernels add int16 pair sums (x86 without VNNI): conv{MIDDLE_LAYER}
# is a 1x1 Conv whose input channels 0-7 are constant at the top of their range (uint8 255) and whose weights pair
# them at +127, so each VPMADDUBSW pair sum (64770) overflows int16; VNNI and arm64 keep 32-bit sums, exact.
MIDDLE_LAYER = 2


def make_midsaturating_cnn(
    path: Path, *, samples: int = 8, seed: int = 0, size: int = 16, channels: int = 16, layers: int = 6
) -> ModelData:
    """Conv-Relu blocks conv{i}/relu{i} (tensors c{i}, r{i}; 3x3 but conv{MIDDLE_LAYER}, 1x1), and the classifier
    head (_add_classifier_head). Layer MIDDLE_LAYER - 1 makes channels 0-7 constant at 1.0 (weights 0, bias
    1) and the others a tenth of a He-initialized layer's, below 1.0, so the constant channels quantize to 255.
    conv{MIDDLE_LAYER} reads channel pair (2k, 2k+1), k = o mod 4, at weight 1.0 (int8 127) with a bias that cancels
    it in fp32, and the other channels at +-1/127 or +-3/127 (int8 +-1, +-3). Input ``x`` ``[1, 3, size, size]``."""
    rng = np.random.default_rng(seed)
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    current, cin, constant = "x", 3, SATURATING_CONSTANT
    for index in range(layers):
        if index == MIDDLE_LAYER:
            w = (rng.choice([-3, -1, 1, 3], size=(channels, cin, 1, 1)) / 127).astype(np.float32)
            w[:, :constant] = 0.0
            b = np.zeros(channels, np.float32)
            for out in range(channels):
                pair = 2 * (out % (constant // 2))
                w[out, pair : pair + 2] = 1.0
                b[out] = -2.0 + 0.05
            current, cin = _conv_relu(index, current, w, b, initializers, nodes, pads=[0, 0, 0, 0]), channels
            continue
        w = (rng.standard_normal((channels, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        b = (0.05 + 0.01 * rng.standard_normal(channels)).astype(np.float32)
        if index == MIDDLE_LAYER - 1:
            w[constant:] *= 0.1
            b[constant:] *= 0.1
            w[:constant], b[:constant] = 0.0, 1.0
        current, cin = _conv_relu(index, current, w, b, initializers, nodes), channels
    _add_classifier_head(rng, channels, current, initializers, nodes)
    return _image_classifier("midsaturating_cnn", path, rng, nodes, initializers, samples=samples, size=size)


def make_wide_activation_model(
    path: Path, *, samples: int = 2, seed: int = 0, size: int = 256, channels: int = 8, layers: int = 160
) -> ModelData:
    """A model of many large activations and little compute: ``layers`` Conv(1x1, ``channels``)-Relu blocks on
    ``[1, channels, size, size]`` (2 MiB of float32 each at the defaults, so the Relu outputs marked at once take
    320 MiB), then GlobalAveragePool and Flatten to ``[1, channels]``. Input ``x`` in [0, 1)."""
    rng = np.random.default_rng(seed)
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    current = "x"
    for index in range(layers):
        w = (rng.standard_normal((channels, channels, 1, 1)) * np.sqrt(2.0 / channels)).astype(np.float32)
        b = (0.05 + 0.01 * rng.standard_normal(channels)).astype(np.float32)
        initializers += [numpy_helper.from_array(w, f"w{index}"), numpy_helper.from_array(b, f"b{index}")]
        nodes += [
            helper.make_node("Conv", [current, f"w{index}", f"b{index}"], [f"c{index}"], name=f"conv{index}"),
            helper.make_node("Relu", [f"c{index}"], [f"r{index}"], name=f"relu{index}"),
        ]
        current = f"r{index}"
    nodes += [
        helper.make_node("GlobalAveragePool", [current], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["y"], name="flatten"),
    ]
    graph = helper.make_graph(
        nodes,
        "wide_activations",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels])],
        initializer=initializers,
    )
    _save(graph, path)
    inputs = rng.uniform(0.0, 1.0, (samples, 1, channels, size, size)).astype(np.float32)
    return ModelData(path=path, inputs={"x": inputs}, labels=np.zeros(samples, np.int64))


# The hardswish CNN: ``layers`` Conv-hardswish blocks, hardswish written out as exporters write it. Even blocks:
# x * clip(x + 3, 0, 6) / 6 (Add, Clip, Mul, Div: paddle2onnx); odd blocks: x * (min(relu(x + 3), 6) * 1/6) (Add,
# Relu, Min, Mul, Mul: x times a hardsigmoid written out). Each fuses into one HardSwish.
HARDSWISH_NODES = {0: 4, 1: 5}


def make_hardswish_cnn(
    path: Path,
    *,
    samples: int = 16,
    seed: int = 0,
    size: int = 32,
    channels: int = 64,
    layers: int = 4,
    opset: int = OPSET,
) -> ModelData:
    """Input ``x`` ``[1, 3, size, size]`` in [0, 1), output ``logits`` ``[1, 10]``; labels are the fp32 argmax of
    the samples with the widest top-2 margin of 8 times as many draws. Block ``i``'s hardswish nodes are named
    ``hs{i}_*``; the last of them writes ``h{i}``."""
    rng = np.random.default_rng(seed)
    scalars = {"three": 3.0, "zero": 0.0, "six": 6.0, "sixth": 1.0 / 6.0}
    initializers = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in scalars.items()]
    nodes, current, cin = [], "x", 3
    for index in range(layers):
        w = (rng.standard_normal((channels, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        b = (0.5 * rng.standard_normal(channels)).astype(np.float32)
        initializers += [numpy_helper.from_array(w, f"w{index}"), numpy_helper.from_array(b, f"b{index}")]
        c, h, hs = f"c{index}", f"h{index}", f"hs{index}"
        nodes.append(
            helper.make_node("Conv", [current, f"w{index}", f"b{index}"], [c], pads=[1, 1, 1, 1], name=f"conv{index}")
        )
        if index % 2 == 0:
            nodes += [
                helper.make_node("Add", [c, "three"], [f"{hs}_a"], name=f"{hs}_add"),
                helper.make_node("Clip", [f"{hs}_a", "zero", "six"], [f"{hs}_c"], name=f"{hs}_clip"),
                helper.make_node("Mul", [c, f"{hs}_c"], [f"{hs}_m"], name=f"{hs}_mul"),
                helper.make_node("Div", [f"{hs}_m", "six"], [h], name=f"{hs}_div"),
            ]
        else:
            nodes += [
                helper.make_node("Add", [c, "three"], [f"{hs}_a"], name=f"{hs}_add"),
                helper.make_node("Relu", [f"{hs}_a"], [f"{hs}_r"], name=f"{hs}_relu"),
                helper.make_node("Min", [f"{hs}_r", "six"], [f"{hs}_n"], name=f"{hs}_min"),
                helper.make_node("Mul", [f"{hs}_n", "sixth"], [f"{hs}_g"], name=f"{hs}_gate"),
                helper.make_node("Mul", [c, f"{hs}_g"], [h], name=f"{hs}_mul"),
            ]
        current, cin = h, channels
    _add_classifier_head(rng, channels, current, initializers, nodes)
    graph = helper.make_graph(
        nodes,
        "hardswish_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION, producer_name="farm-tests"
    )
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return _image_samples(path, rng, samples=samples, size=size)


def make_softmax_map_cnn(path: Path, *, samples: int = 8, seed: int = 0, size: int = 8, opset: int = 11) -> ModelData:
    """An old exporter's segmentation-style head: Conv(3->16)-Relu-Conv(16->10, 1x1)-Softmax at opset 11, whose
    Softmax flattens ``[1, 10, size, size]`` from axis 1. Raised to opset 13 (for per-channel weights) the version
    converter writes that as unnamed Shape, Flatten and Reshape nodes around the Softmax, as it does for the
    SqueezeNet of the onnx wheel's ``light_*`` models. Input ``x`` in [0, 1), output ``p`` ``[1, 10, size, size]``."""
    rng = np.random.default_rng(seed)
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    w0 = (rng.standard_normal((16, 3, 3, 3)) * np.sqrt(2.0 / 27)).astype(np.float32)
    current = _conv_relu(0, "x", w0, (0.01 * rng.standard_normal(16)).astype(np.float32), initializers, nodes)
    w1 = (rng.standard_normal((10, 16, 1, 1)) * np.sqrt(2.0 / 16)).astype(np.float32)
    initializers += [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(10, np.float32), "b1")]
    nodes.append(helper.make_node("Conv", [current, "w1", "b1"], ["scores"], name="score"))
    nodes.append(helper.make_node("Softmax", ["scores"], ["p"], name="softmax"))
    graph = helper.make_graph(
        nodes,
        "softmax_map_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 10, size, size])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    x = rng.uniform(0.0, 1.0, (samples, 1, 3, size, size)).astype(np.float32)
    return ModelData(path=path, inputs={"x": x}, labels=np.zeros(samples, dtype=np.int64))


def make_attention_block(
    path: Path, *, samples: int = 4, seed: int = 0, tokens: int = 64, width: int = 128, heads: int = 4
) -> ModelData:
    """One transformer encoder block, as exporters write it: Q, K and V projections (MatMul+Add), heads split with
    Reshape/Transpose, softmax(QK^T / sqrt(d))V, the output projection, a residual Add, then a 4x MLP with Relu and
    a second residual. Input ``x`` ``[1, tokens, width]``, output ``y`` the same shape. Most of its
    multiply-accumulates are in MatMul, none in Conv: the other half of the estimate's validation (bench-estimate)."""
    rng = np.random.default_rng(seed)
    d = width // heads
    initializers: list[onnx.TensorProto] = []

    def weight(name: str, rows: int, cols: int) -> str:
        w = (rng.standard_normal((rows, cols)) / np.sqrt(rows)).astype(np.float32)
        initializers.extend(
            [numpy_helper.from_array(w, name), numpy_helper.from_array(np.zeros(cols, np.float32), f"{name}_b")]
        )
        return name

    def linear(x: str, name: str, rows: int, cols: int) -> list[onnx.NodeProto]:
        w = weight(name, rows, cols)
        return [
            helper.make_node("MatMul", [x, w], [f"{name}_mm"], name=name),
            helper.make_node("Add", [f"{name}_mm", f"{w}_b"], [f"{name}_out"], name=f"{name}_bias"),
        ]

    shapes: dict[str, np.ndarray] = {
        "split_shape": np.array([1, tokens, heads, d], np.int64),
        "merge_shape": np.array([1, tokens, width], np.int64),
        "scale": np.array(1.0 / np.sqrt(d), np.float32),
    }
    initializers += [numpy_helper.from_array(v, k) for k, v in shapes.items()]
    nodes = [*linear("x", "q", width, width), *linear("x", "k", width, width), *linear("x", "v", width, width)]
    for name, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [
            helper.make_node("Reshape", [f"{name}_out", "split_shape"], [f"{name}_split"], name=f"{name}_split"),
            helper.make_node("Transpose", [f"{name}_split"], [f"{name}_heads"], perm=perm, name=f"{name}_heads"),
        ]
    nodes += [
        helper.make_node("MatMul", ["q_heads", "k_heads"], ["scores_raw"], name="scores"),
        helper.make_node("Mul", ["scores_raw", "scale"], ["scores"], name="scaled"),
        helper.make_node("Softmax", ["scores"], ["attn"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["attn", "v_heads"], ["ctx_heads"], name="context"),
        helper.make_node("Transpose", ["ctx_heads"], ["ctx_t"], perm=[0, 2, 1, 3], name="ctx_merge_t"),
        helper.make_node("Reshape", ["ctx_t", "merge_shape"], ["ctx"], name="ctx_merge"),
        *linear("ctx", "o", width, width),
        helper.make_node("Add", ["x", "o_out"], ["h"], name="residual1"),
        *linear("h", "up", width, 4 * width),
        helper.make_node("Relu", ["up_out"], ["up_relu"], name="mlp_relu"),
        *linear("up_relu", "down", 4 * width, width),
        helper.make_node("Add", ["h", "down_out"], ["y"], name="residual2"),
    ]
    tensor = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "attention_block",
        [tensor("x", TensorProto.FLOAT, [1, tokens, width])],
        [tensor("y", TensorProto.FLOAT, [1, tokens, width])],
        initializer=initializers,
    )
    _save(graph, path)
    x = rng.standard_normal((samples, 1, tokens, width)).astype(np.float32)
    return ModelData(path=path, inputs={"x": x}, labels=np.zeros(samples, dtype=np.int64))


# The node where make_cancelling_norm's fp32 parts between x86 and arm64: the difference of two equal norms.
CANCELLING_NODE = "cancel"


def make_cancelling_norm(path: Path, *, samples: int = 4, seed: int = 0, width: int = 512) -> ModelData:
    """A model whose fp32 output differs between x86 and arm64 beyond the cross-check's tolerance: x normalized by
    LayerNormalization (node ``layernorm``) and again by ReduceMean, Sub, Mul, ReduceMean, Add, Sqrt and Div
    (``mean``, ``center``, ``square``, ``var``, ``eps``, ``std``, ``alt``); output ``y``, their difference
    (CANCELLING_NODE) times 10^4. Reductions sum in SIMD lanes, 8 on AVX2 and 4 on NEON, so the two norms' last bits
    differ between the architectures, and the difference amplifies only that; elementwise nodes round exactly.
    Input ``x`` ``[1, width]``."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ones"], ["ln"], name="layernorm", axis=-1, epsilon=1e-5),
        helper.make_node("ReduceMean", ["x"], ["mu"], name="mean", axes=[-1]),
        helper.make_node("Sub", ["x", "mu"], ["centered"], name="center"),
        helper.make_node("Mul", ["centered", "centered"], ["squared"], name="square"),
        helper.make_node("ReduceMean", ["squared"], ["variance"], name="var", axes=[-1]),
        helper.make_node("Add", ["variance", "epsilon"], ["shifted"], name="eps"),
        helper.make_node("Sqrt", ["shifted"], ["deviation"], name="std"),
        helper.make_node("Div", ["centered", "deviation"], ["normed"], name="alt"),
        helper.make_node("Sub", ["ln", "normed"], ["residue"], name=CANCELLING_NODE),
        helper.make_node("Mul", ["residue", "gain"], ["y"], name="amplify"),
    ]
    initializers = [
        numpy_helper.from_array(np.ones(width, np.float32), "ones"),
        numpy_helper.from_array(np.array(1e-5, np.float32), "epsilon"),
        numpy_helper.from_array(np.array(1e4, np.float32), "gain"),
    ]
    graph = helper.make_graph(
        nodes,
        "cancelling_norm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        initializer=initializers,
    )
    _save(graph, path)
    inputs = {"x": rng.standard_normal((samples, 1, width)).astype(np.float32)}
    return ModelData(path=path, inputs=inputs, labels=np.zeros(samples, np.int64))
