"""Which backend runs a target: its ``engine`` in targets.toml, opened once per distinct place."""

from __future__ import annotations

from dataclasses import dataclass

from farm.backend.base import Backend
from farm.backend.docker import DockerBackend
from farm.backend.engine import Engine
from farm.errors import FarmError
from farm.host.probe import HostInfo
from farm.targets.config import KUBERNETES, LOCAL_ENGINE, Config, Target

# Seconds to wait for a remote engine's first answer: one that is down must not hold up the targets that can run.
CONNECT_TIMEOUT_S = 15


def place_key(target: Target) -> tuple[str | None, ...]:
    """Targets with the same key share one backend (one connection, one probe)."""
    return (
        target.engine,
        target.tls_ca,
        target.tls_cert,
        target.tls_key,
        target.registry,
        target.namespace,
        target.kube_context,
    )


def offline_backend(target: Target, config: Config, local: Engine) -> Backend:
    """The target's backend without connecting to it: enough to say what it would create (`--dry-run`)."""
    if target.engine == LOCAL_ENGINE:
        return DockerBackend(local, cache_dir=config.cache_dir)
    if target.engine == KUBERNETES:
        from farm.backend.kubernetes.backend import KubernetesBackend

        assert target.registry is not None  # config requires it for kubernetes targets
        return KubernetesBackend(
            registry=target.registry,
            namespace=target.namespace,
            context=target.kube_context,
            engine=local,
            targets=config.targets,
        )
    return DockerBackend(Engine(None, host=target.engine, remote=True), cache_dir=config.cache_dir)


def open_backend(target: Target, config: Config, local: Engine) -> Backend:
    """The target's backend, connected; raises EnvironmentProblem when it cannot be reached."""
    if target.engine == LOCAL_ENGINE:
        return DockerBackend(local, cache_dir=config.cache_dir)
    if target.engine == KUBERNETES:
        from farm.backend.kubernetes.backend import (
            open_kubernetes,
        )  # the kubernetes client loads only when a target needs it

        return open_kubernetes(target, config, local)
    remote = Engine.connect_to(
        target.engine,
        tls_ca=target.tls_ca,
        tls_cert=target.tls_cert,
        tls_key=target.tls_key,
        timeout_s=CONNECT_TIMEOUT_S,
    )
    # A slow build or job there is not a lost engine: after the first answer, the usual patience.
    remote.client.api.timeout = 120
    return DockerBackend(remote, cache_dir=config.cache_dir, controller=local)


@dataclass(frozen=True, kw_only=True)
class Place:
    """A place targets.toml sends targets to, other than the controller's engine: the targets that run there, and
    its backend with the machine its probe found, or why it could not be reached."""

    engine: str
    targets: tuple[str, ...]
    backend: Backend | None = None
    host: HostInfo | None = None
    problem: FarmError | None = None


def open_places(config: Config, local: Engine) -> dict[tuple[str | None, ...], Place]:
    """Every remote place of the config, each connected and probed once, whatever number of targets it serves."""
    names: dict[tuple[str | None, ...], list[Target]] = {}
    for target in config.targets:
        if target.engine != LOCAL_ENGINE:
            names.setdefault(place_key(target), []).append(target)
    places = {}
    for key, targets in names.items():
        first = targets[0]
        served = tuple(t.name for t in targets)
        try:
            backend = open_backend(first, config, local)
            places[key] = Place(engine=first.engine, targets=served, backend=backend, host=backend.probe())
        except FarmError as exc:
            places[key] = Place(engine=first.engine, targets=served, problem=exc)
    return places
