"""Run inside a target's container under the counting QEMU: marked runs of an int8 and an fp32 MatMul.

Usage: python3 countjob.py SIZE. Each kind is warmed up, then runs marked: id 10*k+1 and 10*k+2 do the same work
(REPS runs each), id 10*k+3 twice that work; the plugin appends one line per mark to its counts file. Only the
standard library, numpy, onnx and onnxruntime, which every target image has.
"""

from __future__ import annotations

import ctypes
import gc
import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

MARK_SYSCALL, BEGIN, END = 17985, 1, 2
REPS = 2
# Measured: on Haswell the fp32 MatMul's 5th or 6th run executes a one-off ~400k more scalar, load and store
# instructions (not the model's: its multiply-adds are unchanged); warming up past it keeps the marks comparable.
WARMUP = 6
KINDS = ("int8", "fp32")


def session(kind: str, n: int) -> ort.InferenceSession:
    rng = np.random.default_rng(1)
    weight: np.ndarray
    if kind == "int8":
        weight = rng.integers(-127, 127, (n, n)).astype(np.int8)
        x_type, y_type, op = TensorProto.UINT8, TensorProto.INT32, "MatMulInteger"
    else:
        weight = rng.random((n, n), dtype=np.float32)
        x_type, y_type, op = TensorProto.FLOAT, TensorProto.FLOAT, "MatMul"
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "w"], ["y"])],
        kind,
        [helper.make_tensor_value_info("x", x_type, [n, n])],
        [helper.make_tensor_value_info("y", y_type, [n, n])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    # One thread: idle pool threads would spin, and their instructions depend on timing.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main() -> None:
    n = int(sys.argv[1])
    libc = ctypes.CDLL(None)
    rng = np.random.default_rng(2)
    for k, kind in enumerate(KINDS):
        run = session(kind, n)
        x = rng.integers(0, 255, (n, n)).astype(np.uint8) if kind == "int8" else rng.random((n, n), dtype=np.float32)
        feed = {"x": x}
        for _ in range(WARMUP):
            run.run(None, feed)
        gc.collect()
        gc.disable()  # a collection inside one mark and not the other is work that is not the model's
        for mark, reps in ((10 * k + 1, REPS), (10 * k + 2, REPS), (10 * k + 3, 2 * REPS)):
            libc.syscall(MARK_SYSCALL, BEGIN, mark)
            for _ in range(reps):
                run.run(None, feed)
            libc.syscall(MARK_SYSCALL, END, mark)
        gc.enable()
    print("marked", len(KINDS) * 3)


if __name__ == "__main__":
    main()
