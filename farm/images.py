"""Target images: base + wheelhouse + images/<kind>.Dockerfile + job code, tagged by content.

The tag is ``farm/<target>:<hash>``, where the hash covers the Dockerfile, the wheel set, the job code and the base.
A warm build therefore only computes the hash (from files and the wheelhouse manifest) and asks the engine whether
that tag exists.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import farm
from farm import bootstrap
from farm.config import BOOTSTRAP, Config, Target
from farm.engine import Engine
from farm.errors import BuildFailed
from farm.files import LineSink
from farm.wheelhouse import PYTHON_VERSION, Wheelhouse, cached_wheelhouse, ensure_wheelhouse

PACKAGE_DIR = Path(farm.__file__).parent
LABEL_TARGET = "farm.target"
LABEL_HASH = "farm.hash"


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    target: str
    tag: str
    size_bytes: int
    built_now: bool
    seconds: float

# The images install their wheels with pip run from its own wheel, into a venv made without ensurepip: under QEMU,
# ensurepip alone took 40 s of a foreign-platform build.
INSTALLER = "pip==25.3"


def wheel_requirements(target: Target) -> tuple[str, ...]:
    """What the target's wheelhouse is downloaded for: the target's packages and the installer."""
    return (*target.requirements, INSTALLER)


def dockerfile_path(target: Target) -> Path:
    """images/ in a source checkout, else the copy installed with the package."""
    for directory in (PACKAGE_DIR.parent / "images", PACKAGE_DIR / "images"):
        path = directory / f"{target.image}.Dockerfile"
        if path.is_file():
            return path
    raise BuildFailed(f"no Dockerfile for image kind '{target.image}' (looked for images/{target.image}.Dockerfile)")


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
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def image_tag(target: Target, wheelhouse: Wheelhouse) -> str:
    return f"farm/{target.name}:{content_hash(target, wheelhouse)}"


def current_tag(config: Config, target: Target) -> str | None:
    """The tag a build would produce now, or None while the wheelhouse has not been downloaded."""
    wheelhouse = cached_wheelhouse(config.cache_dir, target.platform, wheel_requirements(target))
    return image_tag(target, wheelhouse) if wheelhouse else None


def ensure_base(engine: Engine, target: Target, on_line: LineSink) -> str:
    """The base image for the target's platform, bootstrapped from Debian or pulled from a registry."""
    ref = base_ref(target)
    existing = engine.image(ref)
    if target.base != BOOTSTRAP:
        if existing is None:
            on_line(f"pulling {ref} for {target.platform}")
            engine.pull(ref, target.platform)
        return ref
    if existing is not None:
        return ref
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
    return ref


def ensure_image(
    engine: Engine, config: Config, target: Target, *, on_line: LineSink, on_stage: LineSink
) -> BuiltImage:
    """The target's image, built only when no image with its content hash exists."""
    started = time.monotonic()
    on_stage("wheels")
    wheelhouse = ensure_wheelhouse(
        config.cache_dir, target.platform, wheel_requirements(target), on_line=on_line,
        source=f"{config.source}: [targets.{target.name}]",
    )
    tag = image_tag(target, wheelhouse)
    existing = engine.image(tag)
    if existing is not None:
        return BuiltImage(target=target.name, tag=tag, size_bytes=existing.size_bytes, built_now=False,
                          seconds=time.monotonic() - started)
    on_stage("base")
    base = ensure_base(engine, target, on_line)
    on_stage("build")
    with tempfile.TemporaryDirectory(prefix="farm-context-") as scratch:
        context = Path(scratch) / "context.tar"
        write_context(context, target, wheelhouse)
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
            # QEMU's default "max" core is the slowest to emulate; the target's own core runs a foreign build.
            buildargs={"BASE": base, "QEMU_CPU": target.emulate_cpu or ""},
            on_line=on_line,
        )
    return BuiltImage(target=target.name, tag=tag, size_bytes=info.size_bytes, built_now=True,
                      seconds=time.monotonic() - started)


def write_context(path: Path, target: Target, wheelhouse: Wheelhouse) -> None:
    with tarfile.open(path, "w") as tar:
        tar.add(dockerfile_path(target), arcname="Dockerfile")
        for wheel in wheelhouse.wheels:
            tar.add(wheelhouse.directory / wheel.file, arcname=f"wheels/{wheel.file}")
        for name, data in job_files():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644

            tar.addfile(info, io.BytesIO(data))
