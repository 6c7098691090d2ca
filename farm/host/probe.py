"""What this host can run: CPU flags, QEMU, binfmt handlers, GPU runtime, and from those each target's mode.

The probe only reads; ``farm doctor --fix`` (farm/controller/doctor.py) changes things. Reading is split from
deciding so that ``target_mode`` is a pure function that unit tests can feed any host.
"""

from __future__ import annotations

import os
import platform as _platform
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from farm.host.counting import CountingQemu
from farm.host.masking import CPUID_FAULT
from farm.targets.config import Target
from farm.targets.cpuflags import cleared_features, mask_rules, maskable, unseen

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# Test-only: target names (comma-separated) to run under QEMU even where this CPU could run them natively or masked,
# so that what only emulated targets do (the instruction-count estimate) runs on every CPU, and scripts/bench-estimate
# can set an estimate beside a timing of the same tier.
FORCE_EMULATED_ENV = "FARM_FORCE_EMULATED"
QEMU_MIN_VERSION = (8, 0)
# Where Debian's qemu-user-static puts its static binaries (older releases add "-static").
_QEMU_NAMES = {"x86_64": ("qemu-x86_64-static", "qemu-x86_64"), "aarch64": ("qemu-aarch64-static", "qemu-aarch64")}

Mode = Literal["native", "masked", "emulated", "unavailable"]


@dataclass(frozen=True, kw_only=True)
class Qemu:
    path: str
    version: tuple[int, ...]

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def recent(self) -> bool:
        return self.version >= QEMU_MIN_VERSION


@dataclass(frozen=True, kw_only=True)
class Binfmt:
    name: str
    enabled: bool
    interpreter: str
    flags: str

    @property
    def works_in_containers(self) -> bool:
        # "F" makes the kernel open the interpreter at registration, so it is found inside any container.
        return self.enabled and "F" in self.flags


@dataclass(frozen=True, kw_only=True)
class HostInfo:
    arch: str
    cpu_flags: frozenset[str]
    qemu: Mapping[str, Qemu] = field(default_factory=dict)
    binfmt: Mapping[str, Binfmt] = field(default_factory=dict)
    binfmt_mounted: bool = False
    gpu_runtime: bool = False
    cpu_model: str | None = None
    # Where this machine is, as farm reaches it: "local", or a remote engine's address (farm/backend).
    where: str = "local"
    # Targets to emulate although they could run natively or masked (FORCE_EMULATED_ENV; tests only).
    force_emulated: frozenset[str] = frozenset()


@dataclass(frozen=True, kw_only=True)
class Placement:
    """How a target runs here. ``qemu`` is the static QEMU that runs an x86 tier as the container's entrypoint;
    ``mask`` the CPUID rules of a masked tier and ``unseen`` the features (numpy's names) its job must not see."""

    mode: Mode
    reason: str | None = None
    qemu: Qemu | None = None
    cpu_model: str | None = None
    mask: str | None = None
    unseen: tuple[str, ...] = ()
    # An emulated placement that runs under farm's counting QEMU, so its variants get estimated latencies
    # (farm.job.estimate); None: QEMU as installed, accuracy only.
    counting: CountingQemu | None = None

    @property
    def runnable(self) -> bool:
        return self.mode != "unavailable"

    @property
    def on_this_cpu(self) -> bool:
        """Runs on this host's own CPU (natively, or masked to a tier): at its speed, not QEMU's."""
        return self.mode in ("native", "masked")


def probe_host(*, gpu_runtime: bool = False) -> HostInfo:
    """Read this machine. The engine's view of GPUs comes from the engine module and is passed in."""
    return HostInfo(
        arch=_platform.machine(),
        cpu_flags=read_cpu_flags(),
        qemu={arch: q for arch in _QEMU_NAMES if (q := find_qemu(arch)) is not None},
        binfmt=read_binfmt(),
        binfmt_mounted=(BINFMT_DIR / "register").exists(),
        gpu_runtime=gpu_runtime,
        cpu_model=read_cpu_model(),
        force_emulated=frozenset(n for n in os.environ.get(FORCE_EMULATED_ENV, "").split(",") if n.strip()),
    )


def read_cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    try:
        return cpu_model_in(cpuinfo.read_text())
    except OSError:
        return None


def cpu_model_in(text: str) -> str | None:
    """The CPU's name as the kernel gives it ("model name" on x86; arm64 kernels often give none)."""
    for line in text.splitlines():
        if line.startswith(("model name", "Model")) and ":" in line:
            return line.split(":", 1)[1].strip() or None
    return None


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        return cpu_flags_in(cpuinfo.read_text())
    except OSError:
        return frozenset()


def cpu_flags_in(text: str) -> frozenset[str]:
    """The flags of /proc/cpuinfo's text."""
    for line in text.splitlines():
        # x86 says "flags", arm64 says "Features".
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def find_qemu(arch: str) -> Qemu | None:
    for name in _QEMU_NAMES.get(arch, ()):
        path = shutil.which(name)
        if path:
            return Qemu(path=path, version=qemu_version(path))
    return None


def qemu_version(path: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    match = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(g) for g in match.groups() if g is not None) if match else ()


def read_binfmt(directory: Path = BINFMT_DIR) -> dict[str, Binfmt]:
    entries: dict[str, Binfmt] = {}
    if not directory.is_dir():
        return entries
    for path in directory.iterdir():
        if path.name in ("register", "status"):
            continue
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        fields = dict(line.split(" ", 1) for line in lines if " " in line)
        entries[path.name] = Binfmt(
            name=path.name,
            enabled="enabled" in lines,
            interpreter=fields.get("interpreter", ""),
            flags=fields.get("flags:", ""),
        )
    return entries


