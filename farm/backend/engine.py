"""A Docker engine, through the Docker SDK (never the docker CLI): connecting, and running one hardened container.

Every container it creates carries the label ``farm.run`` and is removed when its run ends, whether it ended
normally, failed, timed out or was interrupted with Ctrl-C. ``keep=True`` leaves it for debugging. Its parts, each a
module of farm/backend/ and the only others that import the Docker SDK: ``runspec`` (what a run is), ``imageops``
(images), ``volumes`` (a remote engine's files), ``watch`` (logs and memory), ``cleanup`` (what farm left).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import docker
import docker.context
import docker.errors
import docker.tls
import docker.types
import requests

from farm.backend.cleanup import ContainerInfo, Housekeeping, remove
from farm.backend.imageops import ImageInfo, ImageOps
from farm.backend.runspec import LOG_TAIL_LINES, RUN_LABEL, STAGE_LABEL, Mount, RunResult, RunSpec, first_line
from farm.backend.volumes import Volumes
from farm.backend.watch import LogLines, LogReader, MemoryWatch
from farm.errors import EnvironmentProblem
from farm.host.files import LineSink
from farm.host.owner import OWNER_LABEL, this_process

# What callers import from here: the engine and what a run is (runspec.py), its images and containers.
__all__ = [
    "ENGINE_ERRORS",
    "LOG_TAIL_LINES",
    "OWNER_LABEL",
    "RUN_LABEL",
    "STAGE_LABEL",
    "ContainerInfo",
    "Engine",
    "EngineInfo",
    "ImageInfo",
    "LogLines",
    "Mount",
    "RunResult",
    "RunSpec",
    "engine_lost",
]


@dataclass(frozen=True, kw_only=True)
class EngineInfo:
    version: str
    api_version: str
    arch: str
    runtimes: tuple[str, ...]
    docker_root: str

    @property
    def gpu_runtime(self) -> bool:
        return "nvidia" in self.runtimes


# What the SDK raises when the engine stops answering mid-command (a refused socket, a dropped stream, a 5xx).
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


# How often, and how far apart, a server error's engine is asked whether it still answers (Engine._going).
GOING_CHECKS = 3
GOING_CHECK_S = 1.0


def engine_lost(doing: str, host: str, exc: BaseException) -> EnvironmentProblem:
    """The one wording of "the engine went away": what farm was doing, where the engine was, and the SDK's words."""
    return EnvironmentProblem(
        f"{doing} failed because the Docker engine at {host} stopped answering ({first_line(exc)})",
        fix="check that the Docker daemon is running (`farm doctor`) and run farm again",
    )


