"""How many workers (farm.job.pool) the job's container holds: the cores it may use, the memory it has left, and
FARM_JOB_WORKERS, which overrides both (1: everything in the job's own process, as before workers existed).

The cores are the process's CPU affinity (a container's cpuset limits it) and, when the container has a CPU quota
(cgroup cpu.max or cfs_quota_us; Kubernetes sets one from a pod's cpu limit, Docker only with --cpus, which farm does
not pass), that quota rounded up. The memory is the container's limit less what it uses now (cgroup v2 or v1; what it
uses counts reclaimable page cache, so the room is an under-estimate), and no more than the host's MemAvailable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

WORKERS_ENV = "FARM_JOB_WORKERS"
CGROUP = Path("/sys/fs/cgroup")
MEMINFO = Path("/proc/meminfo")
# What cgroup v1 writes for "no limit" is near 2**63; anything above this is none.
UNLIMITED = 1 << 60


class BadWorkers(ValueError):
    """FARM_JOB_WORKERS is not a whole number of at least 1."""


def workers_override(environ: Mapping[str, str]) -> int | None:
    """FARM_JOB_WORKERS as a count (None: not set, or empty); raises BadWorkers with the fix."""
    value = environ.get(WORKERS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise BadWorkers(
            f"{WORKERS_ENV} must be a whole number of at least 1 (1 runs the job's variants one after another), "
            f"not {value!r}"
        )
    return int(value)


def worker_count(
    tasks: int, *, per_worker: int, reserve: int = 0, root: Path = CGROUP, meminfo: Path = MEMINFO
) -> tuple[int, str]:
    """How many workers to fork for ``tasks`` tasks, each worker needing ``per_worker`` bytes beside ``reserve``
    bytes the job needs for something else meanwhile; with the rule's figures in words, for the log.

    The most of: the cores, the tasks, and the workers that fit in the container's memory room (at least 1: a
    single worker needs no more memory than the job's own process would). FARM_JOB_WORKERS replaces all of it."""
    try:
        forced = workers_override(os.environ)
    except BadWorkers:  # the controller refuses the value before any container starts; here it only falls back
        forced = None
    if forced is not None:
        return min(forced, max(tasks, 1)), f"{WORKERS_ENV}={forced}"
    cores = usable_cores(root)
    room = memory_room(root, meminfo)
    fit = cores if room is None else max(1, (room - reserve) // max(per_worker, 1))
    count = max(1, min(cores, tasks, fit))
    memory = "no memory limit" if room is None else f"{room >> 20} MiB free, {per_worker >> 20} MiB a worker"
    return count, f"{cores} core(s), {tasks} task(s), {memory}"


def usable_cores(root: Path = CGROUP) -> int:
    """The cores the process may run on: its affinity, capped by the container's CPU quota, if any."""
    count = len(os.sched_getaffinity(0))
    quota = cpu_quota(root)
    return count if quota is None else max(1, min(count, math.ceil(quota)))


def cpu_quota(root: Path = CGROUP) -> float | None:
    """The container's CPU quota in cores (None: none): cgroup v2's cpu.max, or v1's cfs quota and period."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            return _ratio(parts[0], parts[1])
        return None
    quota, period = _read(root / "cpu" / "cpu.cfs_quota_us"), _read(root / "cpu" / "cpu.cfs_period_us")
    if quota is None or period is None or quota.startswith("-"):
        return None
    return _ratio(quota, period)


def memory_room(root: Path = CGROUP, meminfo: Path = MEMINFO) -> int | None:
    """Bytes the container may still take: its limit less its usage, and no more than the host's MemAvailable;
    None when neither is known."""
    figures: list[int] = []
    for limit_file, usage_file in (
        (root / "memory.max", root / "memory.current"),
        (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes"),
    ):
        limit, usage = _number(limit_file), _number(usage_file)
        if limit is not None and usage is not None and limit < UNLIMITED:
            figures.append(max(0, limit - usage))
            break
    available = _mem_available(meminfo)
    if available is not None:
        figures.append(available)
    return min(figures) if figures else None


def _mem_available(meminfo: Path) -> int | None:
    text = _read(meminfo)
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        return int(quota) / int(period) if int(period) > 0 else None
    except ValueError:
        return None


def _number(path: Path) -> int | None:
    text = _read(path)
    return int(text) if text is not None and text.isdigit() else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
