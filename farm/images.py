"""Target images: base + site-packages (unpacked from the wheelhouse on the host) + job code, tagged by content.

The tag is ``farm/<target>:<hash>``, where the hash covers the Dockerfile, the wheel set, the job code and the base.
A warm build therefore only computes the hash (from files and the wheelhouse manifest) and asks the engine whether
that tag exists. Targets whose images hash the same share one image, tagged once per target. The Dockerfiles only
copy (no RUN step), so building a foreign platform's image runs nothing under QEMU; a smoke test then imports the
runtime in the new image, the one step that does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import farm
from farm import bootstrap, sitepackages
from farm.backend.engine import Engine, ImageInfo, RunSpec
from farm.config import BOOTSTRAP, Config, Target
from farm.errors import BuildFailed
from farm.files import LineSink, exclusive, lock_path, root_readable
from farm.host import qemu_cpu
from farm.wheelhouse import PYTHON_VERSION, Wheelhouse, cached_wheelhouse, ensure_wheelhouse

PACKAGE_DIR = Path(farm.__file__).parent
LABEL_TARGET = "farm.target"
LABEL_HASH = "farm.hash"


# How an engine came by a target's image: built there now, already there, tagged (same content under another
# target's name), or shipped from the controller's engine (save/load, farm/backend/docker.py).
ImageOrigin = Literal["built", "cached", "tagged", "shipped"]


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
    """farm/dockerfiles/<kind>.Dockerfile, part of the package, so a wheel install builds images as a checkout does."""
    path = PACKAGE_DIR / "dockerfiles" / f"{target.image}.Dockerfile"
    if not path.is_file():
        raise BuildFailed(
            f"no Dockerfile for image kind '{target.image}' (looked for {path})",
            fix="reinstall farm: its package lost a file",
        )
    return path


def job_files() -> list[tuple[str, bytes]]:
    """What of farm goes into the image: the import-free package marker and the job, nothing of the controller."""
    files = [("farm/__init__.py", (PACKAGE_DIR / "__init__.py").read_bytes())]
    for path in sorted((PACKAGE_DIR / "job").rglob("*.py")):
        files.append((f"farm/{path.relative_to(PACKAGE_DIR).as_posix()}", path.read_bytes()))
    return files


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
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def image_tag(target: Target, wheelhouse: Wheelhouse) -> str:
    return f"farm/{target.name}:{content_hash(target, wheelhouse)}"


def current_tag(config: Config, target: Target) -> str | None:
    """The tag a build would produce now, or None while the wheelhouse has not been downloaded."""
    wheelhouse = cached_wheelhouse(config.cache_dir, target.platform, wheel_requirements(target))
    return image_tag(target, wheelhouse) if wheelhouse else None


def ensure_base(
    engine: Engine, cache_dir: Path, target: Target, on_line: LineSink, on_wait: LineSink | None = None
) -> str:
    """The base image for the target's platform, bootstrapped from Debian or pulled from a registry."""
    ref = base_ref(target)
    if engine.image(ref) is not None:
        return ref
    with exclusive(
        lock_path(cache_dir, "base", ref), on_wait=on_wait or on_line, waiting=f"making the base image {ref}"
    ):
        if engine.image(ref) is None:  # another farm run may have made it while this one waited
            _make_base(engine, target, ref, on_line)
    return ref


def _make_base(engine: Engine, target: Target, ref: str, on_line: LineSink) -> None:
    if target.base != BOOTSTRAP:
        on_line(f"pulling {ref} for {target.platform}")
        engine.pull(ref, target.platform)
        return
    with tempfile.TemporaryDirectory(prefix="farm-base-") as scratch:
        rootfs = Path(scratch) / "rootfs.tar"
        archive = Path(scratch) / "image.tar"
        bootstrap.build_rootfs(target.arch, rootfs, on_line)
        bootstrap.docker_archive(rootfs, arch=target.arch, tag=ref, out=archive)
        rootfs.unlink()
        engine.load(archive)
    loaded = engine.image(ref)
    if loaded is None or loaded.architecture != bootstrap.DOCKER_ARCH[target.arch]:
        raise BuildFailed(
            f"the bootstrapped base {ref} did not load as {bootstrap.DOCKER_ARCH[target.arch]}",
            fix="remove it with `docker rmi` and run `farm build` again",
        )


def ensure_image(
    engine: Engine, config: Config, target: Target, *, on_line: LineSink, on_stage: LineSink
) -> BuiltImage:
    """The target's image, built only when no image with its content hash exists (under any target's name)."""
    started = time.monotonic()
    wheelhouse, tag = ensure_tag(config, target, on_line=on_line, on_stage=on_stage)
    with exclusive(lock_path(config.cache_dir, "image", tag), on_wait=on_stage, waiting=f"building {tag}"):
        return _reuse_or_build(engine, config, target, wheelhouse, tag, started, on_line=on_line, on_stage=on_stage)


