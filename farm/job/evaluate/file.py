"""result.json as it stands: rewritten after each variant, so a crash keeps what was done."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnxruntime as ort

from farm.job.codec import encode
from farm.job.report import Runtime, TargetResult, Variant
from farm.job.result import write_json_atomic
from farm.job.spec import SpecTarget

log = logging.getLogger("farm.job")


class ResultFile:
    """The target's result so far, and what the file says until the run ends: that it did not finish, and the
    variant under way, so if the runtime dies (QEMU segfaults happen) that is the truth the controller finds."""

    def __init__(self, target: SpecTarget, out: Path) -> None:
        self.out = out
        # When the job began its work: the estimate phase stops at a deadline counted from here.
        self.started = time.monotonic()
        self.result = TargetResult(
            name=target.name,
            platform=target.platform,
            mode=target.mode,
            cpu_model=target.cpu_model,
            status="ok",
            reason=None,
            runtime=Runtime(onnxruntime=ort.__version__, providers=()),
        )
        self.finished = False
        # The variants under way: one, or, where workers share them out (farm.job.evaluate.spread), one per worker.
        self.pending: list[str] = []
        self.timing_underway = False

    def save(self, **changes: Any) -> None:
        self.result = replace(self.result, **changes)
        written = self.result
        if not self.finished:
            reason = "the job ended before it finished"
            if self.pending:
                error = "the job ended while running this variant (the runtime crashed or was killed)"
                stopped = tuple(Variant(name=name, status="failed", error=error) for name in self.pending)
                written = replace(written, variants=(*written.variants, *stopped))
                reason += f", while running {', '.join(self.pending)}"
            elif self.timing_underway:
                reason += ", while timing the variants (their accuracy figures are complete)"
            written = replace(written, status="failed", reason=written.reason or reason)
        # The controller's fields (exit_code, image, backend, ...) stay None: it fills them in.
        write_json_atomic(self.out / "result.json", encode(written))

    def begin(self, name: str) -> None:
        log.info("evaluate: %s starting", name)
        self.pending.append(name)
        self.save()

    @contextlib.contextmanager
    def underway(self, name: str) -> Iterator[None]:
        """``name`` under way without a result of its own to add (its count, before its accuracy): if the runtime
        dies meanwhile, the file says it died running ``name``."""
        self.begin(name)
        try:
            yield
        finally:
            self.pending.remove(name)

    def add(self, variant: Variant, at: int | None = None) -> None:
        """Add ``variant`` last, or at index ``at`` of the variants (one that came before the variants it precedes
        in the report's order)."""
        log.info("evaluate: %s %s%s", variant.name, variant.status, f" ({variant.error})" if variant.error else "")
        if variant.name in self.pending:
            self.pending.remove(variant.name)
        variants = list(self.result.variants)
        variants.insert(len(variants) if at is None else at, variant)
        self.save(variants=tuple(variants))

    def fail(self, reason: str) -> None:
        log.info("evaluate: target failed: %s", reason)
        self.finished = True
        self.save(status="failed", reason=reason)

    def finish(self, **changes: Any) -> None:
        """The last save: the file no longer says the run was cut short."""
        self.finished = True
        self.save(**changes)

    def warn(self, warning: str) -> None:
        if warning not in self.result.warnings:
            self.save(warnings=(*self.result.warnings, warning))

    def time_underway(self, underway: bool) -> None:
        """While the timing phase runs, a crash is one after every variant's accuracy is known."""
        self.timing_underway = underway
