"""A fixed corpus of malformed and mutated ONNX models, made from a few small valid seeds, for issue 10's fuzz tests.

``build_corpus(directory)`` writes every case into a folder of its own (``<directory>/<case>/model.onnx``, with
whatever files the case needs beside it) and returns the cases, each with its ``kind``. The corpus depends on the seed
alone, so a failing case is made again by name. Every model stays far below 1 MB: a case is a malformed structure,
never a big file.

Kinds: ``seed`` (the valid models themselves), ``truncated``, ``random-bytes``, ``byte-flips``, ``wire`` (protobuf
wire-format damage), ``fields`` (wrong values in well-formed protobuf: IR and opset versions, elem types, attributes,
names, initializers), ``cyclic``, ``huge-dims``, ``external-data``, ``nested`` (subgraphs in subgraphs), ``types``
(strings, sequences, maps, optional, sparse, float8, ...) and ``zero-dims``.

``scripts/fuzz`` seeds atheris from the same corpus.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, helper, numpy_helper

IR_VERSION = 8
OPSET = 17
MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "weights.bin"
KINDS = (
    "seed",
    "truncated",
    "random-bytes",
    "byte-flips",
    "wire",
    "fields",
    "cyclic",
    "huge-dims",
    "external-data",
    "nested",
    "types",
    "zero-dims",
)


@dataclass(frozen=True, kw_only=True)
class Case:
    name: str
    kind: str
    detail: str
    path: Path

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "detail": self.detail, "path": str(self.path)}


# ---------------------------------------------------------------------------------------------------------- seeds


def _value(name: str, elem_type: int, shape: Sequence[int | str | None] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def _float(name: str, shape: Sequence[int | str | None] | None) -> onnx.ValueInfoProto:
    return _value(name, TensorProto.FLOAT, shape)


def _weights(name: str, shape: tuple[int, ...], seed: int) -> TensorProto:
    array = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.3
    return numpy_helper.from_array(array, name)


def _model(graph: GraphProto, *, ir_version: int = IR_VERSION, opset: int = OPSET) -> ModelProto:
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version, producer_name="farm-fuzz"
    )


def cnn_seed() -> ModelProto:
    """Conv-Relu with a paddle2onnx-style batch axis (``dim_value: -1``)."""
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Relu", ["c"], ["y"], name="relu"),
        ],
        "cnn",
        [_float("x", [-1, 3, 6, 6])],
        [_float("y", [-1, 2, 6, 6])],
        initializer=[_weights("w", (2, 3, 3, 3), 1), _weights("b", (2,), 2)],
    )
    return _model(graph)


def matmul_seed() -> ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
            helper.make_node("Add", ["m", "b"], ["y"], name="add"),
        ],
        "matmul",
        [_float("x", [1, 4])],
        [_float("y", [1, 3])],
        initializer=[_weights("w", (4, 3), 3), _weights("b", (3,), 4)],
    )
    return _model(graph)


def _branch(name: str, seed: int) -> GraphProto:
    return helper.make_graph(
        [helper.make_node("MatMul", ["x", f"{name}_w"], [f"{name}_y"], name=f"{name}_matmul")],
        name,
        [],
        [_float(f"{name}_y", [1, 3])],
        initializer=[_weights(f"{name}_w", (4, 3), seed)],
    )


def if_seed() -> ModelProto:
    """An If on the sign of the input's sum, whose branches hold the compute (a MatMul each)."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
            helper.make_node("Greater", ["s", "zero"], ["positive"], name="positive"),
            helper.make_node(
                "If",
                ["positive"],
                ["y"],
                then_branch=_branch("then", 5),
                else_branch=_branch("else", 6),
                name="by_sign",
            ),
        ],
        "if_model",
        [_float("x", [1, 4])],
        [_float("y", [1, 3])],
        initializer=[numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")],
    )
    return _model(graph)


def loop_seed() -> ModelProto:
    """A Loop of three MatMuls through a weight of the outer scope."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["v", "w"], ["v_next"], name="step"),
            helper.make_node("Identity", ["cond"], ["cond_out"], name="keep_going"),
        ],
        "body",
        [_value("i", TensorProto.INT64, []), _value("cond", TensorProto.BOOL, []), _float("v", [1, 4])],
        [_value("cond_out", TensorProto.BOOL, []), _float("v_next", [1, 4])],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "go", "x"], ["y"], body=body, name="loop")],
        "loop_model",
        [_float("x", [1, 4])],
        [_float("y", [1, 4])],
        initializer=[
            numpy_helper.from_array(np.array(3, dtype=np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "go"),
            _weights("w", (4, 4), 7),
        ],
    )
    return _model(graph)


def scan_seed() -> ModelProto:
    """A Scan that sums the rows of its input: a running state and the stacked partial sums."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["s", "row"], ["s_next"], name="accumulate"),
            helper.make_node("Identity", ["s_next"], ["partial"], name="emit"),
        ],
        "body",
        [_float("s", [4]), _float("row", [4])],
        [_float("s_next", [4]), _float("partial", [4])],
    )
    graph = helper.make_graph(
        [helper.make_node("Scan", ["s0", "x"], ["total", "partials"], body=body, num_scan_inputs=1, name="scan")],
        "scan_model",
        [_float("x", [5, 4])],
        [_float("total", [4]), _float("partials", [5, 4])],
        initializer=[numpy_helper.from_array(np.zeros(4, dtype=np.float32), "s0")],
    )
    return _model(graph)


