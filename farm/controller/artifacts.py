"""`farm matrix`'s prepare stage: the int8 artifacts, made once per toolchain, natively where one can, and kept in
farm's artifact cache (farm/controller/artifactstore.py) so that a later run on the same work makes none.

Emulated targets then calibrate nothing: QDQ models do not depend on the target, and calibrating under QEMU would
take far longer for the same ranges. An older runtime may not read what a newer quantizer writes (onnxruntime 1.17
reads ai.onnx.ml opset 4, and a 1.31 quantizer imports 5), so targets of another runtime get artifacts made by their
own, under a key of their own (the maker's image is part of it).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from farm.controller.artifactkey import Ingredients, artifact_key, image_content, short, spec_material
from farm.controller.artifactstore import ArtifactCache, Hit, deliver
from farm.controller.fleet import Fleet, ensure_images
from farm.controller.jobs import (
    INPUT_DIR,
    MODEL_DIR,
    JobInputs,
    JobSettings,
    candidates_for,
    job_out_dir,
    job_spec,
    last_line,
    open_up,
    read_json,
    run_job,
    toolchain,
)
from farm.controller.progress import Reporter, Step
from farm.host.files import file_sha256
from farm.job.report import PrepareStage, Report
from farm.job.spec import Spec
from farm.targets.config import Target


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """Each target's folder of int8 artifacts in the run's input folder (none where they could not be made), and
    how each toolchain's came about, for the report's run block."""

    folders: dict[str, str]
    stages: tuple[PrepareStage, ...]

    def recorded(self, head: Report) -> Report:
        """``head`` with the stages in its run block."""
        return head if head.run is None else replace(head, run=replace(head.run, prepare=self.stages))


@dataclass(frozen=True, kw_only=True)
class _Work:
    """One toolchain's prepare: who makes it, its spec and key, and the input folder's name for its artifacts."""

    maker: Target
    tag: str
    spec: Spec
    key: str
    name: str
    members: tuple[str, ...]


def make_artifacts(
    fleet: Fleet,
    ready: Sequence[Target],
    tags: dict[str, str],
    *,
    work: Path,
    given: JobInputs,
    settings: JobSettings,
    cache: bool,
    reporter: Reporter,
    warnings: list[str],
) -> Prepared:
    """The int8 artifacts of ``ready``'s toolchains, from farm's artifact cache where it has them (``cache``: use
    it); what the stage found goes to ``warnings``. ``tags`` gains the image of a native helper that made them."""
    store = ArtifactCache(fleet.config.artifact_cache_dir) if cache else None
    groups: dict[str, list[Target]] = {}
    for target in ready:
        groups.setdefault(toolchain(target), []).append(target)
    folders: dict[str, str] = {}
    stages = []
    for index, (chain, members) in enumerate(groups.items()):
        candidates = list(dict.fromkeys(v for t in members for v in candidates_for(t, given.info, settings)))
        if not candidates:
            continue
        maker = next((t for t in members if fleet.placements[t.name].on_this_cpu), None)
        maker = maker or _native_helper(fleet, tags, reporter, warnings, chain)
        if maker is None:
            maker = members[0]
            warnings.append(
                f"no native target runs {chain}, so its int8 artifacts were made under QEMU in {maker.name}"
            )
        spec = job_spec(
            maker,
            fleet.placements[maker.name],
            "prepare",
            candidates,
            settings,
            inputs=work / INPUT_DIR,
            host_flags=fleet.hosts[maker.name].cpu_flags,
            metric=given.metric,
        )
        job = _Work(
            maker=maker,
            tag=tags[maker.name],
            spec=spec,
            key=artifact_key(_ingredients(spec, work / INPUT_DIR, given, tags[maker.name])),
            name="artifacts" if index == 0 else f"artifacts-{index}",
            members=tuple(t.name for t in members),
        )
        stage = _stage(fleet, job, work, settings, store, reporter, warnings)
        if stage.artifacts != "failed":
            folders.update(dict.fromkeys(job.members, job.name))
        stages.append(replace(stage, toolchain=chain))
    return Prepared(folders=folders, stages=tuple(stages))


def _ingredients(spec: Spec, inputs: Path, given: JobInputs, tag: str) -> Ingredients:
    """What the artifacts depend on, hashed from what the job reads in the input folder (the data by its values:
    the staged .npz carries the time it was written)."""
    rewritten = None if spec.rewritten is None else inputs / spec.rewritten
    return Ingredients(
        model_sha256=given.info.sha256,
        external_data={name: file_sha256(inputs / MODEL_DIR / name) for name in given.info.external_data},
        rewritten_sha256=file_sha256(rewritten) if rewritten is not None and rewritten.is_file() else None,
        data_sha256=given.data.sha256(),
        spec=spec_material(spec),
        image=image_content(tag),
    )


def _stage(
    fleet: Fleet,
    job: _Work,
    work: Path,
    settings: JobSettings,
    cache: ArtifactCache | None,
    reporter: Reporter,
    warnings: list[str],
) -> PrepareStage:
    """One toolchain's artifacts into the input folder: from the cache, else made by a prepare job and stored."""
    candidates = job.spec.candidates
    stage = PrepareStage(
        toolchain="", targets=job.members, artifacts="failed", maker=job.maker.name, key=job.key, cached=False
    )
    with reporter.step(f"prepare int8 artifacts in {job.maker.name}") as step:
        if cache is None:
            made, _ = _prepare(fleet, job, work, settings, step, warnings)
            return replace(stage, artifacts="failed" if made is None else "made")
        # Held while making: a second run of the same work waits here, then reuses what this one stores.
        with cache.making(job.key, on_wait=step.stage) as unwritable:
            hit, damaged = cache.lookup(job.key, candidates)
            warnings.extend(w for w in (unwritable, damaged) if w)
            if hit is not None and _reuse(hit, work / INPUT_DIR / job.name, step, warnings):
                return replace(stage, artifacts="reused", maker=hit.maker, cached=True)
            made, ended_well = _prepare(fleet, job, work, settings, step, warnings)
            if made is None:
                return stage
            # Only a job that ended on its own is the work's whole answer; one cut off or crashed is not kept.
            if ended_well and not unwritable:
                prepared = read_json(made / "prepare.json")
                problem = cache.store(job.key, made, prepared, candidates, maker=job.maker.name)
                warnings.extend([problem] if problem else [])
            return replace(stage, artifacts="made", cached=cache.has(job.key))


