"""A target's image on an engine: found by its content hash, tagged when another target's has the same content, or
built (its base bootstrapped or pulled first) and smoke-tested. The content (the tag, the build context, the labels)
is farm/images/content.py's; this module is the only image code that asks an engine for anything."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from farm.backend.engine import Engine, ImageInfo, RunSpec
from farm.backend.runner import PYTHON
from farm.errors import BuildFailed
from farm.host.files import LineSink, exclusive, lock_path
from farm.host.probe import qemu_cpu
from farm.images import bootstrap, sitepackages
from farm.images.content import (
    BOOTSTRAP_PYTHON,
    LABEL_HASH,
    LABEL_TARGET,
    REGISTRY_PYTHONS,
    SMOKE_TEST,
    BuiltImage,
    ImageOrigin,
    base_ref,
    ensure_tag,
    image_labels,
    write_context,
)
from farm.images.wheelhouse import PYTHON_VERSION, Wheelhouse
from farm.targets.config import BOOTSTRAP, Config, Target


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
            labels=image_labels(target, tag),
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
            command=[PYTHON, "-c", SMOKE_TEST],
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
