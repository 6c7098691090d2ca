"""`farm matrix --dry-run`: what a run would create on each selected target's backend, as data, with nothing built
and nothing run."""

from __future__ import annotations

from pathlib import Path

import yaml

from farm.backend.registry import offline_backend
from farm.controller.fleet import Fleet
from farm.controller.jobs import JobInputs, container
from farm.controller.matrix import MatrixOptions
from farm.host.probe import Placement
from farm.images import content as images

DRY_RUN_DIR = "dry-run"


def dry_run(fleet: Fleet, given: JobInputs, options: MatrixOptions) -> tuple[list[Path], list[str]]:
    """What a run would create on each selected target's backend, written as data (Kubernetes manifests, container
    settings) into ``<out>/dry-run/``; nothing is built and nothing runs. Returns the files and notes for the user."""
    folder = options.out_dir / DRY_RUN_DIR
    inputs, notes, written = fleet.config.cache_dir / "runs" / "(run)" / "in", [], []
    for target in fleet.config.select(options.targets):
        if target.waits_for_request(options.targets):
            continue  # as a run does: only when named
        backend = fleet.backends.get(target.name)
        placement = fleet.placements[target.name]
        if backend is None:
            # Unreachable now: its manifests need no answer from it, so they are written as for a native run.
            backend, placement = offline_backend(target, fleet.config, fleet.engine), Placement(mode="native")
            notes.append(f"{target.name}: its backend is unreachable now; written as if it ran there natively")
        elif not placement.runnable:
            notes.append(f"{target.name}: not written, it cannot run ({placement.reason})")
            continue
        tag = images.current_tag(fleet.config, target) or f"farm/{target.name}:not-built-yet"
        for stage in ("prepare", "evaluate") if placement.on_this_cpu else ("evaluate",):
            out = fleet.config.cache_dir / "runs" / "(run)" / f"out-{stage}"
            spec = container(
                target, placement, tag, stage, inputs, out, timeout_s=options.settings.budget(target), plan_only=True
            )
            path = folder / f"{target.name}-{stage}.yaml"
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump_all(backend.manifests(spec), sort_keys=False, width=120))
            written.append(path)
    return written, notes