class Engine(ImageOps, Housekeeping):
    """A Docker engine. The client is passed in so tests and other engines (remote hosts) can supply their own."""

    def __init__(self, client: Any, *, host: str, remote: bool = False) -> None:
        self.client = client
        self.host = host
        # A remote engine cannot see the controller's folders: a run's mounts travel as archives through the API
        # into volumes, and what the job writes comes back the same way (see Volumes).
        self.remote = remote

    @classmethod
    def connect(cls, env: Mapping[str, str] | None = None) -> Engine:
        env = dict(os.environ if env is None else env)
        host = env.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        try:
            client = docker.from_env(environment=env, timeout=120)
            client.ping()
        except Exception as exc:  # the SDK raises several unrelated types for "nothing there"
            raise EnvironmentProblem(
                f"cannot reach a Docker engine at {host} ({first_line(exc)})",
                fix="start the Docker daemon, or set DOCKER_HOST to a reachable engine",
            ) from None
        return cls(client, host=host)

    @classmethod
    def connect_to(
        cls,
        address: str,
        *,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        timeout_s: int = 120,
    ) -> Engine:
        """A remote engine, by address (tcp://, ssh://, unix://) or by the name of a Docker context. Its runs move
        their files through the API (remote=True), whatever the address: a controller path means nothing there."""
        base_url, tls = address, None
        try:
            if "://" not in address:
                context = docker.context.ContextAPI.get_context(address)
                if context is None:
                    raise EnvironmentProblem(
                        f"there is no Docker context named {address!r}",
                        fix="list them with `docker context ls`, or give the engine's address",
                    )
                base_url, tls = context.Host, context.TLSConfig
            elif tls_ca or tls_cert:
                tls = docker.tls.TLSConfig(
                    client_cert=(tls_cert, tls_key) if tls_cert and tls_key else None,
                    ca_cert=tls_ca,
                    verify=tls_ca or True,
                )
            # requests lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE (set on many machines) override a session's CA, and
            # the engine's certificate would be checked against the system's CAs and refused: not for this client,
            # from its first request (the API version, asked while it is made) on.
            own_ca = bool(tls is not None and tls.ca_cert)  # from tls_ca, or from the context
            with _env_without(_CA_BUNDLE_VARIABLES if own_ca else ()):
                client = docker.DockerClient(
                    base_url=base_url, tls=tls or False, timeout=timeout_s, use_ssh_client=base_url.startswith("ssh://")
                )
            if own_ca:
                client.api.trust_env = False
            client.ping()
        except EnvironmentProblem:
            raise
        except Exception as exc:  # the SDK raises several unrelated types for "nothing there"
            raise EnvironmentProblem(
                f"cannot reach the Docker engine at {address} ({first_line(exc)})",
                fix="start that engine, or check the address and TLS files in targets.toml",
            ) from None
        return cls(client, host=address, remote=True)

    def info(self) -> EngineInfo:
        info = self.client.info()
        version = self.client.version()
        return EngineInfo(
            version=str(version.get("Version", "?")),
            api_version=str(version.get("ApiVersion", "?")),
            arch=str(info.get("Architecture", "?")),
            runtimes=tuple(sorted((info.get("Runtimes") or {}).keys())),
            docker_root=str(info.get("DockerRootDir", "/var/lib/docker")),
        )

    # --- images -------------------------------------------------------------------------------------------

    # --- containers -----------------------------------------------------------------------------------------

    def run(self, spec: RunSpec, *, on_line: LineSink | None = None) -> RunResult:
        """Run one container to completion and remove it, even on Ctrl-C.

        What goes wrong with this container (it cannot start, it is removed from outside) is its result; losing the
        engine itself is an EnvironmentProblem, since no other container can run either.
        """
        try:
            return self._run(spec, on_line)
        except ENGINE_ERRORS as exc:
            raise engine_lost(f"running a container of {spec.image}", self.host, exc) from None

    def _going(self) -> bool:
        """After a server error: whether the engine is stopping. A daemon that shuts down answers 500 for a while
        ("database not open", seen creating a volume) before its socket closes, so it is asked again for a few
        seconds; one that keeps answering had an error of this container's own."""
        for _ in range(GOING_CHECKS):
            time.sleep(GOING_CHECK_S)
            try:
                self.client.ping()
            except Exception:  # the SDK raises several unrelated types for "nothing there"
                return True
        return False

    def _run(self, spec: RunSpec, on_line: LineSink | None) -> RunResult:
        with contextlib.ExitStack() as stack:
            try:
                container, volumes = stack.enter_context(self._container(spec))
                started = time.monotonic()
                container.start()
            except docker.errors.APIError as exc:
                if exc.is_server_error() and self._going():
                    raise  # the engine's own end (run() says so), not this container's
                # A missing image, or the NVIDIA runtime's "driver/library version mismatch": this target's
                # failure alone.
                return RunResult.engine_failure(
                    f"could not be started: {first_line(exc)}", log_tail=str(exc.explanation or exc)
                )
            reader = LogReader(container, on_line)
            reader.start()
            memory = MemoryWatch(container, started)
            memory.start()
            timed_out = False
            thrashed: str | None = None
            status: dict[str, Any] = {}
            while True:
                try:
                    status = container.wait(timeout=1)
                    break
                except docker.errors.NotFound:
                    return RunResult.engine_failure(
                        "was removed from outside while it ran",
                        log_tail=reader.tail(),
                        duration_s=time.monotonic() - started,
                    )
                except requests.exceptions.RequestException as exc:
                    # wait(timeout=1) ends with a read timeout while the container still runs: poll again, so
                    # Ctrl-C is seen within a second. Any other request error means the engine is gone.
                    if not _is_read_timeout(exc):
                        raise
                    # Read once: the watch's thread may set it at any moment, and the result must say one thing.
                    thrashed = memory.thrashed
                    timed_out = thrashed is None and time.monotonic() - started > spec.timeout_s
                    if thrashed or timed_out:
                        _kill(container)
                        status = container.wait(timeout=30)
                        break
            duration = time.monotonic() - started
            reader.join(timeout=5)
            try:
                state = container.client.api.inspect_container(container.id)["State"]
            except docker.errors.NotFound:
                state = {}  # removed from outside (`docker rm -f`) right after it ended: its status says enough
            # On a remote engine the results come back now; a run whose results did not is not a finished one.
            lost = None if volumes is None else volumes.fetch(container.id)
            return RunResult(
                exit_code=int(status.get("StatusCode", state.get("ExitCode", -1))),
                log_tail=reader.tail() or _logs_tail(container),
                oom_killed=bool(state.get("OOMKilled")),
                timed_out=timed_out,
                duration_s=duration,
                thrashed=thrashed,
                engine_error=None if lost is None else f"ran, but its results could not be brought back ({lost})",
            )

    @contextmanager
    def _container(self, spec: RunSpec) -> Iterator[tuple[Any, Volumes | None]]:
        user = self._user()
        device_requests = [docker.types.DeviceRequest(count=spec.gpus, capabilities=[["gpu"]])] if spec.gpus else None
        with contextlib.ExitStack() as stack:
            volumes = stack.enter_context(Volumes(self.client.api, spec)) if self.remote else None
            mounts = (
                volumes.mounts
                if volumes is not None
                else [
                    docker.types.Mount(m.target, str(m.source), type="bind", read_only=m.read_only) for m in spec.mounts
                ]
            )
            container = self._create(spec, mounts=mounts, user=user, device_requests=device_requests)
            try:
                yield container, volumes
            finally:
                try:
                    if volumes is not None and not volumes.fetched:
                        # Ctrl-C or a lost engine cut the run short: what the job wrote so far comes back if it can.
                        volumes.fetch(container.id)
                finally:
                    if not spec.keep:
                        remove(self.client.api, container.id)
                    else:
                        stack.pop_all()  # kept for debugging, with its volumes

    def _user(self) -> str:
        """Locally, the controller's own user, so that it owns what the job writes into its folders (nobody when
        that is root); remotely the files come back through the API, and the job runs as nobody."""
        return "65534:65534" if os.getuid() == 0 or self.remote else f"{os.getuid()}:{os.getgid()}"

    def _create(self, spec: RunSpec, *, mounts: list[Any], user: str, device_requests: list[Any] | None) -> Any:
        return self.client.containers.create(
            spec.image,
            mounts=mounts,
            device_requests=device_requests,
            detach=True,
            **_container_settings(spec, user=user),
        )

    def describe(self, spec: RunSpec) -> dict[str, Any]:
        """The container farm would create for ``spec`` on this engine, as data (`farm matrix --dry-run`)."""
        user = self._user()
        mounts = [
            {
                "target": m.target,
                "read_only": m.read_only,
                **({"volume": "(filled through the API)"} if self.remote else {"source": str(m.source)}),
            }
            for m in spec.mounts
        ]
        return {
            "kind": "DockerContainer",
            "engine": self.host,
            "image": spec.image,
            "mounts": mounts,
            "gpus": spec.gpus,
            "timeout_s": spec.timeout_s,
            **_container_settings(spec, user=user),
        }


