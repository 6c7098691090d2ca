"""The counting QEMU: Debian's QEMU built with TCG plugins, plus farm's instruction-count plugin, as one bundle.

Emulated wall time inverts the ranking of variants (TCG emulates floating point far more slowly than integer SIMD),
so farm estimates speed on emulated targets from executed guest instructions by class instead. Debian's
qemu-user-static has no plugin support, and a plugin-capable QEMU is a dynamic executable, which cannot be a binfmt
handler inside a container (its loader and libraries are not there). So farm builds the linux-user emulators once
per host from Debian's source of the same QEMU, and keeps them in farm's cache as a self-contained bundle:

    <cache>/qemu-count/<key>/
        qemu-x86_64, qemu-aarch64, libinsncount.so, <the host's dynamic loader>, lib/<every library they need>,
        manifest.json (QEMU version, source hash, plugin hash, build time)

``<key>`` hashes the QEMU source (the upstream tarball's SHA-256 from Debian's signed index), farm's plugin source
(farm/host/native/insncount.c) and the build recipe. A container runs its job as
``<bundle>/<loader> --library-path <bundle>/lib <bundle>/qemu-<arch> -cpu <model> -plugin
<bundle>/libinsncount.so,out=<file> python3 ...`` with the bundle mounted read-only (farm/backend/runner.py).

Marks (farm.job.estimate.marks, one definition): the guest calls its system call with begin or end and an id; at
the end the plugin appends ``{"id": N, "counts": {...}, "total": n}`` to the counts file (insncount.c: the classes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from farm.errors import EnvironmentProblem
from farm.host import qemubuild, qemusource
from farm.host.files import LineSink, exclusive, lock_path
from farm.job.estimate.costs import CLASSES

PLUGIN_SOURCE = Path(__file__).parent / "native" / "insncount.c"
PLUGIN_NAME = "libinsncount.so"
CACHE_FOLDER = "qemu-count"
MANIFEST = "manifest.json"
# 1 TiB of guest address space (CountingQemu.reserve): far beyond what a job maps, far below the host's 128 TiB.
RESERVED_VA = "0x10000000000"
# Bump when the configure flags, the plugin's compile flags or the bundle's layout change: a new folder follows.
RECIPE = "2"
EMULATORS = {"x86_64": "qemu-x86_64", "aarch64": "qemu-aarch64"}
# Where the runner mounts the bundle in a container.
BUNDLE_IN_CONTAINER = "/farm-count"
HOST_QEMU_PACKAGE = "qemu-user-static"


@dataclass(frozen=True, kw_only=True)
class CountingQemu:
    """A built bundle. ``loader`` is the file name of the host's dynamic loader inside it."""

    bundle: Path
    qemu_version: str
    source_sha256: str
    plugin_sha256: str
    build_seconds: float
    loader: str
    # The guest architectures whose emulator was built to run in a reserved address space (reserve).
    reserves: tuple[str, ...]

    def emulator(self, arch: str) -> str:
        """The emulator's file name in the bundle for a guest architecture (x86_64 or aarch64)."""
        try:
            return EMULATORS[arch]
        except KeyError:
            raise ValueError(f"the counting QEMU has no emulator for {arch}; it has {', '.join(EMULATORS)}") from None

    def reserve(self, arch: str) -> list[str]:
        """QEMU's options that reserve the guest's address space up front, so that QEMU places every guest mapping
        itself, the same way each run. Without them guest mmaps land wherever the host's randomized layout leaves
        room, and the addresses (pointer-keyed hash tables, buffer alignment) changed an aarch64 guest's counts by up
        to 0.2% between two runs on an AMD EPYC host (an x86_64 guest's by 0.12% on an Intel Xeon). Only address
        space: nothing is committed. Docker's seccomp profile refuses the personality that would turn the host's
        randomization off instead. An x86_64 guest needs farm's build of QEMU (qemubuild.reserve_without_vsyscall)."""
        return ["-R", RESERVED_VA] if arch in self.reserves else []

    def command(self, arch: str, cpu_model: str, counts_file: str, *, root: str | None = None) -> list[str]:
        """The entrypoint that runs a guest program under the counting QEMU: paths under ``root`` (the bundle's
        place in a container; the bundle itself when None)."""
        base = root if root is not None else str(self.bundle)
        return [
            f"{base}/{self.loader}",
            "--library-path",
            f"{base}/lib",
            f"{base}/{self.emulator(arch)}",
            *self.reserve(arch),
            "-cpu",
            cpu_model,
            "-plugin",
            f"{base}/{PLUGIN_NAME},out={counts_file}",
        ]


