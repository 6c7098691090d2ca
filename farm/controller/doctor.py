"""`farm doctor`: what this host has for each part farm needs, and what to do about what it lacks.

``fix`` installs and registers what is missing (as root) and returns exactly what it changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from farm.backend.engine import Engine
from farm.backend.registry import open_places
from farm.controller.clean import artifact_entries, disk_size
from farm.errors import EnvironmentProblem, FarmError
from farm.host import counting, masking
from farm.host.probe import BINFMT_DIR, QEMU_MIN_VERSION, HostInfo, probe_host
from farm.images import bootstrap
from farm.targets.config import artifact_cache_dir_of, cache_dir_of, load_config

Level = Literal["ok", "warn", "fail"]
BACKPORTS_LIST = Path("/etc/apt/sources.list.d/farm-bookworm-backports.list")
MIN_FREE_BYTES = 10 * 2**30
# The handlers farm needs: the foreign architecture of each supported host.
FOREIGN = {"x86_64": ("aarch64",), "aarch64": ("x86_64",)}


@dataclass(frozen=True, kw_only=True)
class Diagnosis:
    name: str
    level: Level
    detail: str
    fix: str | None = None


def diagnose(env: dict[str, str] | None = None, *, targets_file: Path | None = None) -> list[Diagnosis]:
    checks: list[Diagnosis] = []
    gpu_runtime = False
    engine = None
    try:
        engine = Engine.connect(env)
        info = engine.info()
        gpu_runtime = info.gpu_runtime
        checks.append(
            Diagnosis(
                name="engine",
                level="ok",
                detail=f"Docker {info.version} (API {info.api_version}) at {engine.host}, {info.arch}",
            )
        )
        checks.append(_disk(Path(info.docker_root)))
    except FarmError as exc:
        checks.append(Diagnosis(name="engine", level="fail", detail=exc.message, fix=exc.fix))
    host = probe_host(gpu_runtime=gpu_runtime)
    checks.extend(_qemu(host))
    checks.extend(_binfmt(host))
    checks.append(_cpu(host))
    checks.append(
        Diagnosis(name="gpu", level="ok", detail="the engine has the 'nvidia' runtime")
        if gpu_runtime
        else Diagnosis(
            name="gpu",
            level="warn",
            detail="no NVIDIA container runtime: gpu targets are unavailable",
            fix="on a GPU host, install the NVIDIA Container Toolkit and restart Docker",
        )
    )
    checks.append(_bootstrap())
    checks.append(_estimates(cache_dir_of(os.environ if env is None else env)))
    checks.append(_artifact_cache(artifact_cache_dir_of(os.environ if env is None else env)))
    if engine is not None:
        checks.extend(_backends(engine, targets_file))
    return checks


def _backends(engine: Engine, targets_file: Path | None) -> list[Diagnosis]:
    """Each place targets.toml sends targets to other than this engine: reachable, and what machine is there."""
    try:
        config = load_config(targets_file)
    except FarmError as exc:
        return [Diagnosis(name="targets", level="fail", detail=exc.message, fix=exc.fix)]
    checks = []
    for place in open_places(config, engine).values():
        where = f"{place.engine} ({', '.join(place.targets)})"
        if place.host is None:
            problem = place.problem
            checks.append(
                Diagnosis(
                    name="backend",
                    level="warn",
                    detail=f"{where}: unreachable: {problem.message if problem else 'no answer'}",
                    fix=(problem.fix if problem else None)
                    or "start it, or fix its address in targets.toml; its targets are reported as unavailable",
                )
            )
            continue
        checks.append(
            Diagnosis(
                name="backend",
                level="ok",
                detail=f"{where}: {place.host.arch}, {place.host.cpu_model or 'CPU model unknown'}"
                + (", NVIDIA runtime" if place.host.gpu_runtime else ""),
            )
        )
    return checks


def _bootstrap() -> Diagnosis:
    tool = bootstrap.bootstrapper()
    if tool is None:
        return Diagnosis(
            name="bootstrap",
            level="warn",
            detail="neither mmdebstrap nor debootstrap is installed, so base images can only come from a registry",
            fix="run `farm doctor --fix` as root",
        )
    missing = bootstrap.missing_packages()
    if tool == "mmdebstrap" and missing:
        return Diagnosis(
            name="bootstrap",
            level="warn",
            detail=f"mmdebstrap is installed but not {', '.join(missing)}, so foreign-architecture bases "
            "cannot be bootstrapped",
            fix="run `farm doctor --fix` as root",
        )
    return Diagnosis(name="bootstrap", level="ok", detail=f"{tool} builds base images from Debian packages")


def _estimates(cache_dir: Path) -> Diagnosis:
    found = counting.find(cache_dir)
    if found is None:
        return Diagnosis(
            name="estimates",
            level="warn",
            detail="the counting QEMU is not built, so emulated targets get no speed estimate",
            fix="run `farm doctor --fix --estimates` as root (builds QEMU from Debian's source, a few minutes)",
        )
    return Diagnosis(
        name="estimates",
        level="ok",
        detail=f"counting QEMU {found.qemu_version} at {found.bundle} (built in {found.build_seconds:.0f} s)",
    )


def _artifact_cache(root: Path) -> Diagnosis:
    """How much the int8 artifacts of earlier runs take, and whether this run's can be kept."""
    try:
        entries, size = artifact_entries(root), disk_size(root) if root.is_dir() else 0
        nearest = _existing_parent(root)
        writable = nearest.is_dir() and os.access(nearest, os.W_OK | os.X_OK)
    except OSError as exc:
        return Diagnosis(name="artifacts", level="warn", detail=f"cannot read the artifact cache {root} ({exc})")
    detail = f"{len(entries)} cached prepare stage(s), {size / 2**20:.1f} MiB in {root}"
    if not writable:
        return Diagnosis(
            name="artifacts",
            level="warn",
            detail=detail + ": not writable, so every run quantizes anew",
            fix="make it writable, or set FARM_ARTIFACT_CACHE_DIR to a folder that is",
        )
    return Diagnosis(name="artifacts", level="ok", detail=detail + " (`farm clean --artifacts` empties it)")


