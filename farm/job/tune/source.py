"""The model the search quantizes: the source pre-processed with every node named, the same with its exporter
patterns fused (farm.job.fuse), and each raised to opset 13 for per-channel weights, made once and kept."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import onnx

from farm.job.codec import encode
from farm.job.fuse import Fused, fuse
from farm.job.modelfile import keeps_external_data, save_model
from farm.job.quantize import OpsetRaiseFailed, PreProcessFailed, pre_process, raise_opset
from farm.job.result import error_text
from farm.job.tune import progress
from farm.job.tune.record import QuantConfig, Record
from farm.job.tune.words import fusion_text


class Sources:
    """The prepared source, its fused form (when it has exporter patterns), and the opset-13 copies made so far (a
    cache: raising a model's opset costs a conversion)."""

    def __init__(
        self, *, source: Path, fused: Path | None, fusions: Sequence[Fused], work: Path, warn: Callable[[str], None]
    ) -> None:
        self.source, self.fused, self.fusions = source, fused, tuple(fusions)
        self._work, self._warn = work, warn
        self._raised: dict[Path, Path | OpsetRaiseFailed] = {}

    def for_config(self, config: QuantConfig) -> Path:
        """The model ``config`` quantizes; raises OpsetRaiseFailed when its per-channel weights need opset 13 and
        the converter cannot raise it."""
        base = self.fused if config.fused and self.fused is not None else self.source
        if not config.per_channel:
            return base
        raised = self._raised.get(base)
        if raised is None:
            try:
                # Into the work folder: the source may be the spec's model, in the read-only input folder.
                raised, note = raise_opset(base, self._work / f"{base.stem}-opset13.onnx")
                if note:
                    self._warn(note)
                # The version converter adds nodes of its own, unnamed: an exclusion must never name "".
                raised, _, _ = named_nodes(raised, self._work / f"{base.stem}-opset13-named.onnx")
            except OpsetRaiseFailed as exc:
                raised = exc
            self._raised[base] = raised
        if isinstance(raised, OpsetRaiseFailed):
            raise raised
        return raised

    def renamed(self) -> dict[str, str]:
        """Each node a fusion replaced, and the node that replaced it."""
        return {name: f.node for f in self.fusions for name in f.replaced}

    def named_in(self, nodes: Sequence[str], *, fused: bool) -> list[str]:
        """``nodes`` (a ranked region, measured with or without the fusion) as the fused or the plain source names
        them: a fused node stands for the nodes it replaced, and they for it."""
        if fused:
            renamed = self.renamed()
            return list(dict.fromkeys(renamed.get(n, n) for n in nodes))
        replaced = {f.node: f.replaced for f in self.fusions}
        return list(dict.fromkeys(m for n in nodes for m in replaced.get(n, (n,))))


def prepare_sources(source: Path, work: Path, record: Record) -> Sources:
    """quant_pre_process, as prepare does, then a unique name on every node (``nodes_to_exclude`` names them),
    and the same with its exporter patterns fused (farm.job.fuse), for the knob that tries it."""
    pre = work / "pre.onnx"
    try:
        for warning in pre_process(source, pre):
            record.warn(warning)
        source = pre
    except PreProcessFailed as exc:
        record.warn(f"{exc}; tuning the model without pre-processing")
    source, model, external = named_nodes(source, work / "source.onnx")
    try:
        fused, fusions = fuse(model)
    except Exception as exc:  # a graph the pattern matcher cannot read: no fusion knob, the search goes on
        record.warn(f"fusing exporter patterns failed: {error_text(exc)}")
        fused, fusions = model, []
    fused_source = None
    if fusions:
        fused_source = save_model(fused, work / "source-fused.onnx", external=external)
        record.state["fusions"] = [encode(f) for f in fusions]  # farm.job.fuse.Fused: {kind, replaced, node}
        progress.say(f"exporter patterns to fuse: {fusion_text(fusions)}")
    return Sources(source=source, fused=fused_source, fusions=fusions, work=work, warn=record.warn)


def named_nodes(path: Path, destination: Path) -> tuple[Path, onnx.ModelProto, bool]:
    """The model at ``path`` with every node named (``name_nodes``): ``path`` itself, or where some node was not
    named, its copy at ``destination``; with the model loaded (weights and all) and whether they are external."""
    model = onnx.load(str(path), load_external_data=False)
    external = keeps_external_data(model)
    if external:
        model = onnx.load(str(path))
    if name_nodes(model):
        path = save_model(model, destination, external=external)
    return path, model, external


def name_nodes(model: onnx.ModelProto) -> bool:
    """Give every unnamed (or twice-named) node of the main graph a unique, deterministic name; True if any
    changed. The native search and an emulated one name the same nodes alike, so a ranking travels between them."""
    taken = {n.name for n in model.graph.node if n.name}
    seen: set[str] = set()
    changed = False
    for index, node in enumerate(model.graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = f"{node.name or node.op_type}_{index}"
        name, suffix = base, 0
        while name in taken or name in seen:
            suffix += 1
            name = f"{base}_{suffix}"
        node.name = name
        seen.add(name)
        taken.add(name)
        changed = True
    return changed