SEEDS: dict[str, Callable[[], ModelProto]] = {
    "cnn": cnn_seed,
    "matmul": matmul_seed,
    "if": if_seed,
    "loop": loop_seed,
    "scan": scan_seed,
}


def external_parts(model: ModelProto) -> tuple[ModelProto, bytes]:
    """``model`` with every initializer moved into ``weights.bin``: the model proto and the file's bytes."""
    external = ModelProto()
    external.CopyFrom(model)
    blob = bytearray()
    for tensor in external.graph.initializer:
        data = numpy_helper.to_array(tensor).tobytes()
        offset = len(blob)
        blob += data
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
        tensor.ClearField("int64_data")
        tensor.data_location = TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(len(data)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return external, bytes(blob)


# --------------------------------------------------------------------------------------------------------- corpus


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.cases: list[Case] = []
        self._names: set[str] = set()

    def add(
        self, kind: str, name: str, detail: str, data: bytes | ModelProto, extra: dict[str, bytes] | None = None
    ) -> Path:
        if name in self._names:
            raise ValueError(f"two corpus cases are named {name}")
        self._names.add(name)
        folder = self.root / name
        folder.mkdir(parents=True)
        path = folder / MODEL_FILE
        path.write_bytes(data.SerializeToString() if isinstance(data, ModelProto) else data)
        for relative, content in (extra or {}).items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_bytes(content)
        self.cases.append(Case(name=name, kind=kind, detail=detail, path=path))
        return folder


def build_corpus(directory: str | os.PathLike[str], *, seed: int = 0) -> list[Case]:
    """Write every case under ``directory`` (which must be empty or absent) and return them, in a fixed order."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    writer = _Writer(root)
    rng = random.Random(seed)
    seeds = {name: make() for name, make in SEEDS.items()}
    ext_model, ext_blob = external_parts(seeds["matmul"])
    for name, model in seeds.items():
        writer.add("seed", f"seed-{name}", f"the valid {name} seed", model)
    writer.add(
        "seed", "seed-external", "the matmul seed with its weights in weights.bin", ext_model, {WEIGHTS_FILE: ext_blob}
    )
    serialized = {name: model.SerializeToString() for name, model in seeds.items()}
    serialized["external"] = ext_model.SerializeToString()
    _truncated(writer, serialized, ext_blob, rng)
    _random_bytes(writer, rng)
    _byte_flips(writer, serialized, ext_blob, rng)
    _wire(writer, serialized["matmul"])
    _fields(writer, seeds)
    _cyclic(writer)
    _huge_dims(writer)
    _external(writer, ext_model, ext_blob)
    _nested(writer)
    _types(writer)
    _zero_dims(writer)
    return writer.cases


def _extra_for(name: str, ext_blob: bytes) -> dict[str, bytes] | None:
    return {WEIGHTS_FILE: ext_blob} if name == "external" else None


def _truncated(writer: _Writer, serialized: dict[str, bytes], ext_blob: bytes, rng: random.Random) -> None:
    for name, data in serialized.items():
        size = len(data)
        cuts = sorted({0, 1, 2, 7, size // 4, size // 2, (3 * size) // 4, size - 1, rng.randrange(3, size - 1)})
        for cut in cuts:
            writer.add(
                "truncated",
                f"truncated-{name}-{cut:05d}",
                f"the {name} seed cut to {cut} of {size} bytes",
                data[:cut],
                _extra_for(name, ext_blob),
            )


def _random_bytes(writer: _Writer, rng: random.Random) -> None:
    for index in range(20):
        size = rng.choice((1, 3, 16, 100, 1000, 4000, 20000))
        data = bytearray(rng.randbytes(size))
        # Half of them start like a serialized ModelProto (field 1, ir_version), to get past a first-byte sniff.
        if index % 2:
            data[0] = 0x08
        writer.add("random-bytes", f"random-bytes-{index:02d}", f"{size} random bytes", bytes(data))


def _byte_flips(writer: _Writer, serialized: dict[str, bytes], ext_blob: bytes, rng: random.Random) -> None:
    for name, data in serialized.items():
        for index in range(10):
            mutated = bytearray(data)
            flips = rng.choice((1, 1, 2, 4, 16))
            for _ in range(flips):
                at = rng.randrange(len(mutated))
                mutated[at] = rng.randrange(256) if rng.random() < 0.5 else mutated[at] ^ (1 << rng.randrange(8))
            writer.add(
                "byte-flips",
                f"flips-{name}-{index:02d}",
                f"{flips} byte(s) of the {name} seed changed",
                bytes(mutated),
                _extra_for(name, ext_blob),
            )


# ------------------------------------------------------------------------------------------------ protobuf wire


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _fields_of(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """The top-level fields of a valid serialized message: (field number, wire type, the field's whole bytes)."""
    at = 0
    while at < len(data):
        start = at
        key, at = _read_varint(data, at)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, at = _read_varint(data, at)
        elif wire_type == 2:
            length, at = _read_varint(data, at)
            at += length
        elif wire_type == 5:
            at += 4
        elif wire_type == 1:
            at += 8
        else:
            raise ValueError(f"wire type {wire_type} in a seed")
        yield field, wire_type, data[start:at]


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _wire(writer: _Writer, data: bytes) -> None:
    fields = list(_fields_of(data))
    graph = next(raw for number, _, raw in fields if number == 7)
    without = {number: b"".join(raw for n, _, raw in fields if n != number) for number in (1, 7, 8)}
    cases = {
        "ir-version-as-bytes": _tag(1, 2) + _varint(3) + b"abc" + without[1],
        "graph-as-varint": without[7] + _tag(7, 0) + _varint(12345),
        "graph-length-past-end": without[7] + _tag(7, 2) + _varint(len(graph) * 50) + graph,
        "overlong-varint": _tag(1, 0) + b"\xff" * 11 + b"\x01" + without[1],
        "unknown-fields": data + _tag(999, 2) + _varint(5) + b"hello" + _tag(1000, 0) + _varint(7),
        "graph-twice": data + graph,
        "opset-as-fixed32": without[8] + _tag(8, 5) + b"\x01\x02\x03\x04",
        "unterminated-group": data + _tag(30, 3) + _tag(1, 0) + _varint(1),
        "stray-end-group": data + _tag(30, 4),
        "negative-length": without[7] + _tag(7, 2) + _varint(-1) + graph,
        "empty-graph-field": without[7] + _tag(7, 2) + _varint(0),
        "wire-type-7": data + _tag(2, 7) + b"\x00",
    }
    for name, mutated in cases.items():
        writer.add("wire", f"wire-{name}", f"protobuf wire damage: {name}", mutated)


# ------------------------------------------------------------------------------------------------ field values


def _copy(model: ModelProto) -> ModelProto:
    copied = ModelProto()
    copied.CopyFrom(model)
    return copied


def _node(model: ModelProto, name: str) -> NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _attribute(node: NodeProto, name: str) -> AttributeProto:
    return next(a for a in node.attribute if a.name == name)


def _field_mutations(seeds: dict[str, ModelProto]) -> Iterator[tuple[str, str, ModelProto]]:
    """(name, what is wrong, model) for every wrong-field case; each starts from a fresh copy of a seed."""

    def matmul() -> ModelProto:
        return _copy(seeds["matmul"])

    def cnn() -> ModelProto:
        return _copy(seeds["cnn"])

    for value in (0, 2, 999, -1, 2**62):
        model = matmul()
        model.ir_version = value
        yield f"ir-version-{value}", f"ir_version {value}", model
    for value in (0, 1, 9999, -3):
        model = matmul()
        model.opset_import[0].version = value
        yield f"opset-{value}", f"default-domain opset {value}", model
    model = matmul()
    del model.opset_import[:]
    yield "no-opset-import", "no opset_import at all", model
    model = matmul()
    model.opset_import[0].domain = "com.nowhere"
    yield "only-unknown-domain", "the only opset import is an unknown domain", model
    model = matmul()
    model.opset_import.append(helper.make_opsetid("com.nowhere", 1))
    _node(model, "add").domain = "com.nowhere"
    yield "node-in-unknown-domain", "a node in an imported but unknown domain", model
    model = matmul()
    _node(model, "add").domain = "com.never.imported"
    yield "node-domain-not-imported", "a node in a domain that is not imported", model
    model = matmul()
    _node(model, "add").op_type = "NoSuchOp"
    yield "unknown-op", "a node with an op no opset defines", model
    model = matmul()
    _node(model, "add").op_type = ""
    yield "empty-op", "a node with an empty op_type", model
    model = matmul()
    _node(model, "add").input[0] = "nowhere"
    yield "undefined-input", "a node reads a value nothing defines", model
    model = matmul()
    _node(model, "matmul").output[0] = "y"
    yield "duplicate-output", "two nodes write the output 'y'", model
    model = matmul()
    model.graph.node.append(helper.make_node("Relu", ["x"], ["m"], name="again"))
    yield "output-written-twice", "a value written by two nodes", model
    model = matmul()
    del model.graph.node[:], model.graph.input[:], model.graph.output[:], model.graph.initializer[:]
    yield "empty-graph", "a graph with nothing in it", model
    model = matmul()
    del model.graph.output[:]
    yield "no-outputs", "a graph without outputs", model
    model = matmul()
    model.graph.output[0].name = "never_made"
    yield "output-not-produced", "a graph output no node makes", model
    model = matmul()
    del model.graph.node[:]
    yield "no-nodes", "inputs and outputs but no nodes", model
    model = matmul()
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-3]
    yield "raw-data-short", "an initializer's raw_data 3 bytes short", model
    model = matmul()
    model.graph.initializer[0].raw_data += b"\x00" * 40
    yield "raw-data-long", "an initializer's raw_data 40 bytes long", model
    for dims, label in (
        ([2**40, 3], "2p40"),
        ([2**31, 2**31], "2p31-squared"),
        ([-4, 3], "negative"),
        ([4, 3, 0], "zero"),
        ([2**63 - 1], "int64-max"),
    ):
        model = matmul()
        del model.graph.initializer[0].dims[:]
        model.graph.initializer[0].dims.extend(dims)
        yield f"initializer-dims-{label}", f"an initializer declares dims {dims}", model
    for value in (999, 0, TensorProto.STRING, TensorProto.FLOAT8E4M3FN):
        model = matmul()
        model.graph.initializer[0].data_type = value
        yield f"initializer-type-{value}", f"an initializer with data_type {value}", model
    model = matmul()
    model.graph.initializer[0].float_data.extend([1.0, 2.0])
    yield "raw-and-float-data", "an initializer with raw_data and float_data", model
    model = matmul()
    model.graph.initializer[0].ClearField("raw_data")
    model.graph.initializer[0].int64_data.extend(range(12))
    yield "float-as-int64-data", "a float initializer holding int64_data", model
    model = matmul()
    model.graph.initializer[0].data_location = TensorProto.EXTERNAL
    yield "external-without-entries", "data_location EXTERNAL and no external_data entries", model
    for where, value in (("input", 999), ("input", 0), ("output", 999), ("output", -5)):
        model = matmul()
        values = model.graph.input if where == "input" else model.graph.output
        values[0].type.tensor_type.elem_type = value
        yield f"{where}-elem-type-{value}", f"graph {where} of elem_type {value}", model
    model = cnn()
    conv = _node(model, "conv")
    pads = _attribute(conv, "pads")
    pads.type = AttributeProto.FLOAT
    yield "attribute-type-mismatch", "Conv's pads says FLOAT but holds ints", model
    model = cnn()
    _node(model, "conv").attribute.append(helper.make_attribute("strides", "wide"))
    yield "attribute-wrong-type", "Conv's strides given as a string", model
    model = cnn()
    _attribute(_node(model, "conv"), "pads").type = AttributeProto.GRAPH
    yield "attribute-claims-graph", "Conv's pads says GRAPH but holds ints", model
    model = cnn()
    _attribute(_node(model, "conv"), "pads").type = AttributeProto.GRAPHS
    yield "attribute-claims-graphs", "Conv's pads says GRAPHS but holds ints", model
    model = cnn()
    _attribute(_node(model, "conv"), "pads").name = ""
    yield "attribute-no-name", "an attribute without a name", model
    model = cnn()
    _node(model, "conv").attribute.append(helper.make_attribute("pads", [0, 0, 0, 0]))
    yield "attribute-twice", "Conv's pads given twice", model
    model = cnn()
    _node(model, "conv").attribute.append(helper.make_attribute("no_such_attribute", 3))
    yield "attribute-unknown", "Conv with an attribute it does not have", model
    model = cnn()
    del _node(model, "conv").input[1:]
    yield "too-few-inputs", "Conv with only its data input", model
    model = cnn()
    _node(model, "relu").input.extend(["x", "x"])
    yield "too-many-inputs", "Relu with three inputs", model
    model = cnn()
    _node(model, "conv").output[0] = ""
    yield "empty-output-name", "Conv writes to the empty name", model
    model = cnn()
    model.graph.input[0].name = ""
    yield "empty-input-name", "a graph input without a name", model
    model = cnn()
    model.graph.input.append(model.graph.input[0])
    yield "duplicate-input", "the same graph input twice", model
    model = cnn()
    weights = model.graph.initializer[0]
    del weights.dims[:]
    weights.dims.extend([2, 3, 9])
    yield "kernel-rank-wrong", "Conv weights of rank 3 (same bytes)", model
    model = cnn()
    reversed_nodes = list(reversed(model.graph.node))
    del model.graph.node[:]
    model.graph.node.extend(reversed_nodes)
    yield "nodes-unsorted", "nodes not in topological order", model
    model = matmul()
    model.graph.node.insert(0, helper.make_node("Constant", [], ["orphan"], name="no_value"))
    yield "constant-without-value", "a Constant node with no value", model
    model = matmul()
    shape = numpy_helper.from_array(np.array([7, 7], dtype=np.int64), "bad_shape")
    model.graph.initializer.append(shape)
    _node(model, "add").output[0] = "added"
    model.graph.node.append(helper.make_node("Reshape", ["added", "bad_shape"], ["y"], name="reshape"))
    yield "reshape-impossible", "a Reshape of 3 values to [7, 7]", model
    model = matmul()
    model.training_info.add().algorithm.CopyFrom(model.graph)
    yield "training-info", "a training_info block", model
    model = matmul()
    model.doc_string = "x" * 200_000
    model.metadata_props.add(key="", value="\x00" * 10)
    yield "huge-doc-string", "a 200 kB doc string and an empty metadata key", model
    model = matmul()
    model.functions.append(
        helper.make_function(
            "local",
            "Twice",
            ["a"],
            ["b"],
            [helper.make_node("Twice", ["a"], ["b"], domain="local")],
            [helper.make_opsetid("", OPSET)],
        )
    )
    model.opset_import.append(helper.make_opsetid("local", 1))
    node = _node(model, "add")
    node.output[0] = "sum"
    model.graph.node.append(helper.make_node("Twice", ["sum"], ["y"], domain="local", name="recursive"))
    yield "recursive-function", "a local function that calls itself", model
    model = matmul()
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.ones(2, np.float32), "v"),
        numpy_helper.from_array(np.array([5, 99], np.int64), "i"),
        [2, 2],
    )
    sparse.values.name = "sp"
    model.graph.sparse_initializer.append(sparse)
    yield "sparse-bad-indices", "a sparse initializer whose indices leave its shape", model


