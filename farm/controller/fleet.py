"""The targets as this host sees them: config + engine + host probe, and the build of their images."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from farm.backend.base import Backend
from farm.backend.docker import DockerBackend
from farm.backend.engine import Engine, EngineInfo
from farm.backend.registry import open_places, place_key
from farm.controller import progress
from farm.errors import BuildFailed, FarmError
from farm.host import counting
from farm.host.probe import HostInfo, Placement, binfmt_for, probe_host
from farm.images import content as images
from farm.job.estimate.costs import cost_model_for
from farm.targets.config import LOCAL_ENGINE, Config, Target, load_config


@dataclass(frozen=True, kw_only=True)
class Fleet:
    config: Config
    # The controller's own engine and machine.
    engine: Engine
    host: HostInfo
    placements: dict[str, Placement]
    # Asked once when the fleet opens: the GPU runtime for placement, the version for the report's run block.
    engine_info: EngineInfo
    # Each reachable target's backend (farm/backend), and the machine its placement was decided on (its backend's
    # probe: the controller's for local targets, the remote machine's for the others).
    backends: dict[str, Backend] = field(default_factory=dict)
    hosts: dict[str, HostInfo] = field(default_factory=dict)

    @classmethod
    def open(cls, targets_file: Path | None, *, engine: Engine | None = None) -> Fleet:
        config = load_config(targets_file)
        engine = engine or Engine.connect()
        info = engine.info()
        host = probe_host(gpu_runtime=info.gpu_runtime)
        local = DockerBackend(engine, cache_dir=config.cache_dir)
        places = open_places(config, engine)
        counter = counting.find(config.cache_dir)
        backends: dict[str, Backend] = {}
        hosts: dict[str, HostInfo] = {}
        placements: dict[str, Placement] = {}
        for target in config.targets:
            if target.engine == LOCAL_ENGINE:
                backends[target.name] = local
                placements[target.name], hosts[target.name] = local.place(target, host)
                placements[target.name] = with_estimates(target, placements[target.name], counter)
                continue
            there = places[place_key(target)]
            if there.backend is None or there.host is None:
                # Unreachable: its targets are unavailable, the rest run.
                placements[target.name] = Placement(
                    mode="unavailable", reason=f"its backend is unreachable: {there.problem}"
                )
                continue
            backends[target.name] = there.backend
            placements[target.name], hosts[target.name] = there.backend.place(target, there.host)
        return cls(
            config=config,
            engine=engine,
            host=host,
            engine_info=info,
            placements=placements,
            backends=backends,
            hosts=hosts,
        )

    def backend(self, target: Target) -> Backend:
        return self.backends[target.name]

    def buildable(self, target: Target) -> str | None:
        """Why the target's image cannot be built where it runs, or None. A GPU image builds without a GPU."""
        host = self.hosts.get(target.name)
        if host is None:
            return self.placements[target.name].reason
        if target.arch == host.arch or binfmt_for(host, target.arch):
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
    # Where its jobs run (targets.toml's engine) and whether farm reached it just now.
    backend: str
    reachable: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class BuildResults:
    built: list[images.BuiltImage] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def describe(fleet: Fleet) -> list[TargetRow]:
    rows = []
    for target in fleet.config.targets:
        placement = fleet.placements[target.name]
        tag = images.current_tag(fleet.config, target)
        backend = fleet.backends.get(target.name)
        rows.append(
            TargetRow(
                name=target.name,
                platform=target.platform,
                mode=placement.mode,
                reason=placement.reason,
                cpu_model=placement.cpu_model,
                image=tag,
                built=bool(tag and backend is not None and backend.image_ref(tag)),
                backend=target.engine,
                reachable=backend is not None,
            )
        )
    return rows


@dataclass(frozen=True, kw_only=True)
class BuildOutcome:
    """One target's image, or why it could not be made."""

    image: images.BuiltImage | None = None
    error: FarmError | None = None


def build(fleet: Fleet, names: Sequence[str], reporter: progress.Reporter) -> BuildResults:
    return build_images(fleet, fleet.config.select(names), explicit=bool(names), reporter=reporter)


