"""Whether a target's runtime will load a model, predicted before anything runs (``farm inspect``, ``farm matrix``).

The runtime's capabilities (highest IR version and opsets, its kernels with their providers, version ranges and
types) are asked of the runtime in the target's own image, once per image (farm/job/capabilities.py), and cached by
the image's content hash. The model side is read with onnx on the host, subgraphs included.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from onnx import defs

from farm.backend import runner
from farm.backend.base import Backend
from farm.backend.engine import Mount
from farm.controller.fleet import Fleet
from farm.host.files import exclusive, lock_path
from farm.host.probe import HostInfo, Placement
from farm.images import content as images
from farm.job.capabilities import SCHEMA as CAPABILITIES_SCHEMA
from farm.job.loadfailure import LoadFailure
from farm.job.result import write_json_atomic
from farm.model.inspect import NodeUse
from farm.targets.config import Target

Verdict = Literal["loads", "fails", "unknown"]
_ONNX_DOMAINS = {"ai.onnx": "", "ai.onnx.ml": "ai.onnx.ml", "ai.onnx.preview.training": "ai.onnx.preview.training"}
_SHOWN_NODES = 5
# Ops onnxruntime resolves while it loads a graph, with no kernel: a Constant becomes an initializer.
_NO_KERNEL_NEEDED = {("ai.onnx", "Constant")}


@dataclass(frozen=True, kw_only=True, slots=True)
class Kernel:
    op: str
    domain: str
    provider: str
    since: int
    until: int | None
    types: Mapping[str, tuple[str, ...]]

    def covers(self, version: int) -> bool:
        return self.since <= version and (self.until is None or version <= self.until)


@dataclass(frozen=True, kw_only=True, slots=True)
class Capabilities:
    onnxruntime: str
    providers: tuple[str, ...]
    max_ir_version: int | None
    opsets: Mapping[str, int | None]
    kernels: Mapping[tuple[str, str], tuple[Kernel, ...]]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Capabilities:
        kernels: dict[tuple[str, str], list[Kernel]] = {}
        for entry in data["kernels"]:
            kernel = Kernel(
                op=entry["op"],
                domain=entry["domain"],
                provider=entry["provider"],
                since=entry["since"],
                until=entry["until"],
                types={k: tuple(v) for k, v in entry["types"].items()},
            )
            kernels.setdefault((kernel.domain, kernel.op), []).append(kernel)
        return cls(
            onnxruntime=data["onnxruntime"],
            providers=tuple(data["providers"]),
            max_ir_version=data["max_ir_version"],
            opsets=dict(data["opsets"]),
            kernels={key: tuple(found) for key, found in kernels.items()},
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Prediction:
    verdict: Verdict
    failure_class: LoadFailure | None = None
    reason: str | None = None
    nodes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "class": self.failure_class, "reason": self.reason, "nodes": list(self.nodes)}


def predict(
    ir_version: int,
    opsets: Mapping[str, int],
    nodes: Sequence[NodeUse],
    caps: Capabilities,
    providers: Sequence[str],
) -> Prediction:
    """What onnxruntime ``caps`` makes of a model, on the target's ``providers``: the first cause it would fail on."""
    runtime = f"onnxruntime {caps.onnxruntime}"
    if caps.max_ir_version is not None and ir_version > caps.max_ir_version:
        return Prediction(
            verdict="fails",
            failure_class="ir-version",
            reason=f"the model is IR {ir_version}; {runtime} reads IR {caps.max_ir_version} at most",
        )
    for domain, version in opsets.items():
        limit = caps.opsets.get(domain)
        if limit is not None and version > limit:
            return Prediction(
                verdict="fails",
                failure_class="opset",
                reason=f"the model imports {domain} opset {version}; {runtime} supports {limit} at most",
            )
    missing = [
        f"{n.name or n.op} ({_why_missing(n, why)})"
        for n in nodes
        if (why := _kernel_problem(n, opsets, caps, providers))
    ]
    if missing:
        shown = ", ".join(missing[:_SHOWN_NODES]) + (
            f" and {len(missing) - _SHOWN_NODES} more" if len(missing) > _SHOWN_NODES else ""
        )
        return Prediction(
            verdict="fails",
            failure_class="missing-kernel",
            reason=f"{runtime} has no kernel on {', '.join(providers)} for {shown}",
            nodes=tuple(m.split(" (")[0] for m in missing),
        )
    return Prediction(verdict="loads")


def _why_missing(node: NodeUse, why: str) -> str:
    return f"{node.domain}:{node.op}" + (f" {why}" if why != "no kernel" else "")