def _fields(writer: _Writer, seeds: dict[str, ModelProto]) -> None:
    for name, detail, model in _field_mutations(seeds):
        writer.add("fields", f"fields-{name}", detail, model)


# ------------------------------------------------------------------------------------------------------- cyclic


def _relu_model(
    nodes: list[NodeProto], inputs: list[onnx.ValueInfoProto], output: str, shape: Sequence[int] = (1, 4)
) -> ModelProto:
    return _model(helper.make_graph(nodes, "g", inputs, [_float(output, list(shape))]))


def _cyclic(writer: _Writer) -> None:
    x = [_float("x", [1, 4])]
    cases: dict[str, tuple[str, ModelProto]] = {
        "pair": (
            "A reads B's output and B reads A's",
            _relu_model(
                [helper.make_node("Relu", ["b"], ["a"], name="A"), helper.make_node("Relu", ["a"], ["b"], name="B")],
                x,
                "b",
            ),
        ),
        "self": (
            "a node reads its own output",
            _relu_model([helper.make_node("Relu", ["a"], ["a"], name="A")], x, "a"),
        ),
        "beside-a-path": (
            "a valid path from x and a cycle feeding the output",
            _relu_model(
                [
                    helper.make_node("Relu", ["x"], ["r"], name="R"),
                    helper.make_node("Add", ["r", "c2"], ["c1"], name="A"),
                    helper.make_node("Relu", ["c1"], ["c2"], name="B"),
                ],
                x,
                "c2",
            ),
        ),
        "ring": (
            "ten nodes in a ring",
            _relu_model(
                [helper.make_node("Relu", [f"v{(i + 9) % 10}"], [f"v{i}"], name=f"n{i}") for i in range(10)], x, "v9"
            ),
        ),
    }
    cycle = helper.make_graph(
        [helper.make_node("Relu", ["q"], ["p"]), helper.make_node("Relu", ["p"], ["q"])],
        "branch",
        [],
        [_float("q", [1, 4])],
    )
    plain = helper.make_graph([helper.make_node("Relu", ["x"], ["z"])], "plain", [], [_float("z", [1, 4])])
    cases["in-if-branch"] = (
        "a cycle inside an If branch",
        _model(
            helper.make_graph(
                [
                    helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                    helper.make_node("Cast", ["s"], ["c"], to=9),
                    helper.make_node("If", ["c"], ["y"], then_branch=cycle, else_branch=plain),
                ],
                "g",
                x,
                [_float("y", [1, 4])],
            )
        ),
    )
    body = helper.make_graph(
        [
            helper.make_node("Add", ["v", "w2"], ["w1"]),
            helper.make_node("Relu", ["w1"], ["w2"]),
            helper.make_node("Identity", ["cond"], ["cond_out"]),
        ],
        "body",
        [_value("i", TensorProto.INT64, []), _value("cond", TensorProto.BOOL, []), _float("v", [1, 4])],
        [_value("cond_out", TensorProto.BOOL, []), _float("w2", [1, 4])],
    )
    loop = _model(
        helper.make_graph(
            [helper.make_node("Loop", ["trips", "", "x"], ["y"], body=body)],
            "g",
            x,
            [_float("y", [1, 4])],
            initializer=[numpy_helper.from_array(np.array(2, dtype=np.int64), "trips")],
        )
    )
    cases["in-loop-body"] = ("a cycle inside a Loop body", loop)
    for name, (detail, model) in cases.items():
        writer.add("cyclic", f"cyclic-{name}", detail, model)