def _existing_parent(path: Path) -> Path:
    """``path``, or the nearest of its parents that exists (where the cache's folder would be made)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _disk(root: Path) -> Diagnosis:
    try:
        free = shutil.disk_usage(root if root.exists() else Path("/")).free
    except OSError:
        return Diagnosis(name="disk", level="warn", detail=f"cannot read free space of {root}")
    text = f"{free / 2**30:.1f} GiB free for {root}"
    if free < MIN_FREE_BYTES:
        return Diagnosis(
            name="disk",
            level="warn",
            detail=text + "; every target image takes about 0.5 GiB",
            fix="free space, e.g. `docker image prune`",
        )
    return Diagnosis(name="disk", level="ok", detail=text)


def _qemu(host: HostInfo) -> list[Diagnosis]:
    checks = []
    for arch in sorted({host.arch, *FOREIGN.get(host.arch, ())}):
        qemu = host.qemu.get(arch)
        name = f"qemu-{arch}"
        if qemu is None:
            checks.append(
                Diagnosis(
                    name=name,
                    level="fail",
                    detail="not installed",
                    fix="run `farm doctor --fix` as root (qemu-user-static from bookworm-backports)",
                )
            )
        elif not qemu.recent:
            checks.append(
                Diagnosis(
                    name=name,
                    level="warn",
                    detail=f"QEMU {qemu.version_text} at {qemu.path}: below {QEMU_MIN_VERSION[0]}, "
                    "which crashes onnxruntime in containers",
                    fix="run `farm doctor --fix` as root to install QEMU 10 from bookworm-backports",
                )
            )
        else:
            checks.append(Diagnosis(name=name, level="ok", detail=f"QEMU {qemu.version_text} at {qemu.path}"))
    return checks


def _binfmt(host: HostInfo) -> list[Diagnosis]:
    if not host.binfmt_mounted:
        return [
            Diagnosis(
                name="binfmt",
                level="fail",
                detail=f"binfmt_misc is not mounted at {BINFMT_DIR}",
                fix="run `farm doctor --fix` as root",
            )
        ]
    checks = []
    for arch in FOREIGN.get(host.arch, ()):
        entry = host.binfmt.get(f"qemu-{arch}")
        name = f"binfmt-{arch}"
        if entry is None or not entry.enabled:
            checks.append(
                Diagnosis(
                    name=name, level="fail", detail="no enabled qemu handler", fix="run `farm doctor --fix` as root"
                )
            )
        elif not entry.works_in_containers:
            checks.append(
                Diagnosis(
                    name=name,
                    level="fail",
                    detail=f"{entry.interpreter} registered without the F flag, so containers cannot find it",
                    fix="run `farm doctor --fix` as root to register it again",
                )
            )
        else:
            checks.append(Diagnosis(name=name, level="ok", detail=f"{entry.interpreter} (flags {entry.flags})"))
    return checks


def _cpu(host: HostInfo) -> Diagnosis:
    interesting = sorted(f for f in host.cpu_flags if f.startswith(("avx", "amx", "asimd", "sve", "fma")))
    detail = f"{host.arch}: " + (" ".join(interesting) or "no SIMD flags seen")
    if host.arch != "x86_64":
        return Diagnosis(name="cpu", level="ok", detail=detail)
    if masking.CPUID_FAULT not in host.cpu_flags:
        detail += (
            "; no cpuid_fault, so x86 tiers narrower than this CPU run under QEMU (AVX2) or are unavailable "
            "(AVX-512), not masked at native speed"
        )
        return Diagnosis(name="cpu", level="ok", detail=detail)
    detail += "; cpuid_fault: x86 tiers narrower than this CPU run masked at native speed"
    if masking.compiler() is None:
        return Diagnosis(
            name="cpu",
            level="warn",
            detail=detail + ", but no C compiler builds the mask library",
            fix="run `farm doctor --fix` as root, or `apt-get install gcc`",
        )
    return Diagnosis(name="cpu", level="ok", detail=detail)


# --- fixing -----------------------------------------------------------------------------------------------------


def fix(*, estimates: bool = False, env: dict[str, str] | None = None) -> list[str]:
    """Install and register what is missing; with ``estimates``, build the counting QEMU too. Returns one line per
    change made."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("`farm doctor --fix` changes system packages and binfmt", fix="run it as root")
    changes: list[str] = []
    host = probe_host()
    wanted = {host.arch, *FOREIGN.get(host.arch, ())}
    need_qemu = any(host.qemu.get(a) is None or not host.qemu[a].recent for a in wanted)
    need_bootstrap = bool(bootstrap.missing_packages())
    # The CPUID mask library is compiled on the host where x86 tiers can be masked (and by its own tests).
    need_compiler = host.arch == "x86_64" and masking.compiler() is None
    if need_qemu or need_bootstrap or need_compiler:
        changes.extend(_apt_install(need_qemu=need_qemu, need_bootstrap=need_bootstrap, need_compiler=need_compiler))
    changes.extend(_register_binfmt(FOREIGN.get(host.arch, ())))
    if estimates:
        cache_dir = cache_dir_of(os.environ if env is None else env)
        if counting.find(cache_dir) is None:
            built = counting.ensure(cache_dir)
            changes.append(
                f"built the counting QEMU {built.qemu_version} at {built.bundle} in {built.build_seconds:.0f} s"
            )
    return changes


