"""Base images from Debian's packages, for hosts that cannot reach any container registry.

mmdebstrap (or debootstrap) writes a bookworm root file system; we wrap it in a docker-archive whose config names the
right architecture and ``docker load`` it. ``docker import`` would be shorter, but Docker 20.10 ignores its
``--platform``, and an arm64 root file system labelled amd64 later makes ``docker build --platform`` try a registry.

mmdebstrap only extracts the packages (``--variant=extract``): their maintainer scripts, which for a foreign
architecture run under QEMU, took about 5 of the arm64 base's 5.5 minutes, and the job needs none of what they do
(users, alternatives, byte-compiled standard library). The base has Python and the C++ runtime onnxruntime links
against, and no shell: nothing in farm's images runs one.
"""

from __future__ import annotations

import compileall
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from farm.errors import BuildFailed, EnvironmentProblem
from farm.host.files import LineSink, file_sha256
from farm.images.wheelhouse import PYTHON_VERSION

SUITE = "bookworm"
# No ca-certificates: farm's containers have no network. onnxruntime's wheels link against the system's libstdc++.
PACKAGES = ("python3", "libstdc++6", "libgcc-s1")
# Bump when the recipe changes, so cached bases are rebuilt.
RECIPE = "4"
DOCKER_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]


def base_tag(arch: str) -> str:
    recipe = json.dumps([SUITE, arch, PACKAGES, _EXCLUDES, RECIPE, mirror()])
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    return f"farm/base:{SUITE}-{DOCKER_ARCH[arch]}-{digest}"


def mirror() -> str:
    return os.environ.get("FARM_DEBIAN_MIRROR", "http://deb.debian.org/debian")


# mmdebstrap asks arch-test whether this host can run a foreign architecture's binaries, and refuses without it;
# Debian only recommends arch-test, so an install with --no-install-recommends lacks it.
PACKAGES_NEEDED = ("mmdebstrap", "arch-test")


def bootstrapper() -> str | None:
    for tool in ("mmdebstrap", "debootstrap"):
        if shutil.which(tool):
            return tool
    return None


def missing_packages() -> list[str]:
    """The Debian packages `farm doctor --fix` installs so that bases of every architecture can be bootstrapped."""
    return [name for name in PACKAGES_NEEDED if shutil.which(name) is None]


def build_rootfs(arch: str, out_tar: Path, on_line: LineSink) -> None:
    """Write a minimal bookworm with Python 3.11 for ``arch`` as a tarball. Foreign arches need binfmt QEMU."""
    tool = bootstrapper()
    if tool is None:
        raise EnvironmentProblem(
            "bootstrapping a base image failed because neither mmdebstrap nor debootstrap is installed",
            fix="run `farm doctor --fix` as root, or `apt-get install mmdebstrap`",
        )
    debian_arch = DOCKER_ARCH[arch]
    if tool == "mmdebstrap" and arch != os.uname().machine and "arch-test" in missing_packages():
        raise EnvironmentProblem(
            f"bootstrapping the {debian_arch} base failed because mmdebstrap needs arch-test for a foreign "
            "architecture and it is not installed",
            fix="run `farm doctor --fix` as root, or `apt-get install arch-test`",
        )
    if tool == "mmdebstrap":
        command = [
            "mmdebstrap",
            "--variant=extract",
            f"--include={','.join(PACKAGES)}",
            f"--architectures={debian_arch}",
            *(f"--dpkgopt=path-exclude={p}" for p in _EXCLUDES),
            SUITE,
            str(out_tar),
            mirror(),
        ]
        _stream(command, on_line)
        # The maintainer scripts that did not run would have byte-compiled the standard library; without that, every
        # container start compiles what it imports anew (its root is read-only), which under QEMU takes seconds.
        compile_stdlib(out_tar, on_line)
        return
    with tempfile.TemporaryDirectory(prefix="farm-rootfs-") as root:
        command = [
            "debootstrap",
            f"--arch={debian_arch}",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            root,
            mirror(),
        ]
        _stream(command, on_line)
        with tarfile.open(out_tar, "w") as tar:
            tar.add(root, arcname=".")


STDLIB = f"usr/lib/python{PYTHON_VERSION}/"


def compile_stdlib(rootfs_tar: Path, on_line: LineSink) -> None:
    """Add the bytecode of the root file system's Python standard library to its tarball, compiled on this host.

    Python 3.11 bytecode does not depend on the machine, and a .pyc records its source's mtime and size, which the
    tarball keeps; so this works for a foreign architecture too, with this host's Python at the same minor version.
    """
    if sys.version_info[:2] != tuple(int(p) for p in PYTHON_VERSION.split(".")):
        on_line(f"standard library not byte-compiled: this Python is not {PYTHON_VERSION}")
        return
    with tempfile.TemporaryDirectory(prefix="farm-stdlib-") as scratch:
        root = Path(scratch)
        with tarfile.open(rootfs_tar) as tar:
            sources = [
                m
                for m in tar.getmembers()
                if m.isfile()
                and m.name.removeprefix("./").startswith(STDLIB)
                and m.name.endswith(".py")
                and "/test/" not in m.name
                and "/tests/" not in m.name
            ]
            extract = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(root, members=sources, **extract)  # type: ignore[arg-type]
        on_line(f"byte-compiling {len(sources)} standard library modules")
        compileall.compile_dir(str(root / STDLIB), quiet=2, workers=0, ddir="/" + STDLIB.rstrip("/"))
        with tarfile.open(rootfs_tar, "a") as tar:
            for path in sorted(root.rglob("__pycache__")):
                tar.add(path, arcname="./" + path.relative_to(root).as_posix(), recursive=False, filter=_root_owned)
                for compiled in sorted(path.glob("*.pyc")):
                    tar.add(compiled, arcname="./" + compiled.relative_to(root).as_posix(), filter=_root_owned)


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def docker_archive(rootfs_tar: Path, *, arch: str, tag: str, out: Path) -> None:
    """Wrap a root file system tarball as a one-layer image that says its architecture."""
    layer_digest = file_sha256(rootfs_tar)
    config = {
        "architecture": DOCKER_ARCH[arch],
        "os": "linux",
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": {
            "Env": _ENV,
            "Cmd": ["/bin/bash"],
            "Labels": {"farm.base": tag, "farm.suite": SUITE},
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created_by": f"farm bootstrap {SUITE} {' '.join(PACKAGES)}"}],
    }
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = f"{layer_digest}/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}]).encode()
    with tarfile.open(out, "w") as archive:
        _add_bytes(archive, "manifest.json", manifest)
        _add_bytes(archive, config_name, config_bytes)
        archive.add(rootfs_tar, arcname=layer_name)


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:

    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _stream(command: list[str], on_line: LineSink) -> None:
    tail: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            tail = [*tail, line][-5:]
            on_line(line)
        code = process.wait()
    if code != 0:
        raise BuildFailed(
            f"{command[0]} for {command[-3] if command[0] == 'mmdebstrap' else command[1]} failed "
            f"(exit {code}): {' | '.join(tail[-3:])}",
            fix="check that Debian's mirror is reachable and, for a foreign architecture, that "
            "`farm doctor` shows its binfmt handler",
        )
