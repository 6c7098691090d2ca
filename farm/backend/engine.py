"""The only module that talks to Docker, through the Docker SDK (never the docker CLI).

Every container it creates carries the label ``farm.run`` and is removed when its run ends, whether it ended
normally, failed, timed out or was interrupted with Ctrl-C. ``keep=True`` leaves it for debugging.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import docker
import docker.context
import docker.errors
import docker.tls
import docker.types
import requests

from farm.backend.thrashing import ThrashWatch, sample_of
from farm.errors import BuildFailed, EnvironmentProblem
from farm.files import LineSink, root_readable
from farm.owner import OWNER_LABEL, this_process

RUN_LABEL = "farm.run"
# Which job a container runs (prepare, evaluate, probe...), beside farm.target: `docker ps` and tests tell them apart.
STAGE_LABEL = "farm.stage"
REMOVE_TRIES = 4
LOG_TAIL_LINES = 40


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


@dataclass(frozen=True, kw_only=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    architecture: str
    size_bytes: int
    labels: Mapping[str, str]


@dataclass(frozen=True, kw_only=True)
class ContainerInfo:
    id: str
    name: str
    image: str
    state: str
    # farm.owner: the controller process that started it (farm/owner.py); None on containers of older farms.
    owner: str | None


@dataclass(frozen=True, kw_only=True)
class Mount:
    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """One hardened, networkless container run."""

    image: str
    command: Sequence[str]
    entrypoint: Sequence[str] | None = None
    mounts: Sequence[Mount] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    platform: str | None = None
    memory: str = "4g"
    pids_limit: int = 512
    cpuset: str | None = None
    gpus: int = 0
    timeout_s: float = 1800.0
    labels: Mapping[str, str] = field(default_factory=dict)
    keep: bool = False


@dataclass(frozen=True, kw_only=True)
class RunResult:
    exit_code: int
    log_tail: str
    oom_killed: bool
    timed_out: bool
    duration_s: float
    # How it thrashed at its memory limit, when farm stopped it for that (farm/backend/thrashing.py).
    thrashed: str | None = None
    # Set when the engine refused to start the container, or it vanished while it ran (removed from outside).
    engine_error: str | None = None

    @classmethod
    def engine_failure(cls, why: str, *, log_tail: str = "", duration_s: float = 0.0) -> RunResult:
        """A run that ended without an exit status of its own: it could not start, or it was removed."""
        return cls(
            exit_code=-1, log_tail=log_tail, oom_killed=False, timed_out=False, duration_s=duration_s, engine_error=why
        )

    @property
    def out_of_memory(self) -> bool:
        return self.oom_killed or self.thrashed is not None

    @property
    def failure(self) -> str | None:
        """Why the container failed, in words, or None when it exited 0."""
        if self.engine_error:
            return self.engine_error
        if self.timed_out:
            return f"timed out after {self.duration_s:.0f} s and was stopped"
        if self.thrashed:
            return f"ran out of memory: {self.thrashed}"
        if self.oom_killed:
            return f"ran out of memory (exit {self.exit_code}): the container hit its memory limit"
        if self.exit_code == 0:
            return None
        if self.exit_code > 128:
            number = self.exit_code - 128
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = f"signal {number}"
            if number == signal.SIGKILL:
                return f"was killed ({name}, exit {self.exit_code}) from outside"
            return f"crashed with {name} (exit {self.exit_code})"
        return f"exited with status {self.exit_code}"


# What the SDK raises when the engine stops answering mid-command (a refused socket, a dropped stream, a 5xx).
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


def engine_lost(doing: str, host: str, exc: BaseException) -> EnvironmentProblem:
    """The one wording of "the engine went away": what farm was doing, where the engine was, and the SDK's words."""
    return EnvironmentProblem(
        f"{doing} failed because the Docker engine at {host} stopped answering ({_first_line(exc)})",
        fix="check that the Docker daemon is running (`farm doctor`) and run farm again",
    )