def _apt_install(*, need_qemu: bool, need_bootstrap: bool, need_compiler: bool = False) -> list[str]:
    changes = []
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if need_qemu and not _has_backports():
        BACKPORTS_LIST.write_text("deb http://deb.debian.org/debian bookworm-backports main\n")
        changes.append(f"added the bookworm-backports suite to apt in {BACKPORTS_LIST}")
    _sh(["apt-get", "update", "-qq"], env)
    if need_bootstrap:
        missing = bootstrap.missing_packages()
        _sh(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env)
        changes.append(f"installed {', '.join(missing)} from Debian")
    if need_qemu:
        _sh(
            [
                "apt-get",
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "-t",
                "bookworm-backports",
                "qemu-user-static",
            ],
            env,
        )
        changes.append("installed qemu-user-static from bookworm-backports")
    if need_compiler:
        _sh(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "gcc", "libc6-dev"], env)
        changes.append("installed gcc and libc6-dev from Debian (to build farm's CPUID mask library)")
    return changes


def _has_backports() -> bool:
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    for path in sources:
        try:
            if "bookworm-backports" in path.read_text():
                return True
        except OSError:
            continue
    return False


def _register_binfmt(arches: tuple[str, ...]) -> list[str]:
    changes = []
    if not (BINFMT_DIR / "register").exists():
        _sh(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], dict(os.environ))
        changes.append(f"mounted binfmt_misc at {BINFMT_DIR}")
    for arch in arches:
        conf = Path(f"/usr/lib/binfmt.d/qemu-{arch}.conf")
        if not conf.is_file():
            raise EnvironmentProblem(
                f"registering QEMU for {arch} failed because {conf} is missing",
                fix="install qemu-user-static from bookworm-backports",
            )
        line = next(ln for ln in conf.read_text().splitlines() if ln.startswith(":"))
        entry = BINFMT_DIR / f"qemu-{arch}"
        if entry.exists():
            current = entry.read_text()
            interpreter = line.split(":")[6]
            if "enabled" in current.splitlines() and "F" in _flags(current) and interpreter in current:
                continue
            # An old or F-less entry must go before the kernel accepts a new one under the same name.
            entry.write_text("-1")
            changes.append(f"removed the old binfmt handler qemu-{arch}")
        (BINFMT_DIR / "register").write_text(line)
        changes.append(f"registered binfmt handler qemu-{arch} from {conf} (flags {line.rsplit(':', 1)[1]})")
    return changes


def _flags(entry_text: str) -> str:
    for ln in entry_text.splitlines():
        if ln.startswith("flags:"):
            return ln.split(":", 1)[1].strip()
    return ""


def _sh(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EnvironmentProblem(f"`{' '.join(command)}` failed (exit {result.returncode}): {last[0]}")