# ---------------------------------------------------------------------------------------------------- huge dims


def _huge_dims(writer: _Writer) -> None:
    def relu(in_shape: Sequence[int | str | None] | None, out_shape: Sequence[int | str | None] | None) -> ModelProto:
        return _model(
            helper.make_graph(
                [helper.make_node("Relu", ["x"], ["y"], name="relu")],
                "g",
                [_float("x", in_shape)],
                [_float("y", out_shape)],
            )
        )

    million = 1_000_000
    cases: dict[str, tuple[str, ModelProto]] = {
        "input-1e12": ("input [1, 3, 1e6, 1e6]", relu([1, 3, million, million], [1, 3, million, million])),
        "input-2p62": ("input [2**62]", relu([2**62], [2**62])),
        "input-int64-max": ("input [2**63 - 1]", relu([2**63 - 1], [2**63 - 1])),
        "input-product-overflows": ("input [2**32, 2**32, 2**32]", relu([2**32] * 3, None)),
        "input-1e10": ("input [1e5, 1e5]", relu([100_000, 100_000], [100_000, 100_000])),
        "input-3p6GB": ("input [1, 30000, 30000]", relu([1, 30_000, 30_000], [1, 30_000, 30_000])),
        "input-dynamic-batch-huge": ("input [-1, 1e6, 1e6]", relu([-1, million, million], [-1, million, million])),
        "input-rank-64": ("input of rank 64, every dim 1", relu([1] * 64, [1] * 64)),
        "input-rank-65": ("input of rank 65, every dim 1", relu([1] * 65, [1] * 65)),
        "input-rank-1000": ("input of rank 1000, every dim 1", relu([1] * 1000, None)),
        "input-negative": ("input [-5, 4], a negative batch", relu([-5, 4], [-5, 4])),
        "input-negative-inner": ("input [1, -7]", relu([1, -7], [1, -7])),
        "output-1e12": ("output [1, 3, 1e6, 1e6] for a [1, 4] input", relu([1, 4], [1, 3, million, million])),
        "output-2p62": ("output [2**62, 2**62] for a [1, 4] input", relu([1, 4], [2**62, 2**62])),
    }
    expand = _model(
        helper.make_graph(
            [helper.make_node("Expand", ["x", "shape"], ["y"], name="expand")],
            "g",
            [_float("x", [1, 1])],
            [_float("y", [million, million])],
            initializer=[numpy_helper.from_array(np.array([million, million], dtype=np.int64), "shape")],
        )
    )
    cases["expand-to-1e12"] = ("an Expand of a [1, 1] input to [1e6, 1e6] (4 TB) at run time", expand)
    for name, (detail, model) in cases.items():
        writer.add("huge-dims", f"huge-{name}", detail, model)