class Engine:
    """A Docker engine. The client is passed in so tests and other engines (remote hosts) can supply their own."""

    def __init__(self, client: Any, *, host: str, remote: bool = False) -> None:
        self.client = client
        self.host = host
        # A remote engine cannot see the controller's folders: a run's mounts travel as archives through the API
        # into volumes, and what the job writes comes back the same way (see _Volumes).
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
                f"cannot reach a Docker engine at {host} ({_first_line(exc)})",
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
                f"cannot reach the Docker engine at {address} ({_first_line(exc)})",
                fix="start that engine, or check the address and TLS files in targets.toml",
            ) from None
        return cls(client, host=address, remote=True)

    def ship(self, ref: str, to: Engine) -> None:
        """`docker save | docker load`, streamed from this engine into ``to``: an image moves without a registry."""
        for chunk in to.client.api.load_image(self.client.api.get_image(ref)):
            if isinstance(chunk, dict) and chunk.get("error"):
                raise BuildFailed(f"loading {ref} into the engine at {to.host} failed because {chunk['error']}")

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
            _remove(self.client.api, container["Id"])

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
                f"pulling the registry base {ref} for {platform} failed because {_first_line(exc)}",
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

    def run(self, spec: RunSpec, *, on_line: LineSink | None = None) -> RunResult:
        """Run one container to completion and remove it, even on Ctrl-C.

        What goes wrong with this container (it cannot start, it is removed from outside) is its result; losing the
        engine itself is an EnvironmentProblem, since no other container can run either.
        """
        try:
            return self._run(spec, on_line)
        except ENGINE_ERRORS as exc:
            raise engine_lost(f"running a container of {spec.image}", self.host, exc) from None

    def _run(self, spec: RunSpec, on_line: LineSink | None) -> RunResult:
        with contextlib.ExitStack() as stack:
            try:
                container, volumes = stack.enter_context(self._container(spec))
                started = time.monotonic()
                container.start()
            except docker.errors.APIError as exc:
                # A missing image, or the NVIDIA runtime's "driver/library version mismatch": this target's
                # failure alone.
                return RunResult.engine_failure(
                    f"could not be started: {_first_line(exc)}", log_tail=str(exc.explanation or exc)
                )
            reader = _LogReader(container, on_line)
            reader.start()
            memory = _MemoryWatch(container, started)
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
    def _container(self, spec: RunSpec) -> Iterator[tuple[Any, _Volumes | None]]:
        user = self._user()
        device_requests = [docker.types.DeviceRequest(count=spec.gpus, capabilities=[["gpu"]])] if spec.gpus else None
        with contextlib.ExitStack() as stack:
            volumes = stack.enter_context(_Volumes(self.client.api, spec)) if self.remote else None
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
                        _remove(self.client.api, container.id)
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
        _remove(self.client.api, container)

    def farm_volumes(self) -> list[tuple[str, str | None]]:
        """The volumes a remote engine's runs carry their files in (_Volumes), with the process that owns each."""
        found = self.client.api.volumes(filters={"label": RUN_LABEL}).get("Volumes") or []
        return [(str(v["Name"]), (v.get("Labels") or {}).get(OWNER_LABEL)) for v in found]

    def remove_volume(self, volume: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_volume(volume, force=True)


class LogLines:
    """A job's output, arriving as byte chunks, into lines: each goes to the sink as it completes, and the last
    LOG_TAIL_LINES are kept for failure reports. Backends feed it from whatever streams their logs."""

    def __init__(self, sink: LineSink | None) -> None:
        self._sink = sink
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def feed(self, chunks: Iterable[bytes]) -> None:
        pending = b""
        try:
            for chunk in chunks:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._add(raw.decode("utf-8", "replace"))
            if pending:
                self._add(pending.decode("utf-8", "replace"))
        except Exception:  # the container (or pod) went away under us; the tail we have is what there is
            return

    def _add(self, line: str) -> None:
        with self._lock:
            self._lines = [*self._lines, line][-LOG_TAIL_LINES:]
        if self._sink:
            self._sink(line)

    def tail(self) -> str:
        with self._lock:
            return "\n".join(self._lines)


class _LogReader(threading.Thread):
    """Streams a container's output line by line to a sink, and keeps the tail for failure reports."""

    def __init__(self, container: Any, sink: LineSink | None) -> None:
        super().__init__(daemon=True)
        self._container = container
        self._lines = LogLines(sink)

    def run(self) -> None:
        self._lines.feed(self._container.logs(stream=True, follow=True))

    def tail(self) -> str:
        return self._lines.tail()


class _MemoryWatch(threading.Thread):
    """Follows a container's memory counters (one sample a second, as the engine streams them) and sets
    ``thrashed`` once it thrashes at its limit, for the run loop to stop it (farm/backend/thrashing.py)."""

    def __init__(self, container: Any, started: float) -> None:
        super().__init__(daemon=True)
        self._container = container
        self._since = started
        self.thrashed: str | None = None

    def run(self) -> None:
        watch = ThrashWatch()
        try:
            for stats in self._container.client.api.stats(self._container.id, stream=True, decode=True):
                sample = sample_of(stats, time.monotonic() - self._since)
                if sample is not None and (found := watch.feed(sample)) is not None:
                    self.thrashed = found
                    return
        except Exception:  # the container ended or the engine went away: the run loop reports either
            return


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


def _remove(api: Any, container: str) -> None:
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


_CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@contextmanager
def _env_without(names: Sequence[str]) -> Iterator[None]:
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# Where a stager container mounts the volume it fills: put_archive then extracts the folder's own entry too, which
# sets the mode of the volume's root (world-writable for outputs, since the job runs as nobody).
_STAGE = "/farm-stage"
_STAGED = "v"


class _Volumes:
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

    def __enter__(self) -> _Volumes:
        try:
            for folder, mounts in _by_folder(self._spec.mounts).items():
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
            _remove(self._api, stager["Id"])

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
                        _extract_under(archive, PurePosixPath(mount.target).name, mount.source)
            except (docker.errors.APIError, requests.exceptions.RequestException, tarfile.TarError, OSError) as exc:
                return f"{mount.target}: {_first_line(exc)}"
        return None


def _extract_under(archive: tarfile.TarFile, top: str, folder: Path) -> None:
    """The members under ``top/`` into ``folder``, without the ``top`` component."""
    for member in archive.getmembers():
        parts = PurePosixPath(member.name).parts
        if len(parts) < 2 or parts[0] != top or not (member.isfile() or member.isdir()):
            continue
        member.name = str(PurePosixPath(*parts[1:]))
        archive.extract(member, folder, filter="data")


def _by_folder(mounts: Sequence[Mount]) -> dict[str, list[Mount]]:
    """Mounts by the container folder their volume is mounted at: a folder's own, or a file's parent."""
    folders: dict[str, list[Mount]] = {}
    for mount in mounts:
        folder = mount.target if mount.source.is_dir() else str(PurePosixPath(mount.target).parent)
        folders.setdefault(folder, []).append(mount)
    return folders
