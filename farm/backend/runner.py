"""How a target's container is started, per mode: the one place that knows about QEMU at run time.

- native: the image's Python, directly.
- masked (an x86 ISA tier on a CPU with more ISA and ``cpuid_fault``): the image's Python with farm's CPUID preload
  library (built here once, in farm's cache) mounted read-only and LD_PRELOADed, and the tier's mask in
  FARM_CPUID_MASK (farm/host/masking.py).
- emulated, same architecture (an x86 ISA tier): the host's static qemu-x86_64 is mounted read-only and is the
  entrypoint, with ``-cpu <model>``, because MLAS picks its kernels from CPUID and nothing else can cap that choice.
- emulated, foreign architecture: binfmt runs the image's binaries under QEMU; ``QEMU_CPU`` picks the core, and is
  always set because QEMU's default "max" CPU gave wrong int8 results.
- counting (an emulated placement given the counting QEMU, farm/host/counting.py): instead of the static QEMU or
  binfmt, the entrypoint is the bundle's loader running its plugin-capable qemu-<arch> with ``-cpu <model>`` and farm's
  instruction-count plugin, which appends the marked counts to a file inside the container; the bundle is mounted
  read-only. BLAS threads are pinned to one, since idle worker threads spin and their instructions would make the
  counts depend on timing, and Python's string hashing is seeded, so that two runs execute the same instructions.

Callers give the placement; this module applies it, so no caller assembles a mask library or a QEMU entrypoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from farm.backend.engine import Mount, RunSpec
from farm.host.counting import BUNDLE_IN_CONTAINER, CountingQemu
from farm.host.masking import LIBRARY_NAME, MASK_ENV, ensure_library
from farm.host.probe import Placement
from farm.targets.config import Target

PYTHON = "/opt/farm/bin/python3"
# Each in a folder of its own: on a remote engine a file's folder becomes a volume, which must not hold /farm/in.
QEMU_IN_CONTAINER = "/farm-qemu/qemu"
MASK_LIBRARY_IN_CONTAINER = "/farm-mask/libfarmcpuid.so"


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
    cache_dir: Path | None = None,
    plan_only: bool = False,
    counting: CountingQemu | None = None,
    counts_file: str | None = None,
) -> RunSpec:
    """A container that runs ``python3 ARGS`` in the target's image the way this host must run it.

    A masked placement needs ``cache_dir``, farm's cache, where its preload library is built once (an
    EnvironmentProblem when it cannot be); ``plan_only`` names the library without building it, for a plan that
    builds nothing (`farm matrix --dry-run`). ``counting`` runs an emulated placement under the counting QEMU,
    which writes its counts to ``counts_file`` (a path inside the container, on a writable mount).
    """
    if placement.mode == "unavailable":
        raise ValueError(f"target {target.name} is unavailable here: {placement.reason}")
    env = {"OMP_NUM_THREADS": "1", **(environment or {})}
    entrypoint: list[str] | None = None
    command = [PYTHON, *args]
    all_mounts = list(mounts)
    if placement.mode == "emulated" and not placement.cpu_model:
        # QEMU's default "max" CPU gave wrong int8 results; host.place never emulates without a model.
        raise ValueError(f"target {target.name} is emulated here without a CPU model")
    if counting is not None:
        if placement.mode != "emulated" or counts_file is None:
            raise ValueError(
                f"target {target.name}: the counting QEMU runs emulated placements only, with a counts file"
                f" (mode {placement.mode}, counts file {counts_file})"
            )
        all_mounts.append(Mount(source=counting.bundle, target=BUNDLE_IN_CONTAINER, read_only=True))
        entrypoint = counting.command(target.arch, str(placement.cpu_model), counts_file, root=BUNDLE_IN_CONTAINER)
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        env.setdefault("PYTHONHASHSEED", "0")  # the order of a set of strings is work too
        if placement.qemu is None:  # the job's own child processes still go through binfmt
            env["QEMU_CPU"] = str(placement.cpu_model)
    elif placement.mode == "emulated" and placement.qemu is not None:
        all_mounts.append(Mount(source=_path(placement.qemu.path), target=QEMU_IN_CONTAINER, read_only=True))
        entrypoint = [QEMU_IN_CONTAINER, "-cpu", str(placement.cpu_model)]
    elif placement.mode == "emulated":
        env["QEMU_CPU"] = str(placement.cpu_model)
    elif placement.mode == "masked":
        if placement.mask is None:
            raise ValueError(f"target {target.name} is masked here but no mask rules were given")
        library = _mask_library(target, cache_dir, plan_only=plan_only)
        all_mounts.append(Mount(source=library, target=MASK_LIBRARY_IN_CONTAINER, read_only=True))
        env.update({"LD_PRELOAD": MASK_LIBRARY_IN_CONTAINER, MASK_ENV: placement.mask})
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


def _mask_library(target: Target, cache_dir: Path | None, *, plan_only: bool) -> Path:
    if plan_only:
        return Path(LIBRARY_NAME)
    if cache_dir is None:
        raise ValueError(f"target {target.name} is masked here but farm's cache folder was not given")
    return ensure_library(cache_dir)


def _path(text: str) -> Path:
    # Bind mounts need the real file: qemu-x86_64-static may be a link to qemu-x86_64.
    return Path(text).resolve()