def _kernel_problem(node: NodeUse, opsets: Mapping[str, int], caps: Capabilities, providers: Sequence[str]) -> str:
    """Why no kernel of the target's providers runs ``node``, or "" when one does (or ORT expands it)."""
    opset = opsets.get(node.domain)
    if opset is None or (node.domain, node.op) in _NO_KERNEL_NEEDED:
        return ""  # a domain the model does not import (the checker refuses that), or an op resolved at load
    schema = _schema(node.op, node.domain, opset)
    version = schema.since_version if schema is not None else opset
    kernels = [k for k in caps.kernels.get((node.domain, node.op), ()) if k.provider in providers]
    covering = (
        [k for k in kernels if k.covers(version)] if schema is not None else [k for k in kernels if k.since <= opset]
    )
    if not covering:
        if schema is not None and (schema.has_function or schema.has_context_dependent_function):
            return ""  # onnxruntime expands an op that ONNX defines as a function
        return f"at opset {opset}" if kernels else "no kernel"
    if node.input_type and schema is not None and schema.inputs:
        constraint = schema.inputs[0].type_str
        typed = [k for k in covering if constraint in k.types]
        if typed and not any(node.input_type in k.types[constraint] for k in typed):
            return f"for {node.input_type}"
    return ""


def _schema(op: str, domain: str, opset: int) -> Any:
    onnx_domain = _ONNX_DOMAINS.get(domain)
    if onnx_domain is None:
        return None
    try:
        return defs.get_schema(op, opset, onnx_domain)
    except Exception:  # onnx raises SchemaError for an op it does not know at that opset
        return None


# --- the runtime's capabilities, cached per image ----------------------------------------------------------------


def capabilities(fleet: Fleet, target: Target) -> Capabilities | str:
    """The target's runtime capabilities, or why they are not known (no image yet, or no way to run it here)."""
    placement, config = fleet.placements[target.name], fleet.config
    backend = fleet.backends.get(target.name)
    if backend is None:
        return placement.reason or "its backend is unreachable"
    tag = images.current_tag(config, target)
    image = None if tag is None else backend.image_ref(tag)
    if tag is None or image is None:
        return f"its image is not built yet (farm build --target {target.name})"
    cache = config.cache_dir / "capabilities" / f"{tag.rsplit(':', 1)[1]}.json"
    # Two farm runs ask one image's runtime once: the second waits and reads what the first wrote.
    with exclusive(lock_path(config.cache_dir, "capabilities", tag), waiting=f"asking {tag} what it runs"):
        return _cached_or_asked(backend, fleet.hosts[target.name], target, placement, image, cache)


def _cached_or_asked(
    backend: Backend, host: HostInfo, target: Target, placement: Placement, image: str, cache: Path
) -> Capabilities | str:
    try:
        data = json.loads(cache.read_text())
        if data.get("schema") == CAPABILITIES_SCHEMA:
            return Capabilities.from_dict(data)
    except (OSError, ValueError):
        pass
    # The registry does not depend on the ISA: run natively where the architecture allows, whatever the tier.
    if target.arch == host.arch:
        how = Placement(mode="native")
    elif placement.mode == "emulated":
        how = placement
    else:
        return f"its image cannot run here ({placement.reason})"
    with tempfile.TemporaryDirectory(prefix="farm-capabilities-") as scratch:
        out = Path(scratch)
        out.chmod(0o777)  # the container's unprivileged user writes here
        result = backend.run(
            runner.run_spec(
                target,
                how,
                image,
                ["-m", "farm.job.capabilities", "/farm/out/capabilities.json"],
                mounts=[Mount(source=out, target="/farm/out", read_only=False)],
                timeout_s=600.0,
                memory="2g",
            )
        )
        written = out / "capabilities.json"
        if result.failure or not written.is_file():
            return f"asking its runtime failed: the container {result.failure or 'wrote nothing'}"
        data = json.loads(written.read_text())
    write_json_atomic(cache, data)
    return Capabilities.from_dict(data)


def highest_ir_read_by_all(fleet: Fleet, targets: Sequence[Target]) -> tuple[int | None, list[str]]:
    """The highest IR version every one of ``targets`` reads, and the targets whose runtime could not be asked."""
    limits, unknown = [], []
    for target in targets:
        found = capabilities(fleet, target)
        if isinstance(found, str) or found.max_ir_version is None:
            unknown.append(target.name)
        else:
            limits.append(found.max_ir_version)
    return (min(limits) if limits else None), unknown
