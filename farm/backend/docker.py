"""A Docker engine as a backend: the controller's own, or a remote one (tcp://, ssh://, a Docker context).

On the controller's engine, jobs see the controller's folders through bind mounts, and the host probe reads this
machine. On a remote engine nothing of the controller is visible: the probe runs *there*, in a container (its CPU,
flags and cores, as that machine's kernel reports them; the engine's own info for its architecture and GPUs), files
travel as archives through the API (farm/backend/volumes.py, an engine's ``remote``), and images are shipped from the
controller (``docker save``/``load``, streamed) when the controller has the same content, or built there from the
same content hash otherwise. QEMU is never shipped: on a remote engine a target runs natively, masked, or not at all.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from farm.backend import imagebuild
from farm.backend.base import Reach
from farm.backend.engine import STAGE_LABEL, Engine, ImageInfo, RunResult, RunSpec
from farm.errors import EnvironmentProblem
from farm.host.files import LineSink
from farm.host.owner import is_gone
from farm.host.probe import HostInfo, Placement, cpu_flags_in, cpu_model_in, place, probe_host
from farm.images import bootstrap
from farm.images import content as images
from farm.targets.config import PLATFORM_ARCH, Config, Target

# What the remote probe prints, with nothing but the base's Python: the machine as its own kernel describes it.
_PROBE = (
    "import json, os, platform; print(json.dumps({'cpuinfo': open('/proc/cpuinfo').read(), "
    "'cores': len(os.sched_getaffinity(0)), 'machine': platform.machine()}))"
)
_ARCH_PLATFORM = {arch: platform for platform, arch in PLATFORM_ARCH.items()}


class DockerBackend:
    def __init__(self, engine: Engine, *, cache_dir: Path, controller: Engine | None = None) -> None:
        self.engine = engine
        self._cache_dir = cache_dir
        # The controller's own engine, from which a remote one gets images the controller already has.
        self._controller = controller

    @property
    def reach(self) -> Reach:
        return Reach(
            kind="docker", where=self.engine.host if self.engine.remote else "local", remote=self.engine.remote
        )

    def probe(self) -> HostInfo:
        info = self.engine.info()
        if not self.engine.remote:
            return probe_host(gpu_runtime=info.gpu_runtime)
        arch = info.arch
        if arch not in _ARCH_PLATFORM:
            raise EnvironmentProblem(
                f"the engine at {self.engine.host} runs on {arch}, which farm has no images for",
                fix="point the target at an x86_64 or aarch64 machine",
            )
        base = self._probe_base(arch)
        result = self.engine.run(
            RunSpec(
                image=base,
                command=[images.BOOTSTRAP_PYTHON, "-c", _PROBE],
                platform=_ARCH_PLATFORM[arch],
                timeout_s=120.0,
                memory="256m",
                labels={STAGE_LABEL: "probe"},
            )
        )
        try:
            found = json.loads(result.log_tail.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise EnvironmentProblem(
                f"probing the machine behind the engine at {self.engine.host} failed: the probe container "
                f"{result.failure or 'printed no answer'}",
                fix="check that engine with `docker info` there",
            ) from None
        return HostInfo(
            arch=arch,
            cpu_flags=cpu_flags_in(found["cpuinfo"]),
            cpu_model=cpu_model_in(found["cpuinfo"]),
            gpu_runtime=info.gpu_runtime,
            where=self.engine.host,
        )

    def place(self, target: Target, host: HostInfo) -> tuple[Placement, HostInfo]:
        placement = place(target, host)
        if not self.engine.remote or placement.reason is None:
            return placement, host
        where = f"on {host.where} ({host.cpu_model or 'CPU model unknown'}): "
        return replace(placement, reason=where + placement.reason), host

    def image_ref(self, tag: str) -> str | None:
        """The name under which this engine has the content of ``tag``, or None."""
        found = imagebuild.find_image(self.engine, tag)
        return None if found is None else (tag if tag in found.tags else found.tags[0])

    def ensure_image(
        self, config: Config, target: Target, *, on_line: LineSink, on_stage: LineSink
    ) -> images.BuiltImage:
        if not self.engine.remote or self._controller is None:
            return imagebuild.ensure_image(self.engine, config, target, on_line=on_line, on_stage=on_stage)
        started = time.monotonic()
        _, tag = images.ensure_tag(config, target, on_line=on_line, on_stage=on_stage)
        here = imagebuild.find_image(self._controller, tag)
        if here is None or imagebuild.find_image(self.engine, tag) is not None:
            # Already there, or the controller lacks it too: build there, from the same content hash.
            self._ship_base(images.base_ref(target))
            return imagebuild.ensure_image(self.engine, config, target, on_line=on_line, on_stage=on_stage)
        on_stage(f"ship from the controller to {self.engine.host}")
        self._controller.ship(here.id, self.engine)
        _tag_as(self.engine, here, tag)
        shipped = self.engine.image(tag)
        return images.BuiltImage(
            target=target.name,
            tag=tag,
            size_bytes=shipped.size_bytes if shipped else 0,
            built_now=False,
            seconds=time.monotonic() - started,
            origin="shipped",
        )

    def manifests(self, spec: RunSpec) -> list[dict[str, Any]]:
        return [self.engine.describe(spec)]

    def run(self, spec: RunSpec, *, on_line: LineSink | None = None) -> RunResult:
        return self.engine.run(spec, on_line=on_line)

    def sweep(self) -> list[str]:
        """A remote engine's containers and volumes of farm processes that are gone (the local engine's are swept
        with the run folders, farm/controller/clean.py)."""
        if not self.engine.remote:
            return []
        removed = []
        for container in self.engine.farm_containers():
            if container.owner is not None and is_gone(container.owner):
                self.engine.remove_container(container.id)
                removed.append(f"container {container.name} on {self.engine.host}")
        for volume, owner in self.engine.farm_volumes():
            if owner is not None and is_gone(owner):
                self.engine.remove_volume(volume)
                removed.append(f"volume {volume[:12]} on {self.engine.host}")
        return removed

    def _ship_base(self, ref: str) -> None:
        """A base the controller has goes there by save/load rather than by a bootstrap or a pull there."""
        if self.engine.image(ref) is None and self._controller is not None:
            here = self._controller.image(ref)
            if here is not None:
                self._controller.ship(here.id, self.engine)
                _tag_as(self.engine, here, ref)

    def _probe_base(self, arch: str) -> str:
        """The bootstrapped base of the machine's architecture, there: all the probe needs is its Python."""
        ref = bootstrap.base_tag(arch)
        self._ship_base(ref)
        return imagebuild.ensure_base(
            self.engine, self._cache_dir, Target(name=f"base-{arch}", platform=_ARCH_PLATFORM[arch]), lambda _: None
        )


def _tag_as(engine: Engine, image: ImageInfo, ref: str) -> None:
    # docker load keeps the tags the image had; the one asked for may be another target's name for the same content.
    if ref not in image.tags:
        engine.tag(image.id, ref)