def _container_settings(spec: RunSpec, *, user: str) -> dict[str, Any]:
    """Every container's command, hardening and limits: no network, read-only root, no capabilities, no new
    privileges, an unprivileged user, memory without swap, a pid limit; the one definition run and describe share."""
    return {
        "command": list(spec.command),
        "entrypoint": list(spec.entrypoint) if spec.entrypoint is not None else None,
        "environment": dict(spec.environment),
        "platform": spec.platform,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": "rw,size=1g"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "user": user,
        "mem_limit": spec.memory,
        "memswap_limit": spec.memory,
        "pids_limit": spec.pids_limit,
        "cpuset_cpus": spec.cpuset,
        "labels": {RUN_LABEL: "1", OWNER_LABEL: this_process(), **spec.labels},
    }


def _logs_tail(container: Any) -> str:
    try:
        return bytes(container.logs(tail=LOG_TAIL_LINES)).decode("utf-8", "replace")
    except Exception:
        return ""


def _is_read_timeout(exc: BaseException) -> bool:
    # Over a unix socket the SDK reports a read timeout as a ConnectionError that says so.
    return isinstance(exc, requests.exceptions.ReadTimeout) or "timed out" in str(exc).lower()


def _kill(container: Any) -> None:
    try:
        container.kill()
    except docker.errors.APIError as exc:
        # 404 or 409: it ended, or was removed, between the last poll and the kill; either way it is not running.
        if exc.status_code not in (404, 409):
            raise


_CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@contextmanager
def _env_without(names: Sequence[str]) -> Iterator[None]:
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
