"""Building QEMU's linux-user emulators with TCG plugins, and farm's plugin against QEMU's plugin header.

Only what the counting QEMU needs is built: ``--without-default-features`` turns off every optional library, then
plugins and capstone (QEMU disassembles aarch64 only through capstone, and the plugin classifies instructions from
their disassembly) are turned on; no system emulators, tools, docs or debug info. On a 2-core host that takes under
two minutes of compiling.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from farm.errors import EnvironmentProblem
from farm.host.files import LineSink

# The Debian packages a build needs (found by building on a bare bookworm host with qemu-user-static installed):
# meson ≥ 1.5 comes from bookworm-backports, as QEMU 10 refuses older; the rest from bookworm.
BUILD_PACKAGES = (
    "gcc",
    "libc6-dev",
    "ninja-build",
    "pkgconf",
    "libglib2.0-dev",
    "libcapstone-dev",
    "zlib1g-dev",
    "python3-venv",
    "flex",
    "bison",
    "xz-utils",
)
MESON_MIN = (1, 5)
CONFIGURE_FLAGS = (
    "--python=/usr/bin/python3",  # Debian's python3, whose dist-packages hold Debian's meson
    "--without-default-features",
    "--enable-plugins",
    "--enable-capstone",
    "--disable-system",
    "--disable-tools",
    "--disable-docs",
    "--disable-guest-agent",
    "--disable-werror",
    "--disable-debug-info",
    "--disable-install-blobs",  # the +ds tarball has no firmware blobs, and linux-user needs none
)
PLUGIN_FLAGS = ("-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror", "-shared", "-fPIC")


# QEMU refuses to run an x86_64 guest in a reserved address space (-R), for the legacy vsyscall page above it; farm
# reserves one so that the guest's layout repeats (farm.host.counting.CountingQemu.reserve), and today's glibc never
# calls the vsyscall page, so the build drops that refusal: the page is then simply not mapped.
VSYSCALL_REFUSAL = re.compile(r'error_report\("Cannot allocate vsyscall page"\);\s*exit\(EXIT_FAILURE\);')
VSYSCALL_SKIPPED = "return true; /* farm: a reserved guest address space goes without the vsyscall page */"


@dataclass(frozen=True, kw_only=True)
class BuiltQemu:
    build_dir: Path
    include_dir: Path
    # The guest architectures whose emulator runs in a reserved address space (-R).
    reserves: tuple[str, ...]


def missing_packages() -> list[str]:
    missing = [p for p in BUILD_PACKAGES if not _installed(p)]
    version = meson_version()
    if version is None or version < MESON_MIN:
        missing.append("meson")
    return missing


def _installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", package], capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.strip().endswith(" installed")


def meson_version() -> tuple[int, int] | None:
    if shutil.which("meson") is None:
        return None
    result = subprocess.run(["meson", "--version"], capture_output=True, text=True)
    match = re.match(r"(\d+)\.(\d+)", result.stdout.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def ensure_build_deps(on_line: LineSink) -> None:
    """Install the build's Debian packages when some are missing (as root), or say how."""
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            f"building the counting QEMU needs the Debian packages {', '.join(missing)}, and only root installs them",
            fix="run `farm doctor --fix --estimates` as root",
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
    plain = [p for p in missing if p != "meson"]
    on_line(f"installing {', '.join(missing)} to build the counting QEMU")
    if plain:
        _step([*install, *plain], doing=f"installing {', '.join(plain)}", fix="run `apt-get update` as root", env=env)
    if "meson" in missing:
        _step(
            [*install, "-t", "bookworm-backports", "meson"],
            doing="installing meson from bookworm-backports (QEMU 10 needs meson 1.5 or newer)",
            fix="run `farm doctor --fix` as root first: it adds bookworm-backports to apt",
            env=env,
        )


