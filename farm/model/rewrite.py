"""Graph rewriting with onnxoptimizer, once on the host, shared by every target.

It runs here and not in the job because onnxoptimizer ships no aarch64 wheels. The rewritten model keeps the input's
IR version and opset imports: the host's onnx may be newer than a target's onnxruntime, and a model stamped with the
host's IR (14 for onnx 1.23) would be refused there (ORT 1.31 reads IR 13 at most).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import onnxoptimizer

from farm.errors import ModelError, one_line
from farm.host.files import exclusive, file_sha256, lock_path
from farm.job.graph import all_graphs
from farm.model.inspect import external_locations

# Bump when the way a model is rewritten changes, so cached results are made again.
RECIPE = "3"
# onnxoptimizer's time doubles with every level of If/Loop/Scan bodies nested in one another (If in If: 0.5 s at 20
# levels, 36 s at 26, over a minute at 30); exporters nest a few levels, so a model nested deeper keeps its graph.
MAX_REWRITE_DEPTH = 16
# From this IR version on, an initializer need not be a graph input too.
CONSTANTS_APART_IR = 4
_META = "rewrite.json"
# A protobuf message cannot exceed 2 GiB; above this the rewritten weights go to a file beside the model.
_INLINE_LIMIT = 1 << 30


@dataclass(frozen=True, kw_only=True, slots=True)
class RewriteResult:
    """``rewritten`` is False when onnxoptimizer failed and ``path`` is an unchanged copy (``warning`` says why);
    ``note`` says what farm changed so that optimizers and quantizers accept the model (its old IR's inputs)."""

    path: Path
    rewritten: bool
    cached: bool
    warning: str | None
    passes: tuple[str, ...]
    note: str | None
    nodes_before: int
    nodes_after: int
    # Files written besides ``path`` that must travel with it (external data), relative to its folder.
    extra_files: tuple[str, ...] = ()


def default_passes() -> tuple[str, ...]:
    return tuple(onnxoptimizer.get_fuse_and_elimination_passes())


def rewrite_model(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    passes: tuple[str, ...] | None = None,
) -> RewriteResult:
    """Rewrite ``src`` into ``dst``; never raises for an optimizer failure, which only costs the rewrite."""
    source, target = Path(src), Path(dst)
    chosen = passes if passes is not None else default_passes()
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="farm-rewrite-") as scratch:
            entry = Path(scratch)
            meta = _rewrite_into(source, entry, chosen)
            return _deliver(entry, meta, target, cached=False)
    entry = Path(cache_dir) / _cache_key(source, chosen)
    if not (entry / _META).is_file():
        # A second farm run on the same model waits for the first one's rewrite rather than doing it again.
        with exclusive(lock_path(entry.parent, "rewrite", entry.name), waiting="rewriting this model"):
            if not (entry / _META).is_file():
                return _rewrite_cached(source, entry, chosen, target)
    return _deliver(entry, json.loads((entry / _META).read_text()), target, cached=True)


def _rewrite_cached(source: Path, entry: Path, chosen: tuple[str, ...], target: Path) -> RewriteResult:
    entry.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling and rename, so an interrupted run never leaves a half-written cache entry.
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        meta = _rewrite_into(source, staging, chosen)
        staging.rename(entry)
        return _deliver(entry, meta, target, cached=False)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _rewrite_into(source: Path, folder: Path, passes: tuple[str, ...]) -> dict[str, Any]:
    """Write ``model.onnx`` (and any external data) into ``folder`` and the metadata ``rewrite.json``."""
    try:
        original = onnx.load(str(source), load_external_data=True)
    except Exception as exc:  # onnx's checks on external data (e.g. a file with several hard links) raise anything
        raise ModelError(
            f"{source.name} cannot be loaded with its external data ({one_line(exc)})",
            fix="copy the model and its data files into a folder of their own and pass that copy",
        ) from exc
    before = after = len(original.graph.node)
    extra: list[str] = []
    note = constants_apart(original)
    warning = _too_deep_to_rewrite(original)
    rewritten = False
    if warning is None:
        try:
            optimized = onnxoptimizer.optimize(original, list(passes))
            # onnxoptimizer may restamp the model with the host's IR version or opsets; targets need the original's.
            optimized.ir_version = original.ir_version
            del optimized.opset_import[:]
            optimized.opset_import.extend(original.opset_import)
            extra = _save(optimized, folder / "model.onnx")
            onnx.checker.check_model(str(folder / "model.onnx"))
            written = onnx.load(str(folder / "model.onnx"), load_external_data=False)
            if written.ir_version != original.ir_version:
                raise ValueError(f"wrote IR {written.ir_version}, not the input's IR {original.ir_version}")
            after = len(written.graph.node)
            rewritten = True
        except Exception as exc:  # onnxoptimizer and the checker raise anything from RuntimeError to IndexError
            for leftover in folder.iterdir():
                leftover.unlink()
            warning = (
                f"graph rewriting with onnxoptimizer {onnxoptimizer.__version__} failed "
                f"({' '.join(str(exc).split())[:300] or type(exc).__name__}); 'optimized' uses the model unchanged"
            )
    if not rewritten:
        extra = _save(original, folder / "model.onnx")
    meta = {
        "rewritten": rewritten,
        "warning": warning,
        "note": note,
        "passes": list(passes),
        "nodes_before": before,
        "nodes_after": after,
        "extra_files": extra,
    }
    (folder / _META).write_text(json.dumps(meta, indent=2))
    return meta


