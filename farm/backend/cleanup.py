"""Finding and removing what farm left on an engine: its containers and volumes, and the removal that makes sure
a container is gone."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import docker.errors
import requests

from farm.backend.runspec import RUN_LABEL
from farm.host.owner import OWNER_LABEL

REMOVE_TRIES = 4


@dataclass(frozen=True, kw_only=True)
class ContainerInfo:
    id: str
    name: str
    image: str
    state: str
    # farm.host.owner: the controller process that started it (farm/host/owner.py); None on containers of older farms.
    owner: str | None


class Housekeeping:
    """The engine's containers and volumes farm started, and their removal (a part of Engine)."""

    client: Any

    def farm_containers(self) -> list[ContainerInfo]:
        """Every container farm started that still exists, with the process that owns it."""
        found = []
        for container in self.client.api.containers(all=True, filters={"label": RUN_LABEL}):
            labels = container.get("Labels") or {}
            names = container.get("Names") or [container["Id"][:12]]
            found.append(
                ContainerInfo(
                    id=container["Id"],
                    name=str(names[0]).lstrip("/"),
                    image=str(container.get("Image", "?")),
                    state=str(container.get("State", "?")),
                    owner=labels.get(OWNER_LABEL),
                )
            )
        return found

    def remove_container(self, container: str) -> None:
        remove(self.client.api, container)

    def farm_volumes(self) -> list[tuple[str, str | None]]:
        """The volumes a remote engine's runs carry their files in (Volumes), with the process that owns each."""
        found = self.client.api.volumes(filters={"label": RUN_LABEL}).get("Volumes") or []
        return [(str(v["Name"]), (v.get("Labels") or {}).get(OWNER_LABEL)) for v in found]

    def remove_volume(self, volume: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_volume(volume, force=True)


def remove(api: Any, container: str) -> None:
    """Remove a container, making sure it is gone: a leftover holds its image and counts against the next run."""
    for attempt in range(REMOVE_TRIES):
        try:
            api.remove_container(container, force=True)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if "in progress" in str(exc):
                # Someone else's removal (`docker rm -f` from outside): wait for it rather than assume it succeeds.
                _wait_gone(api, container)
                return
            # The storage driver can be briefly busy unmounting a container that just ended ("device or resource
            # busy"); a later try succeeds, and the last failure is reported rather than leaving it silently.
            if attempt == REMOVE_TRIES - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
        except requests.exceptions.ConnectionError:
            # The engine is gone; the error that got us here is the one to report, and the container went with it.
            return


def _wait_gone(api: Any, container: str, *, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            api.inspect_container(container)
        except docker.errors.NotFound:
            return
        time.sleep(0.2)
