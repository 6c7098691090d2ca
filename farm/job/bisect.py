"""Stage ``bisect``: where one int8 variant leaves fp32 on this target, or this target's fp32 leaves another's, node by
node (farm.job.divergence), written to bisect.json as a BisectResult.

fp32 is the model the variant was quantized from (the prepare stage's pre-processed one, whose nodes the variant's
follow), opened as the evaluate stage opens fp32 (farm.job.evaluate.measure.opener); the variant is the prepare stage's
model with its runtime mitigation's session options where its name has one; each quantized node's group runs with
the same options, fused as the variant runs."""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import onnx

from farm.job.codec import encode
from farm.job.data import Dataset
from farm.job.divergence import (
    compare,
    described,
    fp32_reference,
    save_points,
    saved_reference,
)
from farm.job.evaluate.measure import opener
from farm.job.profile.child import status_kib
from farm.job.report import NodeDivergence
from farm.job.result import error_text, write_json_atomic
from farm.job.spec import Spec
from farm.job.variants import FP32, MITIGATION_SUFFIX, X64_QUANT_PRECISION, quantized_from

BISECT_FILE = "bisect.json"
# Where a job with bisect.save writes the variant's values (<sample>/<point>.npy) in its output folder.
POINTS_DIR = "points"
# mallopt(3): the size from which malloc maps an allocation of its own (malloc.h).
M_MMAP_THRESHOLD = -3
log = logging.getLogger("farm.job")


@dataclass(frozen=True, kw_only=True, slots=True)
class BisectResult:
    """bisect.json (docs/contracts.md): the variant's points in fp32's order, the first below the threshold, the
    worst by local error, and whether every marked run reproduced the variant's own outputs bit for bit."""

    variant: str
    status: Literal["done", "failed"]
    error: str | None = None
    threshold_db: float
    samples: int
    limit_bytes: int
    chunks: int = 0
    marked_bytes: int = 0
    reproduced: bool | None = None
    nodes: tuple[NodeDivergence, ...] = ()
    first: NodeDivergence | None = None
    worst: tuple[NodeDivergence, ...] = ()
    # The job's resident high-water mark (VmHWM) when it wrote the answer: what the limit kept it to.
    peak_rss_bytes: int | None = None


def run_bisect(spec: Spec, out: Path) -> None:
    """Compare spec.bisect's variant with fp32 here and write ``out``/bisect.json; a comparison that cannot run
    says why in it (status "failed")."""
    settings = spec.bisect
    if settings is None:
        raise ValueError("a bisect stage needs the spec's bisect block")
    head: dict[str, Any] = {
        "variant": settings.variant,
        "threshold_db": settings.threshold_db,
        "samples": settings.samples,
        "limit_bytes": settings.limit_bytes,
    }
    # Arrays of a megabyte and more are mapped and unmapped on their own: glibc would otherwise raise its threshold as
    # they are freed and keep the next chunk's in the heap, whose freed space it does not give back (on a model of
    # 8 MiB activations, 289-372 MiB resident between chunks where 211-278 MiB held the same work).
    ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1 << 20)
    try:
        result = _bisect(spec, head, out)
    except Exception as exc:  # unreadable data, or onnxruntime's own error: fp32 or the variant does not run here
        result = BisectResult(**head, status="failed", error=error_text(exc))
    result = replace(result, peak_rss_bytes=status_kib("VmHWM") << 10)
    write_json_atomic(out / BISECT_FILE, encode(result))


def _bisect(spec: Spec, head: dict[str, Any], out: Path) -> BisectResult:
    settings = spec.bisect
    assert settings is not None
    base = settings.variant.removesuffix(MITIGATION_SUFFIX)
    artifact = None if spec.artifacts is None else spec.artifacts / f"{base}.onnx"
    if settings.variant != FP32 and (artifact is None or not artifact.is_file()):
        return BisectResult(**head, status="failed", error=f"the prepare stage made no {base} model for this target")
    config = dict(X64_QUANT_PRECISION) if settings.variant.endswith(MITIGATION_SUFFIX) else {}
    dataset = Dataset.load(spec.inputs)
    reference = onnx.load(str(quantized_from(spec.artifacts, base) or spec.source_model))
    names = [i.name for i in reference.graph.input if i.name not in {t.name for t in reference.graph.initializer}]
    feeds = [dataset.feed(index, names) for index in range(min(settings.samples, dataset.samples))]

    fp32 = opener(spec, FP32)
    # fp32 against another target's fp32: the model itself at every node, run as the target evaluates it.
    model = None if settings.variant == FP32 or artifact is None else onnx.load(str(artifact))
    variant = fp32 if model is None else opener(spec, settings.variant, config)
    if settings.save:
        log.info(
            "bisect: %s's values at its points over %d sample(s), for another target", settings.variant, len(feeds)
        )
        saved = save_points(
            reference, model, feeds, out / POINTS_DIR, open_variant=variant, limit_bytes=settings.limit_bytes
        )
        return BisectResult(
            **head, status="done", chunks=saved.chunks, marked_bytes=saved.marked_bytes, reproduced=saved.reproduced
        )
    against = fp32_reference(reference, fp32) if settings.against is None else saved_reference(settings.against)
    log.info("bisect: %s over %d sample(s)", settings.variant, len(feeds))
    found = compare(
        reference,
        model,
        feeds,
        against=against,
        open_variant=variant,
        open_group=variant,
        limit_bytes=settings.limit_bytes,
        threshold_db=settings.threshold_db,
    )
    log.info("bisect: %s", described(found))
    return BisectResult(
        **head,
        status="done",
        chunks=found.chunks,
        marked_bytes=found.marked_bytes,
        reproduced=found.reproduced,
        nodes=found.nodes,
        first=found.first,
        worst=found.worst(),
    )