@dataclass(frozen=True, kw_only=True)
class MarkedCounts:
    """One marked stretch of a guest program: instructions executed per class, summed over its threads."""

    id: int
    counts: dict[str, int]
    total: int


def read_counts(path: Path) -> list[MarkedCounts]:
    """The counts file's lines in order. A line the plugin wrote for an end without a begin is an error."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        data = json.loads(line)
        if "error" in data:
            raise ValueError(f"{path}:{number}: mark {data.get('id')}: {data['error']}")
        counts = {str(k): int(v) for k, v in data["counts"].items()}
        if set(counts) != set(CLASSES) or sum(counts.values()) != int(data["total"]):
            raise ValueError(f"{path}:{number}: counts {sorted(counts)} do not match farm's classes or the total")
        found.append(MarkedCounts(id=int(data["id"]), counts=counts, total=int(data["total"])))
    return found


def plugin_sha256() -> str:
    return hashlib.sha256(PLUGIN_SOURCE.read_bytes()).hexdigest()


def bundle_key(source_sha256: str, plugin_hash: str) -> str:
    return hashlib.sha256(f"{source_sha256}\n{plugin_hash}\n{RECIPE}".encode()).hexdigest()[:16]


def host_qemu_version() -> str | None:
    """The installed qemu-user-static's Debian version: farm builds the same QEMU, so counts and runs agree."""
    try:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", HOST_QEMU_PACKAGE], capture_output=True, text=True
        )
    except OSError:
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def find(cache_dir: Path) -> CountingQemu | None:
    """A complete bundle for farm's current plugin, without the network: of the host's QEMU version if there is
    one, else the newest built."""
    folder = cache_dir / CACHE_FOLDER
    if not folder.is_dir():
        return None
    current = plugin_sha256()
    usable = []
    for manifest in folder.glob(f"*/{MANIFEST}"):
        found = _load(manifest)
        if found is None or found.plugin_sha256 != current:
            continue
        if manifest.parent.name != bundle_key(found.source_sha256, found.plugin_sha256):
            continue
        usable.append((manifest.stat().st_mtime, found))
    if not usable:
        return None
    wanted = host_qemu_version()
    same = [u for u in usable if u[1].qemu_version == wanted]
    return max(same or usable, key=lambda u: u[0])[1]


