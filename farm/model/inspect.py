"""What the controller knows of a model before any container runs: read with onnx only, never onnxruntime.

Every problem with the file itself (missing, not ONNX, cut short, external data gone) is found here, on the host,
so that it is reported once as a ModelError rather than once per target as a failed run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import onnx
from onnx import ModelProto, NodeProto, TensorProto, TypeProto

from farm.errors import ModelError, one_line
from farm.host.files import file_sha256
from farm.job.codec import json_object
from farm.job.graph import all_graphs, all_nodes, count_nodes
from farm.job.report import ModelSummary, TensorSummary
from farm.model.shapes import Dim

_EXPORT_HINT = "pass a .onnx file exported by torch.onnx.export or onnx.save"
# numpy's names where numpy has the type, so a report reads "float32" and not "FLOAT".
_DTYPE_NAMES: dict[int, str] = {
    TensorProto.FLOAT: "float32",
    TensorProto.DOUBLE: "float64",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.INT8: "int8",
    TensorProto.INT16: "int16",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
    TensorProto.UINT8: "uint8",
    TensorProto.UINT16: "uint16",
    TensorProto.UINT32: "uint32",
    TensorProto.UINT64: "uint64",
    TensorProto.BOOL: "bool",
    TensorProto.STRING: "string",
    TensorProto.COMPLEX64: "complex64",
    TensorProto.COMPLEX128: "complex128",
}
_DEFAULT_DOMAINS = ("", "ai.onnx")
# protobuf's default recursion limit: a model, its graph, a node, an attribute, a subgraph, ... count one each.
_PROTOBUF_DEPTH = 100


@dataclass(frozen=True, kw_only=True, slots=True)
class TensorInfo:
    """A graph input or output. ``shape`` is None when even the rank is unknown."""

    name: str
    dtype: str
    shape: tuple[Dim, ...] | None

    @property
    def dynamic_dims(self) -> tuple[int, ...]:
        """Indexes of the dimensions that are not a fixed size."""
        if self.shape is None:
            return ()
        return tuple(i for i, dim in enumerate(self.shape) if not isinstance(dim, int))

    @property
    def is_static(self) -> bool:
        return self.shape is not None and not self.dynamic_dims

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        shape = data["shape"]
        return cls(name=data["name"], dtype=data["dtype"], shape=None if shape is None else tuple(shape))

    def summary(self) -> TensorSummary:
        """The tensor as the report lists it."""
        return TensorSummary(name=self.name, dtype=self.dtype, shape=self.shape)


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelInfo:
    """The facts about one model file. ``model_summary()`` is the report's "model" block; ``to_dict`` holds
    everything."""

    path: str
    sha256: str
    size_bytes: int
    ir_version: int
    opsets: Mapping[str, int]
    op_types: frozenset[str]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    external_data: tuple[str, ...] = ()
    # Conv, MatMul, Gemm, LSTM, ... (farm.job.types.QUANTIZABLE_OPS), counted inside If/Loop/Scan bodies too.
    quantizable_nodes: int = 0
    quantizable_in_subgraphs: int = 0

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    def input(self, name: str) -> TensorInfo:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        raise KeyError(name)

    def model_summary(self, path: str | os.PathLike[str] | None = None) -> ModelSummary:
        """The report's "model" block, naming the model as the user gave it (``path``) when that differs."""
        return ModelSummary(
            path=self.path if path is None else str(path),
            sha256=self.sha256,
            ir_version=self.ir_version,
            opsets=dict(self.opsets),
            inputs=tuple(t.summary() for t in self.inputs),
            outputs=tuple(t.summary() for t in self.outputs),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            path=data["path"],
            sha256=data["sha256"],
            size_bytes=data["size_bytes"],
            ir_version=data["ir_version"],
            opsets=dict(data["opsets"]),
            op_types=frozenset(data["op_types"]),
            inputs=tuple(TensorInfo.from_dict(t) for t in data["inputs"]),
            outputs=tuple(TensorInfo.from_dict(t) for t in data["outputs"]),
            external_data=tuple(data.get("external_data", ())),
            quantizable_nodes=data.get("quantizable_nodes", 0),
            quantizable_in_subgraphs=data.get("quantizable_in_subgraphs", 0),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **json_object(self.model_summary()),
            "size_bytes": self.size_bytes,
            "op_types": sorted(self.op_types),
            "external_data": list(self.external_data),
            "quantizable_nodes": self.quantizable_nodes,
            "quantizable_in_subgraphs": self.quantizable_in_subgraphs,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeUse:
    """One node, as a runtime's kernels see it: op, domain, and its first input's type where onnx infers it."""

    name: str
    op: str
    domain: str
    input_type: str | None
    in_subgraph: bool


def node_uses(path: str | os.PathLike[str]) -> list[NodeUse]:
    """Every node of the model, If/Loop/Scan bodies included, with types from onnx's shape inference."""
    model = onnx.load(str(path), load_external_data=False)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference fails on some real models; the kernel check then goes without types
        inferred = model
    types: dict[str, str] = {}
    for graph, _ in all_graphs(inferred.graph):
        for value in (*graph.input, *graph.value_info, *graph.output):
            if value.type.WhichOneof("value") == "tensor_type":
                _note_type(types, value.name, value.type.tensor_type.elem_type)
        for tensor in graph.initializer:
            _note_type(types, tensor.name, tensor.data_type)
    uses = []
    for graph, depth in all_graphs(model.graph):
        for node in graph.node:
            first = node.input[0] if node.input else ""
            uses.append(
                NodeUse(
                    name=node.name,
                    op=node.op_type,
                    domain=_domain_name(node.domain),
                    input_type=types.get(first),
                    in_subgraph=depth > 0,
                )
            )
    return uses


def _note_type(types: dict[str, str], name: str, elem_type: int) -> None:
    # A number ONNX gives no type (a corrupt or hand-edited model) leaves the kernel check without a type.
    known = _elem_type_name(elem_type)
    if known is not None and elem_type != TensorProto.UNDEFINED:
        types[name] = f"tensor({known})"


def _elem_type_name(elem_type: int) -> str | None:
    """ONNX's name of an element type in lower case ("float", "int64"), or None for a number it does not define."""
    try:
        return str(TensorProto.DataType.Name(elem_type)).lower()
    except ValueError:
        return None


def inspect_model(path: str | os.PathLike[str]) -> ModelInfo:
    """Read and check ``path``; raise ModelError with a one-line fix for anything that would fail later."""
    model_path = Path(path)
    if not model_path.exists():
        raise ModelError(f"{model_path} does not exist", fix="pass the path of an existing .onnx file")
    if not model_path.is_file():
        raise ModelError(f"{model_path} is not a file", fix=_EXPORT_HINT)
    model = _parse(model_path)
    _check_text(model_path, model)
    external = _check_external_data(model, model_path)
    _check(model_path, model)
    _check_element_types(model_path, model)
    graph = model.graph
    nodes = count_nodes(model)
    initializers = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    return ModelInfo(
        path=str(model_path),
        sha256=file_sha256(model_path),
        size_bytes=model_path.stat().st_size,
        ir_version=model.ir_version,
        opsets={_domain_name(o.domain): o.version for o in model.opset_import},
        op_types=frozenset(_op_name(node) for node in all_nodes(model)),
        quantizable_nodes=nodes.quantizable,
        quantizable_in_subgraphs=nodes.quantizable_in_subgraphs,
        inputs=tuple(_tensor_info(v.name, v.type) for v in graph.input if v.name not in initializers),
        outputs=tuple(_tensor_info(v.name, v.type) for v in graph.output),
        external_data=external,
    )


def _parse(path: Path) -> ModelProto:
    name = path.name
    try:
        # External tensors are checked for presence below; loading them would read gigabytes for nothing.
        model = onnx.load(str(path), load_external_data=False)
    except OSError as exc:
        raise ModelError(f"{name} cannot be read ({one_line(exc)})", fix="check the file's permissions") from exc
    except Exception as exc:  # protobuf's DecodeError and onnx's own parse errors share no narrower base
        if _too_deep(exc):
            raise ModelError(
                f"{name} nests its subgraphs deeper than protobuf reads ({_PROTOBUF_DEPTH} levels of messages; "
                "about 30 If/Loop/Scan bodies inside one another)",
                fix="export the model with less deeply nested control flow (unroll or inline the inner If/Loop)",
            ) from exc
        if _looks_like_onnx(path):
            raise ModelError(
                f"{name} is truncated or corrupt (protobuf parse failed: {one_line(exc)})",
                fix="copy or export the model again and check that the whole file arrived",
            ) from exc
        raise ModelError(
            f"{name} is not an ONNX model (protobuf parse failed: {one_line(exc)})", fix=_EXPORT_HINT
        ) from exc
    if not model.HasField("graph") and model.ir_version == 0:
        # Arbitrary bytes sometimes parse as a message made only of unknown fields.
        raise ModelError(f"{name} is not an ONNX model (it has no graph and no IR version)", fix=_EXPORT_HINT)
    missing = [
        part
        for part, absent in (
            ("the IR version", model.ir_version == 0),
            ("the graph", not model.HasField("graph")),
            ("the graph's outputs", model.HasField("graph") and not model.graph.output),
            ("the opset imports", not model.opset_import),
        )
        if absent
    ]
    if missing:
        # Fields are serialized in field-number order, so a file cut between fields parses as a shorter model.
        raise ModelError(
            f"{name} is truncated or incomplete (it lacks {', '.join(missing)})",
            fix="copy or export the model again and check that the whole file arrived",
        )
    return model


def _check_text(path: Path, model: ModelProto) -> None:
    """Every name farm reads must be text: protobuf hands a proto2 string field that is not valid UTF-8 back as bytes,
    which no file name, report or comparison with a str can use."""
    for value in _names(model):
        if isinstance(value, bytes):
            raise ModelError(
                f"{path.name} holds a name that is not UTF-8 text ({value[:60]!r})",
                fix="re-export the model: ONNX names, domains and external-data entries are UTF-8 strings",
            )


def _names(model: ModelProto) -> Iterator[str | bytes]:
    """The strings of ``model`` that farm reads: domains, names, op types, dims, external-data entries."""
    for opset in model.opset_import:
        yield opset.domain
    for graph, _ in all_graphs(model.graph):
        for value in (*graph.input, *graph.output, *graph.value_info):
            yield value.name
            if value.type.WhichOneof("value") == "tensor_type":
                yield from (dim.dim_param for dim in value.type.tensor_type.shape.dim)
        for node in graph.node:
            yield from (node.name, node.op_type, node.domain, *node.input, *node.output)
            yield from (attribute.name for attribute in node.attribute)
    for tensor in _all_tensors(model):
        yield tensor.name
        for entry in tensor.external_data:
            yield from (entry.key, entry.value)
    for function in model.functions:
        yield from (function.name, function.domain)
        for node in function.node:
            yield from (node.op_type, node.domain)


def _too_deep(exc: Exception) -> bool:
    """protobuf stops parsing at its recursion limit with a DecodeError of its own words, which are not
    "truncated": upb says "Exceeded upb_DecodeOptions_MaxDepth", the C++ runtime "nesting too deep"."""
    text = str(exc)
    return "MaxDepth" in text or "too deep" in text.lower()


def _looks_like_onnx(path: Path) -> bool:
    """A serialized ModelProto starts with field 1 (ir_version, varint) or, rarely, another known field."""
    with path.open("rb") as stream:
        head = stream.read(1)
    # Tags of ModelProto fields 1 to 8 and 14/20 (ir_version, producer_*, domain, model_version, doc_string,
    # graph, opset_import, metadata_props, training_info/functions).
    return bool(head) and head[0] in {0x08, 0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2}


def _check(path: Path, model: ModelProto) -> None:
    try:
        # The path form streams big models and resolves external data relative to the model's folder.
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise ModelError(
            f"{path.name} fails the ONNX checker: {one_line(exc)}",
            fix="re-export the model, or run onnx.checker.check_model on it to see the full error",
        ) from exc
    except Exception as exc:  # the C++ checker raises plain RuntimeError/ValueError/DecodeError alike
        raise ModelError(
            f"{path.name} could not be checked ({one_line(exc)})",
            fix="re-export the model, or run onnx.checker.check_model on it to see the full error",
        ) from exc


def _check_element_types(path: Path, model: ModelProto) -> None:
    """The checker lets a graph input, output or initializer declare an element type ONNX does not define (999);
    every runtime refuses such a model, and farm could not name its type anywhere."""
    graph = model.graph
    declared = [
        (f"{kind} '{v.name}'", v.type.tensor_type.elem_type)
        for kind, values in (("input", graph.input), ("output", graph.output))
        for v in values
        if v.type.WhichOneof("value") == "tensor_type"
    ]
    declared += [(f"initializer '{t.name}'", t.data_type) for g, _ in all_graphs(graph) for t in g.initializer]
    for what, elem_type in declared:
        if _elem_type_name(elem_type) is None:
            raise ModelError(
                f"{path.name} declares {what} with element type {elem_type}, which ONNX does not define",
                fix="re-export the model; ONNX's element types are TensorProto.DataType (FLOAT = 1, INT64 = 7, ...)",
            )


def external_locations(model: ModelProto) -> tuple[str, ...]:
    """The files, relative to the model's folder, that hold its external tensors."""
    return tuple(sorted(_external_extents(model)))


def _external_extents(model: ModelProto, name: str = "the model") -> dict[str, int]:
    """Each external data file and the byte offset its last tensor ends at."""
    extents: dict[str, int] = {}
    for tensor in _all_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        end = _byte_count(info, "offset", tensor, name) + _byte_count(info, "length", tensor, name)
        extents[location] = max(extents.get(location, 0), end)
    return extents


def _byte_count(info: Mapping[str, str], key: str, tensor: TensorProto, name: str) -> int:
    """An external tensor's offset or length: decimal digits, as onnx writes them (absent means 0)."""
    text = info.get(key, "")
    if not text:
        return 0
    # isdecimal() alone would pass other scripts' digits, which the runtimes' loaders do not read.
    if not (text.isascii() and text.isdecimal()):
        raise ModelError(
            f"{name} gives external tensor '{tensor.name}' the {key} {_quoted(text)}, which is not a byte count",
            fix="save the model again with onnx.save(..., save_as_external_data=True)",
        )
    return int(text)


def _quoted(text: str, limit: int = 80) -> str:
    """``text`` in quotes for a one-line message: control characters escaped, cut at ``limit`` characters."""
    shown = text if len(text) <= limit else text[: limit - 3] + "..."
    return "'" + shown.encode("unicode_escape").decode("ascii") + "'"


def _check_external_data(model: ModelProto, path: Path) -> tuple[str, ...]:
    base = path.parent
    locations = _external_extents(model, path.name)
    for location, end in sorted(locations.items()):
        # A NUL byte cannot be in a file name (os calls refuse it with ValueError), so it names no file beside it.
        if not location or "\x00" in location or os.path.isabs(location) or not _beside(base, location):
            raise ModelError(
                f"{path.name} names external data {_quoted(location)}, which is not a file beside it",
                fix="save the model with onnx.save(..., save_as_external_data=True) and a relative location",
            )
        target = base / location
        try:
            readable = target.is_file() and os.access(target, os.R_OK)
            size = target.stat().st_size if readable else 0
        except OSError as exc:  # a name too long for the file system, a loop of links
            raise ModelError(
                f"{path.name} stores weights in external data {_quoted(location)}, which cannot be read "
                f"({exc.strerror or one_line(exc)})",
                fix="save the model with onnx.save(..., save_as_external_data=True) and a short relative location",
            ) from exc
        if not readable:
            raise ModelError(
                f"{path.name} stores weights in external data {_quoted(location)}, which is missing or unreadable "
                f"in {base}",
                fix=f"put {_quoted(location)} next to {path.name}",
            )
        if size < end:
            raise ModelError(
                f"{path.name} expects external data {_quoted(location)} to hold at least {end} bytes but it has {size}",
                fix=f"copy {_quoted(location)} again from where the model was exported",
            )
    return tuple(sorted(locations))


def _beside(base: Path, location: str) -> bool:
    """Whether ``location`` stays inside ``base`` once links and ``..`` are resolved."""
    return (base / location).resolve().is_relative_to(base.resolve())


def _all_tensors(model: ModelProto) -> Iterator[TensorProto]:
    for graph, _ in all_graphs(model.graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors


def _domain_name(domain: str) -> str:
    return "ai.onnx" if domain in _DEFAULT_DOMAINS else domain


def _op_name(node: NodeProto) -> str:
    """Plain for the default domain, ``domain:Op`` for others (``com.microsoft:FusedConv``)."""
    if node.domain in _DEFAULT_DOMAINS:
        return node.op_type
    return f"{node.domain}:{node.op_type}"


def _tensor_info(name: str, value_type: TypeProto) -> TensorInfo:
    kind = value_type.WhichOneof("value")
    if kind != "tensor_type":
        # Sequences, maps and optionals: named for the report; data preparation refuses them.
        return TensorInfo(name=name, dtype=str(kind or "unknown").removesuffix("_type"), shape=None)
    tensor = value_type.tensor_type
    dtype = _DTYPE_NAMES.get(tensor.elem_type) or _elem_type_name(tensor.elem_type) or f"type {tensor.elem_type}"
    if not tensor.HasField("shape"):
        return TensorInfo(name=name, dtype=dtype, shape=None)
    shape: list[Dim] = []
    for dim in tensor.shape.dim:
        # Exporters write dim_value -1 (paddle2onnx) or 0 for a dynamic axis; onnxruntime reads any non-positive
        # size as dynamic, and so does farm.
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(dim.dim_value)
        elif dim.HasField("dim_param") and dim.dim_param:
            shape.append(dim.dim_param)
        else:
            shape.append(None)
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape))
