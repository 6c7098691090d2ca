"""x86 ISA tiers by CPUID masking: which bits a tier clears, and farm's preload library that clears them.

On a host whose CPU has the ``cpuid_fault`` flag and more ISA than a tier allows, the tier runs natively with CPUID
masked (farm/host/native/cpuid_mask.c, preloaded into the job's Python): MLAS and numpy then pick the tier's kernels and
run them at this CPU's speed. The features a tier must not see are its ``cpu_excludes`` and every feature that
depends on one of them (no AVX-512 BW without AVX-512 F), each as the CPUID bit software reads.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from farm.errors import EnvironmentProblem
from farm.host.files import exclusive, lock_path

SOURCE = Path(__file__).parent / "native" / "cpuid_mask.c"
LIBRARY_NAME = "libfarmcpuid.so"
MASK_ENV = "FARM_CPUID_MASK"
CPUID_FAULT = "cpuid_fault"


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def ensure_library(cache_dir: Path) -> Path:
    """The preload library, compiled from farm's source once per source and compiler, on this host.

    It is built here rather than in the image: images copy their files and run nothing while they build, and the
    library is mounted read-only only into the containers of masked tiers. The images are Debian bookworm, as farm's
    supported hosts are, so the host's glibc is theirs.
    """
    cc = compiler()
    if cc is None:
        raise EnvironmentProblem(
            "masking an x86 tier's CPUID needs farm's preload library, which is built with a C compiler, and none "
            "is installed",
            fix="run `farm doctor --fix` as root, or `apt-get install gcc`",
        )
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + cc.encode()).hexdigest()[:16]
    library = cache_dir / "cpuid" / key / LIBRARY_NAME
    if library.is_file():
        return library
    with exclusive(lock_path(cache_dir, "cpuid", key), waiting="compiling the CPUID preload library"):
        if not library.is_file():  # another farm run may have compiled it while this one waited
            _compile(cc, library)
    return library


def _compile(cc: str, library: Path) -> None:
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=library.parent) as scratch:
        built = Path(scratch) / LIBRARY_NAME
        result = subprocess.run(
            [cc, "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", str(built), str(SOURCE)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise EnvironmentProblem(
                f"building farm's CPUID preload library with {cc} failed: {result.stderr.strip()[-300:]}",
                fix="check that gcc and libc6-dev are installed (`farm doctor --fix`)",
            )
        built.chmod(0o755)
        os.replace(built, library)
