"""`farm matrix`'s prepare stage: the int8 artifacts, made once per toolchain, natively where one can.

Emulated targets then calibrate nothing: QDQ models do not depend on the target, and calibrating under QEMU would
take far longer for the same ranges. An older runtime may not read what a newer quantizer writes (onnxruntime 1.17
reads ai.onnx.ml opset 4, and a 1.31 quantizer imports 5), so targets of another runtime get artifacts made by their
own.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from farm.controller.fleet import Fleet, ensure_images
from farm.controller.jobs import (
    INPUT_DIR,
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
from farm.controller.progress import Reporter
from farm.job.spec import Spec
from farm.targets.config import Target


def make_artifacts(
    fleet: Fleet,
    ready: Sequence[Target],
    tags: dict[str, str],
    *,
    work: Path,
    given: JobInputs,
    settings: JobSettings,
    reporter: Reporter,
    warnings: list[str],
) -> dict[str, str]:
    """Each target's folder of int8 artifacts in the run's input folder (none where they could not be made); what
    the stage found goes to ``warnings``. ``tags`` gains the image of a native helper that made them."""
    groups: dict[str, list[Target]] = {}
    for target in ready:
        groups.setdefault(toolchain(target), []).append(target)
    folders: dict[str, str] = {}
    for index, (chain, members) in enumerate(groups.items()):
        candidates = list(dict.fromkeys(v for t in members for v in candidates_for(t, given.info, settings)))
        if not candidates:
            continue
        maker = next((t for t in members if fleet.placements[t.name].mode in ("native", "masked")), None)
        maker = maker or _native_helper(fleet, tags, reporter, warnings, chain)
        if maker is None:
            maker = members[0]
            warnings.append(
                f"no native target runs {chain}, so its int8 artifacts were made under QEMU in {maker.name}"
            )
        name = "artifacts" if index == 0 else f"artifacts-{index}"
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
        if _prepare(fleet, maker, tags[maker.name], spec, work, name, settings, reporter, warnings):
            folders.update({t.name: name for t in members})
    return folders


def _prepare(
    fleet: Fleet,
    maker: Target,
    tag: str,
    spec: Spec,
    work: Path,
    name: str,
    settings: JobSettings,
    reporter: Reporter,
    warnings: list[str],
) -> bool:
    """Run the prepare stage in ``maker``; its artifacts, if it made them, become the input folder's ``name``."""
    inputs = work / INPUT_DIR
    out = job_out_dir(work, f"prepare-{name}")
    with reporter.step(f"prepare int8 artifacts in {maker.name}") as step:
        step.stage("quantize")
        result = run_job(
            fleet,
            maker,
            tag,
            spec,
            inputs,
            out,
            timeout_s=settings.budget(maker),
            keep=settings.keep_containers,
            on_line=step.line,
        )
    prepared = read_json(out / "prepare.json")
    warnings.extend(prepared.get("warnings", []))
    if result.failure:
        warnings.append(f"making the int8 artifacts in {maker.name} {result.failure}: " + last_line(result.log_tail))
    if not (out / "artifacts").is_dir():
        return False
    shutil.move(str(out / "artifacts"), str(inputs / name))
    open_up(inputs)
    return True


def _native_helper(
    fleet: Fleet, tags: dict[str, str], reporter: Reporter, warnings: list[str], chain: str
) -> Target | None:
    """A native target of the same toolchain that was not selected can still make the artifacts."""
    for target in fleet.config.targets:
        if fleet.placements[target.name].mode != "native" or target.image != "cpu" or toolchain(target) != chain:
            continue
        outcome = ensure_images(fleet, [target], reporter)[target.name]
        if outcome.image is not None:
            tags[target.name] = outcome.image.tag
            return target
        # The artifacts can come from another native target; without any, only fp32 and optimized run.
        warnings.append(f"{target.name} could not make the int8 artifacts: {outcome.error}")
    return None
