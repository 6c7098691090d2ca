"""`farm bisect`'s core: where one int8 variant leaves fp32 on one target (or one target's fp32 leaves another's),
node by node, measured in the targets themselves (farm.job.bisect). The variant is the model `farm matrix` evaluates
there: the prepare stage's, from farm's artifact cache when a matrix of the same model, data and settings made it."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from farm.controller.artifacts import make_artifacts
from farm.controller.fleet import Fleet, ensure_images
from farm.controller.jobs import (
    DIVERGENCE_SAMPLES,
    INPUT_DIR,
    JobInputs,
    JobSettings,
    candidates_for,
    job_out_dir,
    job_spec,
    last_line,
    marked_limit,
    new_run_folder,
    open_up,
    read_json,
    run_job,
    stage_inputs,
    stage_lines,
)
from farm.controller.progress import Reporter
from farm.errors import BadInput, BuildFailed
from farm.job.bisect import BISECT_FILE, POINTS_DIR, BisectResult
from farm.job.codec import decode, encode
from farm.job.divergence import THRESHOLD_DB
from farm.job.report import NodeDivergence
from farm.job.spec import BisectSpec
from farm.job.variants import FP32, MITIGATION_SUFFIX
from farm.targets.config import Target

SCHEMA = "farm.bisect/1"
# In the input folder: the --against target's values at the variant's points, for the --target's job.
AGAINST_DIR = "against"


@dataclass(frozen=True, kw_only=True)
class BisectOptions:
    target: str
    variant: str
    threshold_db: float = THRESHOLD_DB
    against: str | None = None
    settings: JobSettings = field(default_factory=JobSettings)
    cache: bool = True


@dataclass(frozen=True, kw_only=True)
class Bisected:
    """What the target's job found, and the exit status it makes (5: the comparison could not run there)."""

    target: str
    mode: str
    # The target the variant was compared with there (--against); None: fp32 on the target itself.
    against: str | None
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


def runnable(fleet: Fleet, name: str, flag: str) -> Target:
    """The target ``name``, where this host can run it; else one line naming ``flag``."""
    target = fleet.config.target(name)
    placement = fleet.placements[target.name]
    if not placement.runnable:
        raise BadInput(
            f"{flag} {target.name} cannot run on this host: {placement.reason}",
            fix="pick a target that `farm targets` lists as runnable",
        )
    return target


def run_bisect(fleet: Fleet, given: JobInputs, options: BisectOptions, reporter: Reporter) -> Bisected:
    target = runnable(fleet, options.target, "--target")
    other = None if options.against is None else runnable(fleet, options.against, "--against")
    if other is not None and other.name == target.name:
        raise BadInput(
            f"--against {other.name} is the --target itself", fix="name another target to compare this one with"
        )
    if options.variant == FP32 and other is None:
        raise BadInput(
            "--variant fp32 needs --against: fp32 on a target is the reference its int8 variants are compared with",
            fix="name the target to compare this one's fp32 with, e.g. --against arm64",
        )
    base = FP32 if options.variant == FP32 else check_variant(target, options.variant, given, options.settings)
    work = new_run_folder(fleet.config.cache_dir, "bisect")
    run = _Bisection(fleet=fleet, options=options, work=work, reporter=reporter, base=base, samples=given.data.samples)
    try:
        run.warnings += stage_inputs(work / INPUT_DIR, given, fleet)
        chosen = [target] if other is None else [target, other]
        outcomes = ensure_images(fleet, chosen, reporter)
        for name, outcome in outcomes.items():
            if outcome.image is None:
                raise BuildFailed(f"the image of {name} did not build: {outcome.error}")
            run.tags[name] = outcome.image.tag
        if base != FP32:
            run.artifacts = _artifacts(run, target, given)
        if other is not None:
            saved = run.job(other, save=True)
            if saved.status != "done":
                result = replace(saved, error=f"on {other.name}, which --against names: {saved.error}")
                return run.bisected(target, result)
            if not saved.reproduced:
                run.warnings.append(
                    f"on {other.name} a marked run's final outputs differed from the variant's own: its values "
                    "may not be the variant's"
                )
        return run.bisected(target, run.job(target, save=False, against=other is not None))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _artifacts(run: _Bisection, target: Target, given: JobInputs) -> str | None:
    """The int8 artifacts' folder for ``target``. The variant's files are its toolchain's, and an --against target
    runs the same files."""
    prepared = make_artifacts(
        run.fleet,
        [target],
        run.tags,
        work=run.work,
        given=given,
        settings=run.options.settings,
        cache=run.options.cache,
        reporter=run.reporter,
        warnings=run.warnings,
    )
    return prepared.folders.get(target.name)


