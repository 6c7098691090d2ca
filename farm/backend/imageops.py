"""An engine's images: found, loaded, pulled, built from a tar context, tagged, shipped to another engine, removed."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from farm.backend.cleanup import remove
from farm.backend.runspec import LOG_TAIL_LINES, RUN_LABEL, first_line
from farm.errors import BuildFailed
from farm.host.files import LineSink
from farm.host.owner import OWNER_LABEL, this_process


@dataclass(frozen=True, kw_only=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    architecture: str
    size_bytes: int
    labels: Mapping[str, str]


class ImageOps:
    """The engine's image operations (a part of Engine)."""

    client: Any
    host: str

    def ship(self, ref: str, to: ImageOps) -> None:
        """`docker save | docker load`, streamed from this engine into ``to``: an image moves without a registry."""
        for chunk in to.client.api.load_image(self.client.api.get_image(ref)):
            if isinstance(chunk, dict) and chunk.get("error"):
                raise BuildFailed(f"loading {ref} into the engine at {to.host} failed because {chunk['error']}")

    def image(self, ref: str) -> ImageInfo | None:
        try:
            attrs = self.client.api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return None
            raise
        return ImageInfo(
            id=str(attrs["Id"]),
            tags=tuple(attrs.get("RepoTags") or ()),
            architecture=str(attrs.get("Architecture", "")),
            size_bytes=int(attrs.get("Size", 0)),
            labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
        )

    def images_labelled(self, label: str) -> list[ImageInfo]:
        found = []
        for image in self.client.api.images(filters={"label": label}):
            info = self.image(image["Id"])
            if info is not None:
                found.append(info)
        return found

    def has_file(self, image: str, path: str, *, platform: str | None = None) -> bool:
        """Whether ``image`` holds ``path``, found without starting a container (so with no QEMU for a foreign one)."""
        container = self.client.api.create_container(
            image,
            command=["true"],
            labels={RUN_LABEL: "probe", OWNER_LABEL: this_process()},
            platform=platform,
            network_disabled=True,
        )
        try:
            self.client.api.get_archive(container["Id"], path)
            return True
        except docker.errors.NotFound:
            return False
        finally:
            remove(self.client.api, container["Id"])

    def load(self, archive: Path) -> None:
        """``docker load`` a docker-archive tarball; this is how a bootstrapped base gets its architecture."""
        with archive.open("rb") as stream:
            for chunk in self.client.api.load_image(stream):
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise BuildFailed(f"docker load of {archive} failed because {chunk['error']}")

    def tag(self, image_id: str, ref: str) -> None:
        repository, _, tag = ref.rpartition(":")
        self.client.api.tag(image_id, repository, tag)

    def pull(self, ref: str, platform: str) -> None:
        try:
            self.client.api.pull(ref, platform=platform)
        except docker.errors.APIError as exc:
            raise BuildFailed(
                f"pulling the registry base {ref} for {platform} failed because {first_line(exc)}",
                fix='check the registry is reachable, or use base = "bootstrap" to build the base from Debian',
            ) from None

    def build(
        self,
        context: Path,
        *,
        tag: str,
        platform: str,
        labels: Mapping[str, str],
        buildargs: Mapping[str, str],
        on_line: LineSink | None = None,
    ) -> ImageInfo:
        """Build from a tar context with networking off: everything the image needs is in the context."""
        tail: list[str] = []
        with context.open("rb") as stream:
            chunks = self.client.api.build(
                fileobj=stream,
                custom_context=True,
                tag=tag,
                platform=platform,
                labels=dict(labels),
                buildargs=dict(buildargs),
                network_mode="none",
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
            )
            for chunk in chunks:
                if "error" in chunk:
                    detail = str(chunk["error"]).strip()
                    raise BuildFailed(
                        f"building {tag} failed because {detail}",
                        fix="see the build log above; run with --debug for the full log",
                    ) from None
                text = str(chunk.get("stream", "")).rstrip()
                if text:
                    tail = [*tail, text][-LOG_TAIL_LINES:]
                    if on_line:
                        on_line(text)
        info = self.image(tag)
        if info is None:
            raise BuildFailed(f"building {tag} finished but the engine has no such image; last log: {tail[-1:]}")
        return info

    def remove_image(self, ref: str) -> None:
        with contextlib.suppress(docker.errors.ImageNotFound):
            self.client.api.remove_image(ref, force=True)

    # --- containers -----------------------------------------------------------------------------------------