def build_images(
    fleet: Fleet, targets: Sequence[Target], *, explicit: bool, reporter: progress.Reporter
) -> BuildResults:
    """Named targets are built whenever this host can build them; by default only the ones it can run."""
    results = BuildResults()
    wanted = []
    named = [t.name for t in targets] if explicit else []
    for target in targets:
        placement = fleet.placements[target.name]
        if not explicit and not placement.runnable:
            results.skipped.append((target.name, placement.reason or "unavailable"))
        elif target.waits_for_request(named):
            results.skipped.append((target.name, f"built only on request: farm build --target {target.name}"))
        elif why_not := fleet.buildable(target):
            results.skipped.append((target.name, why_not))
        else:
            wanted.append(target)
    outcomes = ensure_images(fleet, wanted, reporter)
    for outcome in outcomes.values():
        if outcome.error is not None:
            # Every other target's image is built before the first failure is raised.
            raise outcome.error
        assert outcome.image is not None
        results.built.append(outcome.image)
    return results


def ensure_images(fleet: Fleet, targets: Sequence[Target], reporter: progress.Reporter) -> dict[str, BuildOutcome]:
    """Each target's image, built or reused, in the order given; a failure is kept with its target.

    One thread per platform: a foreign platform's build runs under QEMU on one core while the native one downloads and
    builds on another. Targets of one platform share a base (and often a wheelhouse), so they are built in turn. The
    threads are daemons, so Ctrl-C never waits for a build to end; the engine drops a build whose client went away.
    """
    groups: dict[str, list[Target]] = {}
    for target in targets:
        groups.setdefault(target.platform, []).append(target)
    outcomes: dict[str, BuildOutcome] = {}

    def build_group(group: Sequence[Target]) -> None:
        for target in group:
            try:
                with reporter.step(f"image {target.name}") as step:
                    built = fleet.backend(target).ensure_image(
                        fleet.config, target, on_line=step.line, on_stage=step.stage
                    )
                outcomes[target.name] = BuildOutcome(image=built)
            except FarmError as exc:
                outcomes[target.name] = BuildOutcome(error=exc)
            except Exception as exc:  # a bug or an SDK error: reported for this target, not lost in a thread
                outcomes[target.name] = BuildOutcome(
                    error=BuildFailed(f"building the image of {target.name} failed because {type(exc).__name__}: {exc}")
                )

    threads = [threading.Thread(target=build_group, args=(group,), daemon=True) for group in groups.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        # join with a timeout, so that the main thread sees Ctrl-C while it waits.
        while thread.is_alive():
            thread.join(timeout=0.5)
    return {t.name: outcomes[t.name] for t in targets}


# Where farm says how to get estimates: a target's warnings when it ran under QEMU without them.
NO_COUNTING = (
    "no speed estimate: farm's counting QEMU is not built on this host, so {target} was run for accuracy only; "
    "run `farm doctor --fix --estimates` as root (about 2 minutes) for instruction-count estimates"
)


def with_estimates(target: Target, placement: Placement, counter: counting.CountingQemu | None) -> Placement:
    """An emulated placement on this engine runs under the counting QEMU when it is built and farm has a cost model
    for the core QEMU emulates; the bundle lives in this host's cache, so remote engines never get it."""
    if placement.mode != "emulated" or counter is None:
        return placement
    if cost_model_for(target.arch, placement.cpu_model) is None:
        return placement
    return replace(placement, counting=counter, reason=f"{placement.reason}; {ESTIMATED_NOTE}")


ESTIMATED_NOTE = "its speed is estimated from instruction counts under farm's counting QEMU"


def no_estimate(target: Target, placement: Placement) -> str | None:
    """Why an emulated target of this engine got no speed estimate, with how to get one; None when it got one or
    is not emulated here."""
    if placement.mode != "emulated" or placement.counting is not None or target.engine != LOCAL_ENGINE:
        return None
    if cost_model_for(target.arch, placement.cpu_model) is None:
        return (
            f"no speed estimate: farm has no cost model for {placement.cpu_model} (farm/job/estimate/costs.json), "
            f"so {target.name} was run for accuracy only"
        )
    return NO_COUNTING.format(target=target.name)
