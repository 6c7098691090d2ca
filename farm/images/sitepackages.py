"""A target's site-packages, made on the host from its wheelhouse: unzipped and byte-compiled, cached per wheel set.

No installer runs inside the image: for a foreign platform every command of an image build runs under QEMU, where pip
and byte-compiling took minutes. A wheel is a zip whose contents go into site-packages as they are (its
``<name>.data/purelib`` and ``platlib`` folders too), and Python 3.11 bytecode does not depend on the machine, so
the host makes both for any platform. farm's job never runs the wheels' console scripts, so they are left out.
"""

from __future__ import annotations

import compileall
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from farm.errors import BuildFailed
from farm.host.files import LineSink, exclusive, lock_path
from farm.images.wheelhouse import PYTHON_VERSION, Wheelhouse

# Where the image keeps them; bytecode records this path for tracebacks.
IMAGE_SITE = "/opt/farm/site-packages"
# Bump when the way a site-packages is made changes, so cached ones are made again.
RECIPE = "1"
DONE = ".farm-complete"
# The packages' own test suites: nothing imports them, and compiling them is most of the time.
_TESTS = re.compile(r"(^|/)tests?/")


class _TestSuites:
    """compileall's ``rx``: it asks ``search(path)`` of every file's full path, and only the part below the folder
    being compiled may decide (a cache under some /tests/ folder must still be compiled)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def search(self, path: str) -> re.Match[str] | None:
        return _TESTS.search(Path(path).relative_to(self.root).as_posix())


# Not needed at run time: pip itself is not run in the image.
_LEFT_OUT = ("pip-",)


def ensure_site_packages(
    cache_dir: Path, wheelhouse: Wheelhouse, on_line: LineSink, on_wait: LineSink | None = None
) -> Path:
    """The folder to copy into the image as its site-packages, made once per wheel set."""
    folder = cache_dir / "site-packages" / f"{wheelhouse.platform.replace('/', '-')}-{wheelhouse.digest[:16]}-{RECIPE}"
    if (folder / DONE).is_file():
        return folder
    with exclusive(
        lock_path(cache_dir, "site-packages", folder.name),
        on_wait=on_wait or on_line,
        waiting=f"unpacking the wheels for {wheelhouse.platform}",
    ):
        if not (folder / DONE).is_file():  # another farm run may have made it while this one waited
            _unpack_all(wheelhouse, folder, on_line)
    return folder


def _unpack_all(wheelhouse: Wheelhouse, folder: Path, on_line: LineSink) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Made beside and renamed, so an interrupted run never leaves a half-made folder that looks complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for wheel in wheelhouse.wheels:
            if wheel.file.startswith(_LEFT_OUT):
                continue
            on_line(f"unpacking {wheel.file}")
            unpack_wheel(wheelhouse.directory / wheel.file, staging)
        if sys.version_info[:2] == tuple(int(p) for p in PYTHON_VERSION.split(".")):
            on_line("byte-compiling")
            # As pip does, a file that does not compile stays source.
            compileall.compile_dir(str(staging), quiet=2, workers=0, rx=_TestSuites(staging), ddir=IMAGE_SITE)
        else:
            on_line(
                f"not byte-compiled: this Python is {sys.version_info.major}.{sys.version_info.minor}, the "
                f"image's is {PYTHON_VERSION}, so imports in the image compile from source each run"
            )
        (staging / DONE).write_text("")
        if folder.exists():  # left incomplete by hand (its DONE mark removed): made again
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def unpack_wheel(wheel: Path, site: Path) -> None:
    """Install one wheel into ``site`` the way an installer lays it out, without running anything."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                # A wheel's paths are relative; refuse one that would land outside site-packages.
                target = (site / member.filename).resolve()
                if not target.is_relative_to(site.resolve()):
                    raise BuildFailed(f"wheel {wheel.name} holds a path outside site-packages: {member.filename}")
            archive.extractall(site)
            for member in archive.infolist():
                # zipfile drops permissions; a wheel's bundled executable needs its x bits back.
                mode = member.external_attr >> 16
                if mode & 0o111 and not member.is_dir():
                    (site / member.filename).chmod(0o755)
    except zipfile.BadZipFile as exc:
        raise BuildFailed(
            f"wheel {wheel.name} is not a valid zip ({exc})",
            fix="remove farm's wheelhouse cache folder and build again",
        ) from exc
    for data in site.glob("*.data"):
        for kind in ("purelib", "platlib"):
            for item in sorted((data / kind).glob("*")) if (data / kind).is_dir() else []:
                destination = site / item.name
                if destination.is_dir() and item.is_dir():
                    shutil.copytree(item, destination, dirs_exist_ok=True)
                else:
                    shutil.move(str(item), destination)
        shutil.rmtree(data)
