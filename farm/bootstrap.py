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

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from farm.errors import BuildFailed, EnvironmentProblem
from farm.files import LineSink, file_sha256

SUITE = "bookworm"
# No ca-certificates: farm's containers have no network. onnxruntime's wheels link against the system's libstdc++.
PACKAGES = ("python3", "libstdc++6", "libgcc-s1")
# Bump when the recipe changes, so cached bases are rebuilt.
RECIPE = "3"
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
            "mmdebstrap", "--variant=extract", f"--include={','.join(PACKAGES)}", f"--architectures={debian_arch}",
            *(f"--dpkgopt=path-exclude={p}" for p in _EXCLUDES),
            SUITE, str(out_tar), mirror(),
        ]
        _stream(command, on_line)
        return
    with tempfile.TemporaryDirectory(prefix="farm-rootfs-") as root:
        command = [
            "debootstrap", f"--arch={debian_arch}", "--variant=minbase", f"--include={','.join(PACKAGES)}",
            SUITE, root, mirror(),
        ]
        _stream(command, on_line)
        with tarfile.open(out_tar, "w") as tar:
            tar.add(root, arcname=".")


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