# ------------------------------------------------------------------------------------------------ external data


def _relocated(model: ModelProto, **changes: str | None) -> ModelProto:
    """The external model with each external_data key set (or removed, for None) on its first tensor."""
    changed = _copy(model)
    tensor = changed.graph.initializer[0]
    entries = {e.key: e.value for e in tensor.external_data}
    for key, value in changes.items():
        if value is None:
            entries.pop(key, None)
        else:
            entries[key] = value
    del tensor.external_data[:]
    for key, value in entries.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return changed


def _external(writer: _Writer, model: ModelProto, blob: bytes) -> None:
    weights = {WEIGHTS_FILE: blob}
    outside = writer.root / "outside.bin"
    outside.write_bytes(blob)
    cases: dict[str, tuple[str, ModelProto, dict[str, bytes]]] = {
        "offset-2p62": ("offset 2**62", _relocated(model, offset=str(2**62)), weights),
        "offset-negative": ("offset -1", _relocated(model, offset="-1"), weights),
        "offset-not-a-number": ("offset 'abc'", _relocated(model, offset="abc"), weights),
        "offset-float": ("offset '1e3'", _relocated(model, offset="1e3"), weights),
        "length-2p62": ("length 2**62", _relocated(model, length=str(2**62)), weights),
        "length-negative": ("length -48", _relocated(model, length="-48"), weights),
        "length-not-a-number": ("length '12 bytes'", _relocated(model, length="12 bytes"), weights),
        "length-zero": ("length 0 for a 48-byte tensor", _relocated(model, length="0"), weights),
        "parent-folder": (
            "location '../outside.bin' (the file exists)",
            _relocated(model, location="../outside.bin"),
            weights,
        ),
        "sneaky-parent": (
            "location 'sub/../../outside.bin'",
            _relocated(model, location="sub/../../outside.bin"),
            weights,
        ),
        "absolute": ("location '/etc/hostname'", _relocated(model, location="/etc/hostname"), weights),
        "missing-file": ("location 'nope.bin', which is not there", _relocated(model, location="nope.bin"), {}),
        "empty-location": ("location ''", _relocated(model, location=""), weights),
        "no-location": ("no location key", _relocated(model, location=None), weights),
        "directory": ("location 'sub', a folder", _relocated(model, location="sub"), {"sub/keep": b""}),
        "null-byte": ("location 'a\\x00b'", _relocated(model, location="a\x00b"), weights),
        "long-name": ("a 5000-character location", _relocated(model, location="w" * 5000), weights),
        "file-too-short": ("weights.bin 10 bytes shorter than the tensors", model, {WEIGHTS_FILE: blob[:-10]}),
        "empty-file": ("weights.bin empty", model, {WEIGHTS_FILE: b""}),
        "unknown-key": ("an external_data key onnx does not know", _relocated(model, basepath="/"), weights),
    }
    for name, (detail, mutated, extra) in cases.items():
        writer.add("external-data", f"external-{name}", detail, mutated, extra)
    folder = writer.add(
        "external-data", "external-symlink-outside", "weights.bin is a symlink to a file outside", model
    )
    (folder / WEIGHTS_FILE).symlink_to(outside)
    folder = writer.add("external-data", "external-fifo", "weights.bin is a named pipe nobody writes to", model)
    os.mkfifo(folder / WEIGHTS_FILE)
    constant = _copy(model)
    value = numpy_helper.from_array(np.ones(3, np.float32), "c")
    value.ClearField("raw_data")
    value.data_location = TensorProto.EXTERNAL
    for key, text in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "12")):
        entry = value.external_data.add()
        entry.key, entry.value = key, text
    _node(constant, "add").output[0] = "added"
    constant.graph.node.extend(
        [helper.make_node("Constant", [], ["c"], value=value), helper.make_node("Add", ["added", "c"], ["y"])]
    )
    writer.add(
        "external-data",
        "external-constant-escapes",
        "a Constant node's tensor in '../../etc/passwd'",
        constant,
        weights,
    )


