"""The targets as this host sees them: config + engine + host probe, and the build of their images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from farm import images, progress
from farm.config import Config, Target, load_config
from farm.engine import Engine
from farm.host import HostInfo, Placement, binfmt_for, place, probe_host


@dataclass(frozen=True, kw_only=True)
class Fleet:
    config: Config
    engine: Engine
    host: HostInfo
    placements: dict[str, Placement]

    @classmethod
    def open(cls, targets_file: Path | None, *, engine: Engine | None = None) -> Fleet:
        config = load_config(targets_file)
        engine = engine or Engine.connect()
        host = probe_host(gpu_runtime=engine.info().gpu_runtime)
        return cls(config=config, engine=engine, host=host,
                   placements={t.name: place(t, host) for t in config.targets})

    def buildable(self, target: Target) -> str | None:
        """Why this host cannot build the target's image, or None. A GPU image builds without a GPU."""
        if target.arch == self.host.arch or binfmt_for(self.host, target.arch):
            return None
        return self.placements[target.name].reason or f"cannot run {target.arch} programs to build the image"


@dataclass(frozen=True, kw_only=True)
class TargetRow:
    name: str
    platform: str
    mode: str
    reason: str | None
    cpu_model: str | None
    image: str | None
    built: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class BuildResults:
    built: list[images.BuiltImage] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def describe(targets_file: Path | None) -> list[TargetRow]:
    fleet = Fleet.open(targets_file)
    rows = []
    for target in fleet.config.targets:
        placement = fleet.placements[target.name]
        tag = images.current_tag(fleet.config, target)
        rows.append(TargetRow(
            name=target.name, platform=target.platform, mode=placement.mode, reason=placement.reason,
            cpu_model=placement.cpu_model, image=tag, built=bool(tag and fleet.engine.image(tag)),
        ))
    return rows


def build(targets_file: Path | None, names: Sequence[str], *, quiet: bool) -> BuildResults:
    fleet = Fleet.open(targets_file)
    return build_images(fleet, fleet.config.select(names), explicit=bool(names), quiet=quiet)


def build_images(fleet: Fleet, targets: Sequence[Target], *, explicit: bool, quiet: bool) -> BuildResults:
    """Named targets are built whenever this host can build them; by default only the ones it can run."""
    results = BuildResults()
    with progress.reporter(quiet) as report:
        for target in targets:
            placement = fleet.placements[target.name]
            if not explicit and not placement.runnable:
                results.skipped.append((target.name, placement.reason or "unavailable"))
                continue
            if not explicit and target.on_request:
                results.skipped.append((target.name, f"built only on request: farm build --target {target.name}"))
                continue
            why_not = fleet.buildable(target)
            if why_not:
                results.skipped.append((target.name, why_not))
                continue
            with report.step(f"image {target.name}") as step:
                results.built.append(images.ensure_image(
                    fleet.engine, fleet.config, target, on_line=step.line, on_stage=step.stage))
    return results
