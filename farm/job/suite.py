"""``python -m farm.job.suite DATA_DIR OUT.json [I/N]``: the onnx wheel's model tests, run by this image's runtime.

DATA_DIR is ``onnx/backend/test/data`` of an onnx wheel: ``pytorch-converted``, ``pytorch-operator`` and ``simple``
hold ``<test>/model.onnx`` with ``test_data_set_*/input_*.pb`` and ``output_*.pb``; ``light`` holds
``light_<name>.onnx`` with ``light_<name>_output_0.pb``, whose inputs are made as onnx's own runner makes them
(``arange(n) / n`` in the input's shape). Each test passes, fails (outputs differ beyond onnx's tolerances) or errors
(the runtime refused or could not run it), with the class of the error. ``I/N`` runs every N-th test from the I-th,
so that several containers can share the tests.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from farm.job.loadfailure import classify

GROUPS = ("pytorch-converted", "pytorch-operator", "simple", "light")
# onnx's runner compares with these for its model tests.
RTOL, ATOL = 1e-3, 1e-7


def _tensor(path: Path) -> np.ndarray:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(tensor)


def _dummy(value: onnx.ValueInfoProto) -> np.ndarray:
    """As onnx's runner feeds a light model: ``arange(n) / n`` in the declared shape, dynamic dims as 1."""
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim)
    count = int(np.prod(shape)) if shape else 1
    return (np.arange(count).reshape(shape) / count).astype(np.float32)


Case = tuple[str, str, Path, list[list[Path]]]


def _cases(root: Path) -> list[Case]:
    """(group, name, model, the expected output files of each data set)."""
    cases: list[Case] = []
    for group in GROUPS[:3]:
        for test in sorted((root / group).glob("*/model.onnx")):
            sets = sorted(test.parent.glob("test_data_set_*"))
            cases.append((group, test.parent.name, test, [sorted(s.glob("output_*.pb")) for s in sets]))
    for model in sorted((root / "light").glob("light_*.onnx")):
        cases.append(("light", model.stem, model, [sorted(model.parent.glob(f"{model.stem}_output_*.pb"))]))
    return cases


def run_case(model: Path, sets: list[list[Path]]) -> dict[str, Any]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    except Exception as exc:  # the runtime refused the model: that is the finding
        return {"status": "error", "class": classify(str(exc)), "detail": " ".join(str(exc).split())[:300]}
    inputs = session.get_inputs()
    for index, expected in enumerate(sets):
        folder = model.parent / f"test_data_set_{index}"
        try:
            if folder.is_dir():
                files = sorted(folder.glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
                feed = {i.name: _tensor(f) for i, f in zip(inputs, files, strict=False)}
            else:
                proto = onnx.load(str(model), load_external_data=False)
                constants = {t.name for t in proto.graph.initializer}
                feed = {v.name: _dummy(v) for v in proto.graph.input if v.name not in constants}
            wanted = [_tensor(f) for f in expected]
        except Exception as exc:  # a test whose data this parser cannot read (sequences, optionals)
            return {"status": "error", "class": "data", "detail": f"its data cannot be read: {exc}"[:300]}
        try:
            outputs = session.run(None, feed)
        except Exception as exc:
            return {"status": "error", "class": "run", "detail": " ".join(str(exc).split())[:300]}
        for position, (got, want) in enumerate(zip(outputs, wanted, strict=False)):
            try:
                if want.dtype.kind in "OSU":  # strings are equal or not
                    np.testing.assert_array_equal(np.asarray(got).astype(str), want.astype(str))
                else:
                    np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL)
            except AssertionError as exc:
                return {
                    "status": "failed",
                    "class": "mismatch",
                    "detail": f"output {position}: " + " ".join(str(exc).split())[:280],
                }
            except (TypeError, ValueError) as exc:
                return {"status": "failed", "class": "mismatch", "detail": f"output {position}: {exc}"[:300]}
    return {"status": "passed", "class": None, "detail": None}


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python -m farm.job.suite DATA_DIR OUT.json [I/N]", file=sys.stderr)
        return 2
    import onnxruntime as ort

    root, out = Path(argv[0]), Path(argv[1])
    shard, shards = (int(part) for part in argv[2].split("/")) if len(argv) == 3 else (0, 1)
    started = time.monotonic()
    results = []
    for group, name, model, sets in _cases(root)[shard::shards]:
        began = time.monotonic()
        result = run_case(model, sets)
        results.append({"group": group, "name": name, **result, "seconds": round(time.monotonic() - began, 2)})
    out.write_text(
        json.dumps(
            {
                "schema": "farm.suite/1",
                "onnxruntime": ort.__version__,
                "seconds": round(time.monotonic() - started, 1),
                "tests": results,
            }
        )
    )
    out.chmod(0o644)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
