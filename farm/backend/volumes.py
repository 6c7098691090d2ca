"""A remote engine's files: a run's mounts carried as archives through the API into volumes, and back."""

from __future__ import annotations

import contextlib
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import docker.errors
import docker.types
import requests

from farm.backend.cleanup import remove
from farm.backend.runspec import RUN_LABEL, Mount, RunSpec, first_line
from farm.errors import EnvironmentProblem
from farm.host.files import root_readable
from farm.host.owner import OWNER_LABEL, this_process

# Where a stager container mounts the volume it fills: put_archive then extracts the folder's own entry too, which
# sets the mode of the volume's root (world-writable for outputs, since the job runs as nobody).
_STAGE = "/farm-stage"
_STAGED = "v"


class Volumes:
    """A remote engine's stand-in for bind mounts: one volume per mount (a file's mount gets its folder's), filled
    through the API by a stager container that is created and never started, so it runs nothing (no QEMU either),
    and read back with get_archive from the job's container once it has ended. Labelled like containers, so the
    orphan sweep finds a killed controller's volumes too."""

    def __init__(self, api: Any, spec: RunSpec) -> None:
        self._api = api
        self._spec = spec
        self._volumes: list[str] = []
        self._writable: list[Mount] = []
        self.mounts: list[Any] = []
        self.fetched = False

    def __enter__(self) -> Volumes:
        try:
            for folder, mounts in by_folder(self._spec.mounts).items():
                volume = self._api.create_volume(labels={RUN_LABEL: "1", OWNER_LABEL: this_process()})["Name"]
                self._volumes.append(volume)
                read_only = all(m.read_only for m in mounts)
                self._fill(volume, mounts, read_only=read_only)
                self._writable += [m for m in mounts if not m.read_only]
                self.mounts.append(docker.types.Mount(folder, volume, type="volume", read_only=read_only))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for volume in self._volumes:
            with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
                self._api.remove_volume(volume, force=True)

    def _fill(self, volume: str, mounts: Sequence[Mount], *, read_only: bool) -> None:
        with tempfile.TemporaryFile() as stream:  # on disk: a model and its data can be larger than memory
            self._pack(stream, mounts, read_only=read_only)
            stream.seek(0)
            self._put(volume, stream)

    @staticmethod
    def _pack(stream: Any, mounts: Sequence[Mount], *, read_only: bool) -> None:
        with tarfile.open(fileobj=stream, mode="w") as archive:
            root = tarfile.TarInfo(_STAGED)
            root.type, root.mode = tarfile.DIRTYPE, 0o755 if read_only else 0o1777
            archive.addfile(root)  # first: extracting it sets the mode of the volume's root
            for mount in mounts:
                if mount.source.is_dir():
                    for path in sorted(mount.source.rglob("*")):
                        archive.add(
                            path,
                            arcname=f"{_STAGED}/{path.relative_to(mount.source)}",
                            recursive=False,
                            filter=root_readable,
                        )
                elif mount.source.is_file():
                    archive.add(
                        mount.source, arcname=f"{_STAGED}/{PurePosixPath(mount.target).name}", filter=root_readable
                    )

    def _put(self, volume: str, stream: Any) -> None:
        stager = self._api.create_container(
            self._spec.image,
            command=["true"],
            platform=self._spec.platform,
            network_disabled=True,
            labels={RUN_LABEL: "stager", OWNER_LABEL: this_process()},
            host_config=self._api.create_host_config(
                mounts=[docker.types.Mount(f"{_STAGE}/{_STAGED}", volume, type="volume")]
            ),
        )
        try:
            if not self._api.put_archive(stager["Id"], _STAGE, stream):
                raise EnvironmentProblem(f"the engine refused the job's inputs for {self._spec.image}")
        finally:
            remove(self._api, stager["Id"])

    def fetch(self, container: str) -> str | None:
        """Copy what the job wrote under each writable mount into the mount's source folder; returns why that
        failed, or None. Only regular files and folders come back, and none outside the folder (tarfile's "data"
        filter): what a job writes is as untrusted as the model it ran."""
        self.fetched = True
        for mount in self._writable:
            try:
                chunks, _ = self._api.get_archive(container, mount.target)
                with tempfile.TemporaryFile() as spool:  # spooled to disk: results can be larger than memory
                    for chunk in chunks:
                        spool.write(chunk)
                    spool.seek(0)
                    with tarfile.open(fileobj=spool) as archive:
                        extract_under(archive, PurePosixPath(mount.target).name, mount.source)
            except (docker.errors.APIError, requests.exceptions.RequestException, tarfile.TarError, OSError) as exc:
                return f"{mount.target}: {first_line(exc)}"
        return None


def extract_under(archive: tarfile.TarFile, top: str, folder: Path) -> None:
    """The members under ``top/`` into ``folder``, without the ``top`` component."""
    for member in archive.getmembers():
        parts = PurePosixPath(member.name).parts
        if len(parts) < 2 or parts[0] != top or not (member.isfile() or member.isdir()):
            continue
        member.name = str(PurePosixPath(*parts[1:]))
        archive.extract(member, folder, filter="data")


def by_folder(mounts: Sequence[Mount]) -> dict[str, list[Mount]]:
    """Mounts by the container folder their volume is mounted at: a folder's own, or a file's parent."""
    folders: dict[str, list[Mount]] = {}
    for mount in mounts:
        folder = mount.target if mount.source.is_dir() else str(PurePosixPath(mount.target).parent)
        folders.setdefault(folder, []).append(mount)
    return folders
