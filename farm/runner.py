"""How a target's container is started, per mode: the one place that knows about QEMU at run time.

- native: the image's Python, directly.
- emulated, same architecture (an x86 ISA tier): the host's static qemu-x86_64 is mounted read-only and is the
  entrypoint, with ``-cpu <model>``, because MLAS picks its kernels from CPUID and nothing else can cap that choice.
- emulated, foreign architecture: binfmt runs the image's binaries under QEMU; ``QEMU_CPU`` picks the core, and is
  always set because QEMU's default "max" CPU gave wrong int8 results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from farm.config import Target
from farm.engine import Mount, RunSpec
from farm.host import Placement

PYTHON = "/opt/farm/bin/python3"
QEMU_IN_CONTAINER = "/farm/qemu"


def run_spec(
    target: Target,
    placement: Placement,
    image: str,
    args: Sequence[str],
    *,
    mounts: Sequence[Mount] = (),
    environment: Mapping[str, str] | None = None,
    timeout_s: float = 1800.0,
    memory: str = "4g",
    labels: Mapping[str, str] | None = None,
    keep: bool = False,
) -> RunSpec:
    """A container that runs ``python3 ARGS`` in the target's image the way this host must run it."""
    if placement.mode == "unavailable":
        raise ValueError(f"target {target.name} is unavailable here: {placement.reason}")
    env = {"OMP_NUM_THREADS": "1", **(environment or {})}
    entrypoint: list[str] | None = None
    command = [PYTHON, *args]
    all_mounts = list(mounts)
    if placement.mode == "emulated" and placement.qemu is not None:
        all_mounts.append(Mount(source=_path(placement.qemu.path), target=QEMU_IN_CONTAINER, read_only=True))
        entrypoint = [QEMU_IN_CONTAINER, "-cpu", placement.cpu_model or "max"]
    elif placement.mode == "emulated" and placement.cpu_model:
        env["QEMU_CPU"] = placement.cpu_model
    return RunSpec(
        image=image,
        command=command,
        entrypoint=entrypoint,
        mounts=all_mounts,
        environment=env,
        platform=target.platform,
        gpus=target.gpus,
        timeout_s=timeout_s,
        memory=memory,
        labels={"farm.target": target.name, **(labels or {})},
        keep=keep,
    )


def _path(text: str) -> Path:
    # Bind mounts need the real file: qemu-x86_64-static may be a link to qemu-x86_64.
    return Path(text).resolve()