# ------------------------------------------------------------------------------------------------------ nested


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _tag(field, 2) + _varint(len(payload)) + payload


def _with_graph_attributes(node: NodeProto, graphs: dict[str, bytes]) -> bytes:
    """``node`` serialized with GRAPH attributes appended as raw bytes.

    Deep models are put together at the wire level: the protobuf runtime refuses to copy or parse messages nested
    more than 100 deep, which is exactly what these cases are about.
    """
    data = node.SerializeToString()
    for name, graph in graphs.items():
        attribute = (
            _length_delimited(1, name.encode())
            + _length_delimited(6, graph)
            + _tag(20, 0)
            + _varint(AttributeProto.GRAPH)
        )
        data += _length_delimited(5, attribute)
    return data


def _graph_with(graph: GraphProto, *nodes: bytes) -> bytes:
    """``graph`` serialized with ``nodes`` (already serialized) appended after its own nodes."""
    return graph.SerializeToString() + b"".join(_length_delimited(1, node) for node in nodes)


def _model_bytes(graph: bytes, *, initializer: Sequence[TensorProto] = ()) -> bytes:
    shell = _model(helper.make_graph([], "unused", [], []))
    shell.ClearField("graph")
    extra = b"".join(_length_delimited(5, t.SerializeToString()) for t in initializer)
    return shell.SerializeToString() + _length_delimited(7, graph + extra)


