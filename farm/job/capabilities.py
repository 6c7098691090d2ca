"""``python -m farm.job.capabilities OUT.json``: what this image's onnxruntime reads and runs, asked of the runtime.

Nothing here is a table typed by hand: the highest IR version and opsets come from loading tiny models the runtime
must refuse (its own error names its limit), and the kernels from its registry (``get_all_opkernel_def``), with the
provider, the op's version range and type constraints of each. The controller caches the file per image.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

SCHEMA = "farm.capabilities/1"
# The domains whose opset a model imports and the runtime checks.
DOMAINS = ("ai.onnx", "ai.onnx.ml", "com.microsoft")
_OPEN_END = 2**31 - 1  # onnxruntime's "and every later version"
_MAX_IR = re.compile(r"max supported IR version: (\d+)")
_MAX_OPSET = re.compile(r"official support for domain \S+ is till opset (\d+)")


def _tiny_model(ir_version: int, domain: str, opset: int) -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    imports = [helper.make_opsetid("", 13)]
    imports = (
        [helper.make_opsetid("", opset)] if domain == "ai.onnx" else [*imports, helper.make_opsetid(domain, opset)]
    )
    return bytes(helper.make_model(graph, opset_imports=imports, ir_version=ir_version).SerializeToString())


def _limit(model: bytes, pattern: re.Pattern[str]) -> int | None:
    """The limit the runtime names when it refuses ``model``; None if it loads it or names none."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    except Exception as exc:  # the refusal is what is asked for
        match = pattern.search(str(exc))
        return int(match.group(1)) if match else None
    return None


def probe() -> dict[str, Any]:
    import onnxruntime as ort
    from onnxruntime.capi import _pybind_state

    kernels = []
    for kernel in _pybind_state.get_all_opkernel_def():
        since, until = kernel.version_range
        kernels.append(
            {
                "op": kernel.op_name,
                "domain": kernel.domain or "ai.onnx",
                "provider": kernel.provider,
                "since": int(since),
                "until": None if until >= _OPEN_END else int(until),
                "types": {name: sorted(types) for name, types in kernel.type_constraints.items()},
            }
        )
    return {
        "schema": SCHEMA,
        "onnxruntime": ort.__version__,
        "providers": list(ort.get_available_providers()),
        "max_ir_version": _limit(_tiny_model(999, "ai.onnx", 13), _MAX_IR),
        "opsets": {d: _limit(_tiny_model(8, d, 9999), _MAX_OPSET) for d in DOMAINS},
        "kernels": kernels,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m farm.job.capabilities OUT.json", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(probe()), encoding="utf-8")
    out.chmod(0o644)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