def subgraph_depth(model: onnx.ModelProto) -> int:
    """How deep If/Loop/Scan bodies nest in one another: 0 for a model without subgraphs."""
    return max(depth for _, depth in all_graphs(model.graph))


def _too_deep_to_rewrite(model: onnx.ModelProto) -> str | None:
    """Why onnxoptimizer must not see ``model``, or None: its time doubles with every level of nested subgraphs."""
    depth = subgraph_depth(model)
    if depth <= MAX_REWRITE_DEPTH:
        return None
    return (
        f"graph rewriting skipped: the model nests subgraphs {depth} levels deep, and onnxoptimizer "
        f"{onnxoptimizer.__version__} takes time that doubles with every level (minutes past 26); "
        "'optimized' uses the model unchanged"
    )


def constants_apart(model: onnx.ModelProto) -> str | None:
    """Drop the graph inputs that merely repeat an initializer, as IR 3 models list them, and raise the IR to 4.

    onnxruntime treats such an input as an overridable default, so the model runs as given; but optimizers and
    quantizers take it for a real input ("Required inputs (...)"). Only what farm rewrites and quantizes changes:
    ``fp32`` stays the model as given. Returns what was done, for the report, or None.
    """
    constants = {t.name for t in model.graph.initializer}
    repeated = [i for i in model.graph.input if i.name in constants]
    if model.ir_version >= CONSTANTS_APART_IR or not repeated:
        return None
    kept = [i for i in model.graph.input if i.name not in constants]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    old = model.ir_version
    model.ir_version = CONSTANTS_APART_IR
    return (
        f"the model is IR {old}, which lists its {len(repeated)} weights as graph inputs too; optimized and "
        f"int8 variants are made from a copy where they are constants only (IR {CONSTANTS_APART_IR}), and fp32 "
        "stays the model as given"
    )


def _save(model: onnx.ModelProto, path: Path) -> list[str]:
    if model.ByteSize() < _INLINE_LIMIT:
        onnx.save(model, str(path))
        return []
    location = "model.onnx.data"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location)
    return [location]


def _deliver(entry: Path, meta: dict[str, Any], target: Path, *, cached: bool) -> RewriteResult:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(entry / "model.onnx", target)
    extra = tuple(meta["extra_files"])
    for name in extra:
        # The model names its external data by this relative path, so it must keep that name beside the copy.
        shutil.copyfile(entry / name, target.parent / name)
    return RewriteResult(
        path=target,
        rewritten=bool(meta["rewritten"]),
        cached=cached,
        warning=meta["warning"],
        note=meta["note"],
        passes=tuple(meta["passes"]),
        nodes_before=int(meta["nodes_before"]),
        nodes_after=int(meta["nodes_after"]),
        extra_files=extra,
    )


def _cache_key(source: Path, passes: tuple[str, ...]) -> str:
    """The model's bytes (external data too), the passes and the optimizer version decide the result."""
    digest = hashlib.sha256()
    digest.update(file_sha256(source).encode())
    for location in external_locations(onnx.load(str(source), load_external_data=False)):
        digest.update(location.encode())
        digest.update(file_sha256(source.parent / location).encode())
    digest.update(json.dumps([RECIPE, onnxoptimizer.__version__, onnx.__version__, list(passes)]).encode())
    return digest.hexdigest()