def _reuse(hit: Hit, destination: Path, step: Step, warnings: list[str]) -> bool:
    """The cached artifacts as the input folder's ``destination``, with the warnings prepare gave when it made
    them; False (and a warning) when they cannot be brought over, so they are made again."""
    try:
        deliver(hit, destination)
    except OSError as exc:
        shutil.rmtree(destination, ignore_errors=True)
        warnings.append(f"the artifact cache's entry {hit.folder.parent} could not be used ({exc}); made again")
        return False
    open_up(destination)
    warnings.extend(hit.prepared.get("warnings", []))
    step.stage(f"reused from the artifact cache (key {short(hit.key)}, made in {hit.maker} at {hit.created})")
    return True


def _prepare(
    fleet: Fleet, job: _Work, work: Path, settings: JobSettings, step: Step, warnings: list[str]
) -> tuple[Path | None, bool]:
    """Run the prepare stage in the maker; its artifacts, if it made any, become the input folder's ``job.name``.
    Returns their folder there, and whether the job ended well."""
    inputs = work / INPUT_DIR
    out = job_out_dir(work, f"prepare-{job.name}")
    step.stage(f"quantize (key {short(job.key)})")
    result = run_job(
        fleet,
        job.maker,
        job.tag,
        job.spec,
        inputs,
        out,
        timeout_s=settings.budget(job.maker),
        keep=settings.keep_containers,
        on_line=step.line,
    )
    prepared = read_json(out / "prepare.json")
    warnings.extend(prepared.get("warnings", []))
    if result.failure:
        warnings.append(
            f"making the int8 artifacts in {job.maker.name} {result.failure}: " + last_line(result.log_tail)
        )
    if not (out / "artifacts").is_dir():
        return None, False
    shutil.move(str(out / "artifacts"), str(inputs / job.name))
    open_up(inputs)
    return inputs / job.name, not result.failure


def _native_helper(
    fleet: Fleet, tags: dict[str, str], reporter: Reporter, warnings: list[str], chain: str
) -> Target | None:
    """A target of the same toolchain that runs on this CPU (natively or masked) and was not selected can still make
    the artifacts: on a CPU with AMX every x86 tier is masked, and calibrating a real-size CNN's seven candidates under
    QEMU took 77 s where the host takes seconds."""
    for target in fleet.config.targets:
        if not fleet.placements[target.name].on_this_cpu or target.image != "cpu" or toolchain(target) != chain:
            continue
        outcome = ensure_images(fleet, [target], reporter)[target.name]
        if outcome.image is not None:
            tags[target.name] = outcome.image.tag
            return target
        # The artifacts can come from another native target; without any, only fp32 and optimized run.
        warnings.append(f"{target.name} could not make the int8 artifacts: {outcome.error}")
    return None