def nested_if(depth: int) -> bytes:
    """If inside If, ``depth`` levels, each level's then branch holding the next, the innermost a Relu of x."""
    leaf = helper.make_graph([helper.make_node("Relu", ["x"], ["leaf"])], "leaf", [], [_float("leaf", [1, 4])])
    leaf_bytes = leaf.SerializeToString()
    inner = leaf_bytes
    # Only the then branch nests: nesting in both would double the model at every level.
    for level in range(depth):
        node = _with_graph_attributes(
            helper.make_node("If", ["c"], [f"o{level}"]), {"then_branch": inner, "else_branch": leaf_bytes}
        )
        inner = _graph_with(helper.make_graph([], f"then{level}", [], [_float(f"o{level}", [1, 4])]), node)
    top = _with_graph_attributes(
        helper.make_node("If", ["c"], ["y"]), {"then_branch": inner, "else_branch": leaf_bytes}
    )
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), helper.make_node("Cast", ["s"], ["c"], to=9)],
        "nested",
        [_float("x", [1, 4])],
        [_float("y", [1, 4])],
    )
    return _model_bytes(_graph_with(graph, top))


def _loop_level(level: str, output: str, nodes: Sequence[NodeProto], *deep: bytes) -> bytes:
    """A Loop body; its names carry ``level`` because the checker wants every name unique across scopes."""
    graph = helper.make_graph(
        [*nodes, helper.make_node("Identity", [f"cond{level}"], [f"cond_out{level}"])],
        f"body{level}",
        [
            _value(f"i{level}", TensorProto.INT64, []),
            _value(f"cond{level}", TensorProto.BOOL, []),
            _float(f"v{level}", [1, 4]),
        ],
        [_value(f"cond_out{level}", TensorProto.BOOL, []), _float(output, [1, 4])],
    )
    return _graph_with(graph, *deep)


def nested_loop(depth: int) -> bytes:
    """Loop inside Loop, ``depth`` levels, each running its body once; the innermost is a Relu."""
    inner = _loop_level("_leaf", "relu_out", [helper.make_node("Relu", ["v_leaf"], ["relu_out"])])
    for level in range(depth):
        loop = _with_graph_attributes(
            helper.make_node("Loop", ["one", "", f"v{level}"], [f"out{level}"]), {"body": inner}
        )
        inner = _loop_level(str(level), f"out{level}", [], loop)
    top = _with_graph_attributes(helper.make_node("Loop", ["one", "", "x"], ["y"]), {"body": inner})
    graph = helper.make_graph([], "nested", [_float("x", [1, 4])], [_float("y", [1, 4])])
    return _model_bytes(
        _graph_with(graph, top), initializer=[numpy_helper.from_array(np.array(1, dtype=np.int64), "one")]
    )


def _parsed(data: bytes) -> ModelProto:
    model = ModelProto()
    model.ParseFromString(data)
    return model


def _nested(writer: _Writer) -> None:
    for depth in (3, 20, 30, 50, 100, 400):
        writer.add("nested", f"nested-if-{depth}", f"If inside If, {depth} levels", nested_if(depth))
    for depth in (10, 40):
        writer.add("nested", f"nested-loop-{depth}", f"Loop inside Loop, {depth} levels", nested_loop(depth))
    model = _parsed(nested_if(2))
    model.graph.node[2].attribute[0].g.node[0].input[0] = "defined_deeper"
    writer.add("nested", "nested-scope-error", "a branch reads a name no scope around it defines", model)
    model = _parsed(nested_if(1))
    del model.graph.node[2].attribute[1].g.output[:]
    writer.add("nested", "nested-branch-no-outputs", "an else branch without outputs", model)
    model = _parsed(nested_if(1))
    model.graph.node[2].attribute[0].g.CopyFrom(GraphProto())
    writer.add("nested", "nested-empty-branch", "an empty then branch", model)
    model = _parsed(nested_if(1))
    del model.graph.node[2].attribute[1:]
    writer.add("nested", "nested-missing-branch", "an If without its else branch", model)
    model = _parsed(nested_loop(1))
    del model.graph.node[0].attribute[0].g.output[0]
    writer.add("nested", "nested-loop-no-cond", "a Loop body that does not return its condition", model)