def _load(manifest: Path) -> CountingQemu | None:
    try:
        data = json.loads(manifest.read_text())
        found = CountingQemu(
            bundle=manifest.parent,
            qemu_version=str(data["qemu_version"]),
            source_sha256=str(data["source_sha256"]),
            plugin_sha256=str(data["plugin_sha256"]),
            build_seconds=float(data["build_seconds"]),
            loader=str(data["loader"]),
            reserves=tuple(str(arch) for arch in data["reserves"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if data.get("recipe") != RECIPE:
        return None
    needed = [found.loader, PLUGIN_NAME, *EMULATORS.values()]
    return found if all((found.bundle / name).is_file() for name in needed) else None


def ensure(cache_dir: Path, *, on_line: LineSink | None = None, on_wait: LineSink | None = None) -> CountingQemu:
    """The counting QEMU, built here the first time (minutes): an EnvironmentProblem says why when it cannot be."""
    found = find(cache_dir)
    if found is not None:
        return found
    say = on_line or (lambda _: None)
    with exclusive(lock_path(cache_dir, CACHE_FOLDER, "build"), waiting="building the counting QEMU", on_wait=on_wait):
        found = find(cache_dir)  # another farm process may have built it while this one waited
        return found if found is not None else build(cache_dir, say)


def build(cache_dir: Path, on_line: LineSink) -> CountingQemu:
    """Fetch Debian's QEMU source, build the emulators and the plugin, and install the bundle in the cache."""
    started = time.monotonic()
    qemubuild.ensure_build_deps(on_line)
    folder = cache_dir / CACHE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=folder) as scratch:
        work = Path(scratch)
        source = qemusource.fetch(work, host_qemu_version(), on_line)
        built = qemubuild.build_emulators(source.tarball, work, list(EMULATORS.values()), folder / "build.log", on_line)
        stage = work / "bundle"
        stage.mkdir()
        plugin = stage / PLUGIN_NAME
        qemubuild.compile_plugin(PLUGIN_SOURCE, built.include_dir, plugin)
        for name in EMULATORS.values():
            shutil.copy2(built.build_dir / name, stage / name)
        loader = assemble_libraries(stage, [stage / n for n in EMULATORS.values()] + [plugin])
        plugin_hash = plugin_sha256()
        seconds = round(time.monotonic() - started, 1)
        manifest = {
            "qemu_version": source.entry.version,
            "source_sha256": source.entry.orig.sha256,
            "plugin_sha256": plugin_hash,
            "recipe": RECIPE,
            "build_seconds": seconds,
            "loader": loader,
            "reserves": list(built.reserves),
        }
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        for path in [stage, *stage.rglob("*")]:  # read-only for the container's user, whoever that is
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        target = folder / bundle_key(source.entry.orig.sha256, plugin_hash)
        if target.exists():
            shutil.rmtree(target)  # an incomplete bundle of the same key (find did not accept it)
        os.replace(stage, target)
    on_line(f"built the counting QEMU {source.entry.version} in {seconds:.0f} s at {target}")
    found = _load(target / MANIFEST)
    if found is None:
        raise EnvironmentProblem(f"the counting QEMU built at {target} is incomplete", fix="run the build again")
    return found


# Loaded by glibc with dlopen when a thread exits (unwinding), so ldd does not list it but QEMU needs it.
DLOPENED = ("libgcc_s.so.1",)


def assemble_libraries(stage: Path, binaries: list[Path]) -> str:
    """Copy the host's dynamic loader into ``stage`` and every library ``binaries`` need into ``stage/lib``;
    returns the loader's file name."""
    libraries: dict[str, Path] = {}
    loader: Path | None = None
    for binary in binaries:
        found_loader, needed = parse_ldd(_ldd(binary))
        loader = loader or found_loader
        libraries.update(needed)
    if loader is None:
        raise EnvironmentProblem(f"ldd names no dynamic loader for {binaries[0]}", fix="check that glibc is installed")
    libc = libraries.get("libc.so.6")
    for name in DLOPENED:
        beside = libc.parent / name if libc is not None else None
        if beside is not None and beside.is_file():
            libraries.setdefault(name, beside)
    lib = stage / "lib"
    lib.mkdir(exist_ok=True)
    for name, path in sorted(libraries.items()):
        shutil.copy2(path.resolve(), lib / name)
    shutil.copy2(loader.resolve(), stage / loader.name)
    return loader.name


def parse_ldd(text: str) -> tuple[Path | None, dict[str, Path]]:
    """ldd's output: the loader (the line with an absolute path and no '=>') and each library by its name."""
    loader = None
    libraries: dict[str, Path] = {}
    for line in text.splitlines():
        line = line.strip()
        if "=>" in line:
            name, _, rest = line.partition("=>")
            target = rest.split("(")[0].strip()
            if target.startswith("/"):
                libraries[name.strip()] = Path(target)
            elif "not found" in rest:
                raise EnvironmentProblem(
                    f"the library {name.strip()} the counting QEMU needs is not installed",
                    fix="run `farm doctor --fix --estimates` as root",
                )
        elif line.startswith("/"):
            loader = Path(line.split("(")[0].strip())
    return loader, libraries


def _ldd(binary: Path) -> str:
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    if result.returncode != 0:
        raise EnvironmentProblem(
            f"ldd could not read {binary}: {(result.stderr or result.stdout).strip()[:200]}",
            fix="check that libc-bin is installed",
        )
    return result.stdout