def _reuse_or_build(
    engine: Engine,
    config: Config,
    target: Target,
    wheelhouse: Wheelhouse,
    tag: str,
    started: float,
    *,
    on_line: LineSink,
    on_stage: LineSink,
) -> BuiltImage:
    existing = engine.image(tag)
    origin: ImageOrigin = "cached"
    if existing is None:
        existing = same_content(engine, tag)
        origin = "tagged"
        if existing is not None:
            # Another target's image has the same content: one image, one more tag.
            engine.tag(existing.id, tag)
            on_line(f"same content as {', '.join(existing.tags) or existing.id}: tagged, not built")
    if existing is not None:
        return BuiltImage(
            target=target.name,
            tag=tag,
            size_bytes=existing.size_bytes,
            built_now=False,
            seconds=time.monotonic() - started,
            origin=origin,
        )
    on_stage("base")
    base = ensure_base(engine, config.cache_dir, target, on_line, on_wait=on_stage)
    on_stage("site-packages")
    site = sitepackages.ensure_site_packages(config.cache_dir, wheelhouse, on_line, on_wait=on_stage)
    on_stage("build")
    with tempfile.TemporaryDirectory(prefix="farm-context-") as scratch:
        context = Path(scratch) / "context.tar"
        write_context(context, target, site, python=_base_python(engine, target, base))
        info = engine.build(
            context,
            tag=tag,
            platform=target.platform,
            labels={
                LABEL_TARGET: target.name,
                LABEL_HASH: tag.rsplit(":", 1)[1],
                "farm.platform": target.platform,
                "farm.runtime": target.runtime,
                "farm.version": farm.__version__,
            },
            buildargs={"BASE": base},
            on_line=on_line,
        )
    on_stage("smoke test")
    _smoke_test(engine, target, tag)
    return BuiltImage(
        target=target.name,
        tag=tag,
        size_bytes=info.size_bytes,
        built_now=True,
        origin="built",
        seconds=time.monotonic() - started,
    )


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


def find_image(engine: Engine, tag: str) -> ImageInfo | None:
    """The image ``tag`` names, or one of the same content under another target's name."""
    return engine.image(tag) or same_content(engine, tag)


def same_content(engine: Engine, tag: str) -> ImageInfo | None:
    """An image of the same content under another target's name: what a build of ``tag`` would tag, not build."""
    content = tag.rsplit(":", 1)[1]
    for image in engine.images_labelled(f"{LABEL_HASH}={content}"):
        if image.tags:
            return image
    return None


def _base_python(engine: Engine, target: Target, base: str) -> str:
    """The base's Python 3.11, found without running anything in the base (it may be a foreign platform)."""
    if target.base == BOOTSTRAP:
        return BOOTSTRAP_PYTHON
    for path in REGISTRY_PYTHONS:
        if engine.has_file(base, path, platform=target.platform):
            return path
    raise BuildFailed(
        f"the registry base {base} of {target.name} has no Python {PYTHON_VERSION} at {' or '.join(REGISTRY_PYTHONS)}",
        fix=f"use a base with Python {PYTHON_VERSION} (e.g. python:{PYTHON_VERSION}-slim-bookworm), or base = "
        '"bootstrap"',
    )


def _smoke_test(engine: Engine, target: Target, tag: str) -> None:
    """Import the runtime in the new image, so an image that cannot run is removed now rather than found later."""
    cpu = qemu_cpu(target)
    env = {"QEMU_CPU": cpu} if cpu and target.arch != os.uname().machine else {}
    result = engine.run(
        RunSpec(
            image=tag,
            command=["/opt/farm/bin/python3", "-c", SMOKE_TEST],
            environment=env,
            platform=target.platform,
            timeout_s=600.0,
            memory="2g",
            labels={LABEL_TARGET: target.name},
        )
    )
    if result.failure:
        engine.remove_image(tag)
        raise BuildFailed(
            f"the new image of {target.name} cannot import onnxruntime, onnx and numpy: it {result.failure} "
            f"({result.log_tail.strip().splitlines()[-1:] or 'no output'})",
            fix="remove farm's site-packages and wheelhouse caches and build again; report it if it persists",
        )


def write_context(path: Path, target: Target, site: Path, *, python: str) -> None:
    """The build context: the Dockerfile, site-packages/, bin/python3 (a link to the base's Python) and farm/."""
    with tarfile.open(path, "w") as tar:
        tar.add(dockerfile_path(target), arcname="Dockerfile")
        tar.add(site, arcname="site-packages", filter=_readable)
        link = tarfile.TarInfo("bin/python3")
        link.type, link.linkname = tarfile.SYMTYPE, python
        tar.addfile(link)
        for name, data in job_files():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


def _readable(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if Path(info.name).name == sitepackages.DONE:
        return None
    return root_readable(info)