# ------------------------------------------------------------------------------------------------------- types


def _types(writer: _Writer) -> None:
    def identity(value: onnx.ValueInfoProto, out: onnx.ValueInfoProto | None = None) -> ModelProto:
        out = out or onnx.ValueInfoProto(name="y", type=value.type)
        return _model(helper.make_graph([helper.make_node("Identity", [value.name], [out.name])], "g", [value], [out]))

    float_type = helper.make_tensor_type_proto(TensorProto.FLOAT, [1, 4])
    cases: dict[str, tuple[str, ModelProto]] = {
        "string-input": ("a string tensor input", identity(_value("x", TensorProto.STRING, [1, 2]))),
        "bfloat16-input": ("a bfloat16 input", identity(_value("x", TensorProto.BFLOAT16, [1, 4]))),
        "float8-input": ("a float8e4m3fn input", identity(_value("x", TensorProto.FLOAT8E4M3FN, [1, 4]))),
        "int4-input": ("an int4 input", identity(_value("x", TensorProto.INT4, [1, 4]))),
        "complex-input": ("a complex64 input", identity(_value("x", TensorProto.COMPLEX64, [1, 4]))),
        "uint64-input": ("a uint64 input", identity(_value("x", TensorProto.UINT64, [1, 4]))),
        "float16-input": ("a float16 input", identity(_value("x", TensorProto.FLOAT16, [1, 4]))),
        "bool-input": ("a bool input and output", identity(_value("x", TensorProto.BOOL, [1, 4]))),
        "scalar-input": ("a rank-0 float input", identity(_float("x", []))),
        "no-shape-input": ("a float input of unknown rank", identity(_float("x", None))),
        "sequence-input": (
            "a sequence input",
            identity(helper.make_tensor_sequence_value_info("x", TensorProto.FLOAT, [1, 4])),
        ),
        "map-input": (
            "a map input",
            identity(onnx.ValueInfoProto(name="x", type=helper.make_map_type_proto(TensorProto.INT64, float_type))),
        ),
        "optional-input": (
            "an optional input",
            identity(onnx.ValueInfoProto(name="x", type=helper.make_optional_type_proto(float_type))),
        ),
        "sparse-input": (
            "a sparse tensor input",
            identity(helper.make_sparse_tensor_value_info("x", TensorProto.FLOAT, [1, 4])),
        ),
        "untyped-input": ("an input with no type at all", identity(onnx.ValueInfoProto(name="x"), _float("y", [1, 4]))),
        "string-output": (
            "a float input cast to a string output",
            _model(
                helper.make_graph(
                    [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.STRING)],
                    "g",
                    [_float("x", [1, 4])],
                    [_value("y", TensorProto.STRING, [1, 4])],
                )
            ),
        ),
        "string-initializer-raw": (
            "a string initializer stored as raw_data",
            _model(
                helper.make_graph(
                    [helper.make_node("Identity", ["s"], ["y"])],
                    "g",
                    [_float("x", [1, 4])],
                    [_value("y", TensorProto.STRING, [2])],
                    initializer=[TensorProto(name="s", data_type=TensorProto.STRING, dims=[2], raw_data=b"abcd")],
                )
            ),
        ),
    }
    for name, (detail, model) in cases.items():
        writer.add("types", f"types-{name}", detail, model)


def _zero_dims(writer: _Writer) -> None:
    def relu(in_shape: Sequence[int | None], out_shape: Sequence[int | None]) -> ModelProto:
        return _model(
            helper.make_graph(
                [helper.make_node("Relu", ["x"], ["y"])], "g", [_float("x", in_shape)], [_float("y", out_shape)]
            )
        )

    slice_graph = helper.make_graph(
        [helper.make_node("Slice", ["x", "start", "end"], ["y"])],
        "g",
        [_float("x", [1, 4])],
        [_float("y", [1, 0])],
        initializer=[
            numpy_helper.from_array(np.array([2], np.int64), "start"),
            numpy_helper.from_array(np.array([2], np.int64), "end"),
        ],
    )
    empty_weights = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [_float("x", [1, 4])],
        [_float("y", [1, 0])],
        initializer=[numpy_helper.from_array(np.zeros((4, 0), np.float32), "w")],
    )
    cases: dict[str, tuple[str, ModelProto]] = {
        "batch-zero": ("input [0, 4]", relu([0, 4], [0, 4])),
        "inner-zero": ("input [1, 0]", relu([1, 0], [1, 0])),
        "all-zero": ("input [0, 0, 0]", relu([0, 0, 0], [0, 0, 0])),
        "empty-output": ("a Slice to an empty [1, 0] output", _model(slice_graph)),
        "empty-weights": ("a MatMul with [4, 0] weights", _model(empty_weights)),
    }
    for name, (detail, model) in cases.items():
        writer.add("zero-dims", f"zero-{name}", detail, model)