def binfmt_for(host: HostInfo, arch: str) -> Binfmt | None:
    entry = host.binfmt.get(f"qemu-{arch}")
    return entry if entry and entry.enabled else None


def place(target: Target, host: HostInfo) -> Placement:
    """Decide native, emulated or unavailable for one target, with the reason a user can act on."""
    if target.image == "gpu" and not host.gpu_runtime:
        return Placement(
            mode="unavailable",
            reason="needs an NVIDIA GPU and container runtime; the engine lists no 'nvidia' runtime "
            "(install the NVIDIA Container Toolkit on a GPU host)",
        )
    if target.arch != host.arch:
        return _place_foreign(target, host)
    missing = [f for f in target.cpu_features if f not in host.cpu_flags]
    surplus = [f for f in target.cpu_excludes if f in host.cpu_flags]
    if target.name in host.force_emulated:
        return _emulate(target, host, f"{FORCE_EMULATED_ENV} names {target.name}")
    if not missing and not surplus:
        return Placement(mode="native")
    if not missing and target.arch == "x86_64" and CPUID_FAULT in host.cpu_flags and maskable(surplus):
        cleared = cleared_features(target.cpu_excludes)
        return Placement(
            mode="masked",
            mask=mask_rules(cleared),
            unseen=unseen(cleared),
            reason=f"this CPU has {', '.join(surplus)}: runs natively with CPUID masked (cpuid_fault), so MLAS takes "
            "this tier's kernels; timings are this CPU running them, not a CPU of the tier",
        )
    avx512 = [f for f in missing if f.startswith("avx512")]
    if avx512:
        return Placement(
            mode="unavailable",
            reason=f"needs {', '.join(avx512)}; this CPU lacks it and QEMU cannot emulate AVX-512",
        )
    why = f"this CPU has {', '.join(surplus)}" if surplus else f"this CPU lacks {', '.join(missing)}"
    if surplus and not missing:
        why += f" and no {CPUID_FAULT} to mask CPUID"
    return _emulate(target, host, why)


def _emulate(target: Target, host: HostInfo, why: str) -> Placement:
    """An x86 tier this CPU cannot run as itself, under qemu-x86_64 -cpu <emulate_cpu>, or why it cannot."""
    if not target.emulate_cpu:
        qemu_why = (
            "QEMU cannot emulate AVX-512"
            if any(f.startswith("avx512") for f in target.cpu_features)
            else "the target names no emulate_cpu to run under QEMU"
        )
        return Placement(mode="unavailable", reason=f"{why}, and {qemu_why}")
    qemu = host.qemu.get(target.arch)
    if qemu is None:
        return Placement(
            mode="unavailable",
            reason=f"{why}, so it must run under qemu-{target.arch} -cpu {target.emulate_cpu}, which is not "
            "installed (run `farm doctor --fix` as root)",
        )
    return Placement(
        mode="emulated",
        qemu=qemu,
        cpu_model=target.emulate_cpu,
        reason=f"{why}: runs under qemu-{target.arch} -cpu {target.emulate_cpu} so MLAS takes this tier's kernels; "
        "accuracy is real, and it is not timed",
    )


def _place_foreign(target: Target, host: HostInfo) -> Placement:
    avx512 = [f for f in target.cpu_features if f.startswith("avx512")]
    if avx512:
        # Without this an x86 tier that needs AVX-512 would run under QEMU's AVX2 and be reported as itself.
        return Placement(
            mode="unavailable",
            reason=f"needs {', '.join(avx512)}; this is an {host.arch} host and QEMU cannot emulate AVX-512",
        )
    qemu = host.qemu.get(target.arch)
    if qemu is not None and qemu.version and not qemu.recent:
        return Placement(
            mode="unavailable",
            reason=f"QEMU {qemu.version_text} crashes onnxruntime in containers; needs QEMU 8 or newer "
            "(run `farm doctor --fix` as root to install it from bookworm-backports)",
        )
    entry = binfmt_for(host, target.arch)
    if entry is None or not entry.works_in_containers:
        what = "is registered without the F flag" if entry else "is not registered"
        return Placement(
            mode="unavailable",
            reason=f"needs QEMU for {target.arch} through binfmt, which {what} (run `farm doctor --fix` as root)",
        )
    cpu = qemu_cpu(target)
    if cpu is None:
        return Placement(
            mode="unavailable",
            reason=f"runs {target.arch} under QEMU and names no emulate_cpu, and farm knows no safe CPU model for "
            f"{target.arch}: QEMU's default 'max' CPU gave wrong int8 results (set emulate_cpu in targets.toml)",
        )
    return Placement(
        mode="emulated",
        cpu_model=cpu,
        reason=f"runs {target.arch} through binfmt QEMU"
        + (f" {qemu.version_text}" if qemu else "")
        + f" (-cpu {cpu})"
        + "; accuracy only: timings under QEMU say nothing, so it is not timed",
    )


# A foreign target that names no emulate_cpu runs on these, never on QEMU's default "max": on arm64, max's SVE and
# SME made a U8U8 MatMul wrong (FINDINGS). x86 targets that need AVX-512 are refused before this is asked.
SAFE_QEMU_CPU = {"aarch64": "neoverse-n1", "x86_64": "Haswell"}


def qemu_cpu(target: Target) -> str | None:
    """The CPU model QEMU runs a foreign target as: its emulate_cpu, else a safe model of its architecture."""
    return target.emulate_cpu or SAFE_QEMU_CPU.get(target.arch)
