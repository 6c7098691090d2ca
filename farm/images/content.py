"""Target images: base + site-packages (unpacked from the wheelhouse on the host) + job code, tagged by content.

The tag is ``farm/<target>:<hash>``, where the hash covers the Dockerfile, the wheel set, the job code and the base.
A warm build therefore only computes the hash (from files and the wheelhouse manifest) and asks the engine whether
that tag exists. Targets whose images hash the same share one image, tagged once per target. The Dockerfiles only
copy (no RUN step), so building a foreign platform's image runs nothing under QEMU; a smoke test then imports the
runtime in the new image, the one step that does.

This module is content only (tags, hashes, the build context, labels) and asks no engine anything: finding, building
and smoke-testing an image on an engine is farm/backend/imagebuild.py's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import marshal
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import farm
from farm.errors import BuildFailed
from farm.host.files import LineSink, root_readable
from farm.images import bootstrap, sitepackages
from farm.images.wheelhouse import PYTHON_VERSION, Wheelhouse, cached_wheelhouse, ensure_wheelhouse

# How an engine came by a target's image: built there now, already there, tagged (same content under another
# target's name), or shipped from the controller's engine (save/load, farm/backend/docker.py). The report says it
# (a target's backend.image), so it is defined with the report's types.
from farm.job.report import ImageOrigin as ImageOrigin
from farm.targets.config import BOOTSTRAP, Config, Target

PACKAGE_DIR = Path(farm.__file__).parent
LABEL_TARGET = "farm.target"
LABEL_HASH = "farm.hash"
# Where the Dockerfiles copy the job's code (farm/ below it); its bytecode records these paths for tracebacks.
IMAGE_APP = "/opt/farm/app"
# Bump when the job's bytecode is made differently, so images get a new tag and are built again.
BYTECODE = "1"
# PEP 552: bytecode checked against its source's hash at import, not against its time.
_CHECKED_HASH = 0b11


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    target: str
    tag: str
    size_bytes: int
    built_now: bool
    seconds: float
    origin: ImageOrigin = "cached"


# Where a bootstrapped base keeps Python; /opt/farm/bin/python3 in the image links to it.
BOOTSTRAP_PYTHON = f"/usr/bin/python{PYTHON_VERSION}"
# Where registry bases (python:3.11-slim and Debian's own) keep it, in the order farm looks.
REGISTRY_PYTHONS = (f"/usr/local/bin/python{PYTHON_VERSION}", BOOTSTRAP_PYTHON)
SMOKE_TEST = "import onnxruntime, onnx, numpy, farm.job.spec"


def wheel_requirements(target: Target) -> tuple[str, ...]:
    """What the target's wheelhouse is downloaded for: the target's packages (pip resolves the rest)."""
    return target.requirements


def dockerfile_path(target: Target) -> Path:
    """farm/images/dockerfiles/<kind>.Dockerfile, in the package: a wheel install builds images as a checkout does."""
    path = Path(__file__).parent / "dockerfiles" / f"{target.image}.Dockerfile"
    if not path.is_file():
        raise BuildFailed(
            f"no Dockerfile for image kind '{target.image}' (looked for {path})",
            fix="reinstall farm: its package lost a file",
        )
    return path


def job_files() -> list[tuple[str, bytes]]:
    """What of farm goes into the image: the import-free package marker and the job, nothing of the controller."""
    files = [("farm/__init__.py", (PACKAGE_DIR / "__init__.py").read_bytes())]
    # The job's data files (the cost models and trust of farm.job.estimate, the tune schema) travel with its code.
    job = PACKAGE_DIR / "job"
    for path in sorted([*job.rglob("*.py"), *job.rglob("*.json")]):
        files.append((f"farm/{path.relative_to(PACKAGE_DIR).as_posix()}", path.read_bytes()))
    return files


def job_bytecode(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The job's modules compiled here, so that the image's Python imports them without compiling them at every job
    start (half a second of each arm64 job under QEMU, 0.1 s of a native one). Checked against the source's hash,
    since the build context gives every file the time 0; none when this Python's bytecode is not the image's."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" != PYTHON_VERSION:
        return []
    compiled = []
    for name, data in files:
        if name.endswith(".py"):
            code = compile(data, f"{IMAGE_APP}/{name}", "exec", dont_inherit=True)
            header = (
                importlib.util.MAGIC_NUMBER + _CHECKED_HASH.to_bytes(4, "little") + importlib.util.source_hash(data)
            )
            compiled.append((importlib.util.cache_from_source(name), header + marshal.dumps(code)))
    return compiled


def base_ref(target: Target) -> str:
    return bootstrap.base_tag(target.arch) if target.base == BOOTSTRAP else target.base


def content_hash(target: Target, wheelhouse: Wheelhouse) -> str:
    job = hashlib.sha256()
    for name, data in job_files():
        job.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    recipe = {
        "dockerfile": hashlib.sha256(dockerfile_path(target).read_bytes()).hexdigest(),
        "wheels": wheelhouse.digest,
        "job": job.hexdigest(),
        "base": base_ref(target),
        "platform": target.platform,
        "python": PYTHON_VERSION,
        "site-packages": sitepackages.RECIPE,
        "bytecode": BYTECODE,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def image_tag(target: Target, wheelhouse: Wheelhouse) -> str:
    return f"farm/{target.name}:{content_hash(target, wheelhouse)}"


def current_tag(config: Config, target: Target) -> str | None:
    """The tag a build would produce now, or None while the wheelhouse has not been downloaded."""
    wheelhouse = cached_wheelhouse(config.cache_dir, target.platform, wheel_requirements(target))
    return image_tag(target, wheelhouse) if wheelhouse else None


def ensure_tag(config: Config, target: Target, *, on_line: LineSink, on_stage: LineSink) -> tuple[Wheelhouse, str]:
    """The target's wheelhouse (downloaded if need be) and the image tag its content gives."""
    on_stage("wheels")
    wheelhouse = ensure_wheelhouse(
        config.cache_dir,
        target.platform,
        wheel_requirements(target),
        on_line=on_line,
        source=f"{config.source}: [targets.{target.name}]",
        on_wait=on_stage,
    )
    return wheelhouse, image_tag(target, wheelhouse)


def image_labels(target: Target, tag: str) -> dict[str, str]:
    """The labels a target's image carries: its target, its content hash (how another target's build finds it)."""
    return {
        LABEL_TARGET: target.name,
        LABEL_HASH: tag.rsplit(":", 1)[1],
        "farm.platform": target.platform,
        "farm.runtime": target.runtime,
        "farm.version": farm.__version__,
    }


def write_context(path: Path, target: Target, site: Path, *, python: str) -> None:
    """The build context: the Dockerfile, site-packages/, bin/python3 (a link to the base's Python) and farm/."""
    with tarfile.open(path, "w") as tar:
        tar.add(dockerfile_path(target), arcname="Dockerfile")
        tar.add(site, arcname="site-packages", filter=_readable)
        link = tarfile.TarInfo("bin/python3")
        link.type, link.linkname = tarfile.SYMTYPE, python
        tar.addfile(link)
        files = job_files()
        for name, data in [*files, *job_bytecode(files)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


def _readable(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if Path(info.name).name == sitepackages.DONE:
        return None
    return root_readable(info)