@dataclass(kw_only=True)
class _Bisection:
    """One farm bisect: its run folder, the images, the variant's artifacts, and the jobs it runs."""

    fleet: Fleet
    options: BisectOptions
    work: Path
    reporter: Reporter
    base: str
    samples: int
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: str | None = None
    warnings: list[str] = field(default_factory=list)

    def job(self, target: Target, *, save: bool, against: bool = False) -> BisectResult:
        """The bisect stage in ``target``; with ``save``, its values go to the input folder for the next job."""
        options, inputs = self.options, self.work / INPUT_DIR
        placement = self.fleet.placements[target.name]
        settings = BisectSpec(
            variant=options.variant,
            threshold_db=options.threshold_db,
            limit_bytes=marked_limit(target),
            samples=min(DIVERGENCE_SAMPLES, self.samples),
            save=save,
            against=Path(AGAINST_DIR) if against else None,
        )
        spec = job_spec(
            target,
            placement,
            "bisect",
            [] if self.base == FP32 else [self.base],
            options.settings,
            inputs=inputs,
            host_flags=self.fleet.hosts[target.name].cpu_flags,
            artifacts=self.artifacts,
        )
        out = job_out_dir(self.work, f"bisect-{target.name}")
        what = "its values at the variant's points" if save else options.variant
        with self.reporter.step(f"bisect {what} on {target.name} ({placement.mode})") as step:
            ran = run_job(
                self.fleet,
                target,
                self.tags[target.name],
                replace(spec, bisect=settings),
                inputs,
                out,
                timeout_s=options.settings.budget(target),
                keep=options.settings.keep_containers,
                on_line=stage_lines(step),
            )
        written = read_json(out / BISECT_FILE)
        if not written:
            why = f"its container {ran.failure}" if ran.failure else "the job wrote no result"
            return BisectResult(
                variant=options.variant,
                status="failed",
                error=f"{why} ({last_line(ran.log_tail)})",
                threshold_db=options.threshold_db,
                samples=settings.samples,
                limit_bytes=settings.limit_bytes,
            )
        if save and (out / POINTS_DIR).is_dir():
            shutil.move(out / POINTS_DIR, inputs / AGAINST_DIR)
            open_up(inputs / AGAINST_DIR)
        return decode(BisectResult, written, where=f"{target.name}'s {BISECT_FILE}")

    def bisected(self, target: Target, result: BisectResult) -> Bisected:
        return Bisected(
            target=target.name,
            mode=self.fleet.placements[target.name].mode,
            against=self.options.against,
            result=result,
            warnings=tuple(self.warnings),
        )


def document(found: Bisected) -> dict[str, Any]:
    """The answer as --json writes it (docs/contracts.md: farm.bisect/1)."""
    return {
        "schema": SCHEMA,
        "target": found.target,
        "mode": found.mode,
        "against": found.against,
        "warnings": list(found.warnings),
        **encode(found.result),
    }


def render(found: Bisected) -> str:
    """The answer, then every point in fp32's order."""
    result = found.result
    reference = (
        "fp32"
        if found.against is None
        else f"fp32 on {found.against}"
        if result.variant == FP32
        else f"the same variant on {found.against}"
    )
    lines = [f"farm bisect: {result.variant} on {found.target} ({found.mode}) against {reference}"]
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


def where_fp32_parts(
    fleet: Fleet,
    *,
    work: Path,
    tags: Mapping[str, str],
    samples: int,
    reference: Target,
    others: Sequence[Target],
    settings: JobSettings,
    reporter: Reporter,
) -> dict[str, BisectResult]:
    """For `farm matrix`'s cross-check: where each of ``others``' fp32 leaves ``reference``'s, node by node, in a run
    folder whose input directory is staged. The reference's values are saved once; each comparison that cannot run
    says why in its result."""
    options = BisectOptions(target=reference.name, variant=FP32, against=reference.name, settings=settings)
    run = _Bisection(fleet=fleet, options=options, work=work, reporter=reporter, base=FP32, samples=samples)
    run.tags.update(tags)
    saved = run.job(reference, save=True)
    try:
        return {
            other.name: saved if saved.status != "done" else run.job(other, save=False, against=True)
            for other in others
        }
    finally:
        shutil.rmtree(work / INPUT_DIR / AGAINST_DIR, ignore_errors=True)


def parting(result: BisectResult, target: str, reference: str) -> str:
    """Where ``target``'s fp32 leaves ``reference``'s, for the cross-check's warning."""
    again = f"farm bisect --target {target} --against {reference} shows every node"
    if result.status != "done":
        return f"where they part is not known: {result.error}"
    first = result.first
    if first is None:
        return f"no node is below {result.threshold_db:g} dB between them ({again})"
    worst = "; ".join(f"{_named(n)} {n.local_db:.1f} dB" for n in result.worst if n.local_db is not None)
    alone = f"; alone, on the same inputs, the nodes that differ most are {worst}" if worst else ""
    return f"they part first at {_named(first)}, {first.sqnr_db:.1f} dB{alone} ({again})"
