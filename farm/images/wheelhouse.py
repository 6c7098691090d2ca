"""Per-platform wheelhouses: the target's wheels, downloaded on the host so image builds need no network.

pip resolves the dependencies for the target's platform (``--platform`` with ``--only-binary``), because a set picked by
hand conflicted. A wheelhouse is complete only once its manifest is written, and a warm lookup reads only the
manifest, which keeps a warm ``farm build`` fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from farm.errors import BuildFailed, ConfigError
from farm.host.files import LineSink, exclusive, file_sha256, lock_path
from farm.targets.config import PLATFORM_ARCH

PYTHON_VERSION = "3.11"
# bookworm has glibc 2.36, so every manylinux tag up to 2_36 installs there.
_MANYLINUX = [f"manylinux_2_{minor}" for minor in range(36, 16, -1)]
_MANIFEST = "manifest.json"


@dataclass(frozen=True, kw_only=True)
class Wheel:
    file: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class Wheelhouse:
    directory: Path
    platform: str
    requirements: tuple[str, ...]
    wheels: tuple[Wheel, ...]

    @property
    def digest(self) -> str:
        text = "\n".join(f"{w.file} {w.sha256}" for w in sorted(self.wheels, key=lambda w: w.file))
        return hashlib.sha256(text.encode()).hexdigest()


def wheelhouse_dir(cache_dir: Path, platform: str, requirements: Sequence[str]) -> Path:
    key = json.dumps([platform, PYTHON_VERSION, sorted(requirements)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir / "wheelhouse" / f"{platform.replace('/', '-')}-{digest}"


def cached_wheelhouse(cache_dir: Path, platform: str, requirements: Sequence[str]) -> Wheelhouse | None:
    directory = wheelhouse_dir(cache_dir, platform, requirements)
    try:
        manifest = json.loads((directory / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return Wheelhouse(
        directory=directory,
        platform=platform,
        requirements=tuple(requirements),
        wheels=tuple(Wheel(file=w["file"], sha256=w["sha256"]) for w in manifest["wheels"]),
    )


def ensure_wheelhouse(
    cache_dir: Path,
    platform: str,
    requirements: Sequence[str],
    *,
    on_line: LineSink,
    source: str,
    on_wait: LineSink | None = None,
) -> Wheelhouse:
    """The cached wheelhouse, or a new one downloaded now. ``source`` names the config for error messages;
    ``on_wait`` hears when another farm process is downloading the same wheels and this one waits for it."""
    cached = cached_wheelhouse(cache_dir, platform, requirements)
    if cached is not None:
        return cached
    directory = wheelhouse_dir(cache_dir, platform, requirements)
    with exclusive(
        lock_path(cache_dir, "wheelhouse", directory.name),
        on_wait=on_wait or on_line,
        waiting=f"downloading the wheels for {platform}",
    ):
        # Another farm run may have downloaded it while this one waited.
        return cached_wheelhouse(cache_dir, platform, requirements) or _download_into(
            cache_dir, platform, requirements, on_line=on_line, source=source
        )


def _download_into(
    cache_dir: Path, platform: str, requirements: Sequence[str], *, on_line: LineSink, source: str
) -> Wheelhouse:
    directory = wheelhouse_dir(cache_dir, platform, requirements)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory.parent, prefix=".download-") as scratch:
        _download(Path(scratch), platform, requirements, on_line=on_line, source=source)
        wheels = tuple(Wheel(file=p.name, sha256=file_sha256(p)) for p in sorted(Path(scratch).glob("*.whl")))
        manifest = {
            "platform": platform,
            "requirements": list(requirements),
            "python": PYTHON_VERSION,
            "wheels": [{"file": w.file, "sha256": w.sha256} for w in wheels],
        }
        (Path(scratch) / _MANIFEST).write_text(json.dumps(manifest, indent=2))
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(scratch, directory)
        # TemporaryDirectory would delete what we just moved into place; give it an empty one back.
        Path(scratch).mkdir()
    result = cached_wheelhouse(cache_dir, platform, requirements)
    assert result is not None
    return result


def pip_download_command(platform: str, requirements: Sequence[str], dest: Path) -> list[str]:
    arch = PLATFORM_ARCH[platform]
    platforms = [f"{tag}_{arch}" for tag in _MANYLINUX] + [f"manylinux2014_{arch}"]
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar=off",
        "--only-binary=:all:",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--abi",
        "cp" + PYTHON_VERSION.replace(".", ""),
        "--abi",
        "abi3",
        "--abi",
        "none",
        *(f"--platform={p}" for p in platforms),
        "--dest",
        str(dest),
        *requirements,
    ]


def _download(dest: Path, platform: str, requirements: Sequence[str], *, on_line: LineSink, source: str) -> None:
    # Local find-links from this machine's pip config must not leak into what the images are built from.
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_NO_INDEX")}
    command = pip_download_command(platform, requirements, dest)
    output: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as process:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line.rstrip())
            on_line(line.rstrip())
        code = process.wait()
    if code == 0:
        return
    text = "\n".join(output)
    missing = re.search(r"No matching distribution found for (\S+)", text)
    if missing:
        requirement = missing.group(1)
        versions = re.search(r"\(from versions: ([^)]*)\)", text)
        known = versions.group(1).split(", ") if versions and versions.group(1) != "none" else []
        hint = f"pick one it has, e.g. the newest: {known[-1]}" if known else "check the package name"
        raise ConfigError(
            f"{source}: {requirement} is not on the package index for {platform} and Python {PYTHON_VERSION}"
            + (f" (it has {', '.join(known[-6:])})" if known else ""),
            fix=hint,
        )
    last = next((line for line in reversed(output) if line.strip()), "no output")
    raise BuildFailed(
        f"downloading wheels for {platform} failed (pip exit {code}): {last}",
        fix="check that the package index is reachable (pip config, proxy) and retry",
    )
