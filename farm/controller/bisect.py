"""`farm bisect`'s core: where one int8 variant leaves fp32 on one target, node by node, measured in the target
itself (farm.job.bisect). The variant is the model `farm matrix` evaluates there: the prepare stage's, from farm's
artifact cache when a matrix of the same model, data and settings made it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from typing import Any

from farm.controller.artifacts import make_artifacts
from farm.controller.fleet import Fleet, ensure_images
from farm.controller.jobs import (
    INPUT_DIR,
    JobInputs,
    JobSettings,
    candidates_for,
    job_out_dir,
    job_spec,
    last_line,
    new_run_folder,
    read_json,
    run_job,
    stage_inputs,
    stage_lines,
)
from farm.controller.progress import Reporter
from farm.errors import BadInput, BuildFailed
from farm.job.bisect import BISECT_FILE, BisectResult
from farm.job.codec import decode, encode
from farm.job.divergence import THRESHOLD_DB, NodeDivergence
from farm.job.spec import BisectSpec
from farm.job.variants import MITIGATION_SUFFIX
from farm.targets.config import Target

SCHEMA = "farm.bisect/1"
# Samples compared when --samples does not say: a divergence shows on a few inputs, and under QEMU each costs.
DEFAULT_SAMPLES = 8
# One sample's marked values may take this share of the target's memory limit: the rest holds fp32's session, the
# variant's, one group's and the interpreter, each at most the model's size again (docs/contracts.md).
MEMORY_SHARE = 4


@dataclass(frozen=True, kw_only=True)
class BisectOptions:
    target: str
    variant: str
    threshold_db: float = THRESHOLD_DB
    settings: JobSettings = field(default_factory=JobSettings)
    cache: bool = True


@dataclass(frozen=True, kw_only=True)
class Bisected:
    """What the target's job found, and the exit status it makes (5: the comparison could not run there)."""

    target: str
    mode: str
    result: BisectResult
    warnings: tuple[str, ...]

    @property
    def exit_code(self) -> int:
        return 0 if self.result.status == "done" else 5


def check_variant(target: Target, variant: str, given: JobInputs, settings: JobSettings) -> str:
    """The candidate ``variant`` is made from, where ``target`` has it; else one BadInput naming --variant."""
    base = variant.removesuffix(MITIGATION_SUFFIX)
    candidates = candidates_for(target, given.info, settings)
    if base not in candidates:
        raise BadInput(
            f"--variant {variant} is not an int8 variant of target {target.name}",
            fix=f"pick one of its candidates: {', '.join(candidates)} (a candidate{MITIGATION_SUFFIX} runs it with "
            "that session option)",
        )
    return base


def run_bisect(fleet: Fleet, given: JobInputs, options: BisectOptions, reporter: Reporter) -> Bisected:
    target = fleet.config.target(options.target)
    placement = fleet.placements[target.name]
    if not placement.runnable:
        raise BadInput(
            f"--target {target.name} cannot run on this host: {placement.reason}",
            fix="pick a target that `farm targets` lists as runnable",
        )
    base = check_variant(target, options.variant, given, options.settings)
    work = new_run_folder(fleet.config.cache_dir, "bisect")
    inputs = work / INPUT_DIR
    warnings: list[str] = []
    try:
        warnings += stage_inputs(inputs, given, fleet)
        outcome = ensure_images(fleet, [target], reporter)[target.name]
        if outcome.image is None:
            raise BuildFailed(f"the image of {target.name} did not build: {outcome.error}")
        tags = {target.name: outcome.image.tag}
        prepared = make_artifacts(
            fleet,
            [target],
            tags,
            work=work,
            given=given,
            settings=options.settings,
            cache=options.cache,
            reporter=reporter,
            warnings=warnings,
        )
        samples = min(DEFAULT_SAMPLES, given.data.samples) if given.data.samples else DEFAULT_SAMPLES
        spec = replace(
            job_spec(
                target,
                placement,
                "bisect",
                [base],
                options.settings,
                inputs=inputs,
                host_flags=fleet.hosts[target.name].cpu_flags,
                artifacts=prepared.folders.get(target.name),
            ),
            bisect=BisectSpec(
                variant=options.variant,
                threshold_db=options.threshold_db,
                limit_bytes=max(1 << 20, target.memory_bytes // MEMORY_SHARE),
                samples=samples,
            ),
        )
        out = job_out_dir(work, f"bisect-{target.name}")
        with reporter.step(f"bisect {options.variant} on {target.name} ({placement.mode})") as step:
            ran = run_job(
                fleet,
                target,
                tags[target.name],
                spec,
                inputs,
                out,
                timeout_s=options.settings.budget(target),
                keep=options.settings.keep_containers,
                on_line=stage_lines(step),
            )
        written = read_json(out / BISECT_FILE)
        if written:
            result = decode(BisectResult, written, where=f"{target.name}'s {BISECT_FILE}")
        else:
            why = f"its container {ran.failure}" if ran.failure else "the job wrote no result"
            assert spec.bisect is not None
            result = BisectResult(
                variant=options.variant,
                status="failed",
                error=f"{why} ({last_line(ran.log_tail)})",
                threshold_db=options.threshold_db,
                samples=spec.bisect.samples,
                limit_bytes=spec.bisect.limit_bytes,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Bisected(target=target.name, mode=placement.mode, result=result, warnings=tuple(warnings))


def document(found: Bisected) -> dict[str, Any]:
    """The answer as --json writes it (docs/contracts.md: farm.bisect/1)."""
    return {
        "schema": SCHEMA,
        "target": found.target,
        "mode": found.mode,
        "warnings": list(found.warnings),
        **encode(found.result),
    }


def render(found: Bisected) -> str:
    """The answer, then every point in fp32's order."""
    result = found.result
    lines = [f"farm bisect: {result.variant} against fp32 on {found.target} ({found.mode})"]
    lines += [f"warning: {w}" for w in found.warnings]
    if result.status != "done":
        return "\n".join([*lines, f"failed: {result.error}"]) + "\n"
    first = result.first
    lines.append(
        f"first below {result.threshold_db:g} dB: {_named(first)} at {first.sqnr_db:.1f} dB"
        if first is not None
        else f"no node below {result.threshold_db:g} dB"
    )
    lines.append(
        "worst by local error: "
        + ("; ".join(f"{_named(n)} {n.local_db:.1f} dB" for n in result.worst) or "none measured")
    )
    if not result.reproduced:
        lines.append(
            "warning: a marked run's final outputs differ from the variant's own: marking changed what onnxruntime "
            "ran, so these figures may not be the variant's"
        )
    lines.append(f"{'node':<24} {'op':<18} {'tensor':<24} {'SQNR dB':>8} {'cosine':>8} {'local dB':>9}")
    for node in result.nodes:
        local = "" if node.local_db is None else f"{node.local_db:.1f}"
        lines.append(
            f"{node.node[:24]:<24} {node.op[:18]:<18} {node.tensor[:24]:<24} {node.sqnr_db:>8.1f} {node.cosine:>8.4f} "
            f"{local:>9}"
        )
    lines.append(
        f"{result.samples} sample(s); {result.chunks} chunk(s) of marked tensors, at most "
        f"{result.marked_bytes / 2**20:.1f} MiB per sample (limit {result.limit_bytes / 2**20:.0f} MiB)"
    )
    return "\n".join(lines) + "\n"


def _named(node: NodeDivergence) -> str:
    return f"{node.node} ({node.op}, {node.tensor})"