def build_emulators(tarball: Path, work: Path, names: Sequence[str], log: Path, on_line: LineSink) -> BuiltQemu:
    """Unpack QEMU's source into ``work`` and build the named linux-user emulators (qemu-x86_64, ...), with the
    tools' output in ``log``, which outlives ``work`` for a failed build."""
    on_line(f"unpacking {tarball.name}")
    # tar, not tarfile: Python's xz reading is several times slower, and its extraction filters are newer than
    # some 3.11 releases farm supports
    result = subprocess.run(["tar", "-xJf", str(tarball), "-C", str(work)], capture_output=True, text=True)
    if result.returncode != 0:
        raise EnvironmentProblem(
            f"unpacking {tarball.name} failed: {' '.join(result.stderr.split())[:300]}",
            fix="check that tar and xz-utils are installed and the cache folder's disk has 1 GiB free",
        )
    roots = [p for p in work.iterdir() if p.is_dir() and (p / "configure").is_file()]
    if not roots:
        raise EnvironmentProblem(f"{tarball.name} holds no QEMU source tree", fix="report this to farm's maintainers")
    source = roots[0]
    _drop_test_only_requirements(source)
    reserves = ("aarch64", "x86_64") if reserve_without_vsyscall(source) else ("aarch64",)
    build = source / "build"
    build.mkdir()
    targets = ",".join(f"{n.removeprefix('qemu-')}-linux-user" for n in names)
    log.write_text("")
    on_line("configuring QEMU")
    _logged([str(source / "configure"), f"--target-list={targets}", *CONFIGURE_FLAGS], build, log, "configuring QEMU")
    on_line(f"compiling {', '.join(names)} (a few minutes)")
    jobs = str(max(1, os.cpu_count() or 1))
    _logged(["ninja", "-j", jobs, *names], build, log, "compiling QEMU")
    return BuiltQemu(build_dir=build, include_dir=source / "include" / "qemu", reserves=reserves)


def reserve_without_vsyscall(source: Path) -> bool:
    """Let qemu-x86_64 run in a reserved address space without the vsyscall page (VSYSCALL_REFUSAL); False where
    this QEMU's source no longer has the refusal as farm knows it, and x86_64 guests then run unreserved."""
    patched = False
    for path in sorted((source / "linux-user").rglob("*.c")):
        text = path.read_text(errors="surrogateescape")
        changed, count = VSYSCALL_REFUSAL.subn(VSYSCALL_SKIPPED, text)
        if count:
            path.write_text(changed, errors="surrogateescape")
            patched = True
    return patched


def _drop_test_only_requirements(source: Path) -> None:
    """QEMU's configure wants pycotap (test output) from its bundled wheels, which Debian's +ds tarball removes and
    Debian does not package; nothing farm builds uses it, so the requirement goes (as Debian's own build does)."""
    deps = source / "pythondeps.toml"
    if deps.is_file():
        deps.write_text(
            "".join(ln for ln in deps.read_text().splitlines(keepends=True) if not ln.startswith("pycotap"))
        )


def compile_plugin(source: Path, include_dir: Path, output: Path) -> None:
    glib = subprocess.run(["pkg-config", "--cflags", "glib-2.0"], capture_output=True, text=True)
    if glib.returncode != 0:
        raise EnvironmentProblem(
            "compiling farm's QEMU plugin needs glib's headers (pkg-config glib-2.0 failed)",
            fix="run `farm doctor --fix --estimates` as root",
        )
    command = ["gcc", *PLUGIN_FLAGS, *glib.stdout.split(), f"-I{include_dir}", "-o", str(output), str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise EnvironmentProblem(
            f"compiling {source.name} failed: {' '.join(result.stderr.split())[-300:]}",
            fix="check that gcc and libglib2.0-dev are installed (`farm doctor --fix --estimates`)",
        )


def _logged(command: list[str], cwd: Path, log: Path, doing: str) -> None:
    with log.open("a") as stream:
        stream.write(f"$ {' '.join(command)}\n")
        stream.flush()
        result = subprocess.run(command, cwd=cwd, stdout=stream, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        cause = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "no output")
        raise EnvironmentProblem(
            f"{doing} failed (exit {result.returncode}): {' '.join(cause.split())[:300]}",
            fix=f"check that the build packages are installed (`farm doctor --fix --estimates` as root); "
            f"the build's log was {log}",
        )


def _step(command: list[str], *, doing: str, fix: str, env: dict[str, str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EnvironmentProblem(f"{doing} failed (exit {result.returncode}): {last[0]}", fix=fix)
