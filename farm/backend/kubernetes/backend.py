"""A cluster as a Backend: its nodes probed from their labels, images pushed to its registry, one Job per run."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from farm.backend import imagebuild
from farm.backend.base import Reach
from farm.backend.engine import RUN_LABEL, STAGE_LABEL, Engine, RunResult, RunSpec
from farm.backend.kubernetes.client import (
    REQUEST_TIMEOUT,
    Clients,
    api_failure,
    connect,
    delete_job,
    is_api_error,
    plain,
)
from farm.backend.kubernetes.jobrun import JobRun
from farm.backend.kubernetes.manifests import DEFAULT_CPUS, job_manifests, job_name
from farm.backend.kubernetes.placement import TARGET_LABEL, ClusterInfo, cluster_info, host_for, node_facts, place
from farm.errors import BuildFailed, ConfigError, EnvironmentProblem, one_line
from farm.host.files import LineSink
from farm.host.owner import OWNER_LABEL, is_gone
from farm.host.probe import HostInfo, Placement
from farm.images import content as images
from farm.targets.config import PLATFORM_ARCH, Config, Target


class KubernetesBackend:
    """Jobs on a Kubernetes cluster, images pushed to ``registry`` from the controller's Docker engine."""

    def __init__(
        self,
        *,
        registry: str,
        namespace: str = "default",
        context: str | None = None,
        engine: Engine | None = None,
        targets: Sequence[Target] = (),
        clients: Clients | None = None,
        env: Mapping[str, str] | None = None,
        cpus: int = DEFAULT_CPUS,
        pull_secret: str | None = None,
    ) -> None:
        self.registry = registry.rstrip("/")
        self.namespace = namespace
        self.context = context
        # The controller's engine: builds the images, and pushes them.
        self.engine = engine
        self._targets = {t.name: t for t in targets}
        self._clients = clients
        self._env = env
        self.cpus = cpus
        self.pull_secret = pull_secret

    @property
    def clients(self) -> Clients:
        if self._clients is None:
            self._clients = connect(context=self.context, env=self._env)
        return self._clients

    @property
    def reach(self) -> Reach:
        return Reach(
            kind="kubernetes", where=f"kubernetes: {self.context or 'current context'}/{self.namespace}", remote=True
        )

    # --- what is there ---------------------------------------------------------------------------------------

    def place(self, target: Target, host: HostInfo) -> tuple[Placement, HostInfo]:
        return place(target, host), host_for(target, host)

    def probe(self) -> ClusterInfo:
        """The cluster's nodes, from their labels; EnvironmentProblem (one line) when the cluster is unreachable."""
        clients = self.clients
        try:
            listed = clients.core.list_node(_request_timeout=REQUEST_TIMEOUT)
        except Exception as exc:
            if is_api_error(exc):
                raise api_failure("listing the cluster's nodes", clients.where, exc) from None
            raise
        nodes = [node_facts(plain(item)) for item in getattr(listed, "items", None) or []]
        return cluster_info(nodes, where=f"{self.reach.where}")

    def remote_ref(self, tag: str) -> str:
        """The registry's name of a local image tag: ``farm/<target>:<hash>`` -> ``<registry>/farm-<target>:<hash>``."""
        if tag.startswith(self.registry + "/"):
            return tag
        repository, _, version = tag.rpartition(":")
        return f"{self.registry}/{repository.replace('/', '-')}:{version}"

    def image_ref(self, tag: str) -> str | None:
        ref = self.remote_ref(tag)
        return ref if self._in_registry(ref) else None

    def _in_registry(self, ref: str) -> bool:
        if self.engine is None:
            return False
        try:
            self.engine.client.api.inspect_distribution(ref)
        except Exception:  # not there, no such repository, not allowed: a push will tell which
            return False
        return True

    def ensure_image(
        self, config: Config, target: Target, *, on_line: LineSink, on_stage: LineSink
    ) -> images.BuiltImage:
        """Built or found on the controller's engine, then pushed to the registry unless it has that content."""
        if self.engine is None:
            raise EnvironmentProblem(
                f"pushing the image of {target.name} to {self.registry} needs a Docker engine",
                fix="start the Docker daemon on the controller, or set DOCKER_HOST",
            )
        started = time.monotonic()
        built = imagebuild.ensure_image(self.engine, config, target, on_line=on_line, on_stage=on_stage)
        ref = self.remote_ref(built.tag)
        if self._in_registry(ref):
            return images.BuiltImage(
                target=target.name,
                tag=built.tag,
                size_bytes=built.size_bytes,
                built_now=built.built_now,
                seconds=time.monotonic() - started,
                origin=built.origin if built.built_now else "cached",
            )
        on_stage(f"push to {self.registry}")
        self._push(built.tag, ref, on_line)
        return images.BuiltImage(
            target=target.name,
            tag=built.tag,
            size_bytes=built.size_bytes,
            built_now=built.built_now,
            seconds=time.monotonic() - started,
            origin="built" if built.built_now else "shipped",
        )

    def _push(self, tag: str, ref: str, on_line: LineSink) -> None:
        assert self.engine is not None
        repository, _, version = ref.rpartition(":")
        api = self.engine.client.api
        try:
            api.tag(tag, repository, version)
            for chunk in api.push(repository, tag=version, stream=True, decode=True):
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise BuildFailed(
                        f"pushing {ref} failed because {one_line(chunk['error'])}",
                        fix=f"check that the engine can push to {self.registry} (`docker login`, and "
                        "an insecure-registries entry for a plain-HTTP registry)",
                    )
                if isinstance(chunk, dict) and chunk.get("status") and not chunk.get("progressDetail"):
                    on_line(f"{chunk.get('id', '')} {chunk['status']}".strip())
        except BuildFailed:
            raise
        except Exception as exc:
            raise BuildFailed(
                f"pushing {ref} failed because {one_line(exc)}",
                fix=f"check that {self.registry} is reachable from the controller's engine",
            ) from None

    # --- jobs ------------------------------------------------------------------------------------------------

    def target_for(self, spec: RunSpec) -> Target:
        """The spec's target (its farm.target label), or one of its platform with nothing but an architecture."""
        name = spec.labels.get(TARGET_LABEL)
        if name and name in self._targets:
            return self._targets[name]
        platform = spec.platform if spec.platform in PLATFORM_ARCH else "linux/amd64"
        return Target(name=name or "job", platform=platform, gpus=spec.gpus)

    def manifests(self, spec: RunSpec, *, name: str | None = None) -> list[dict[str, Any]]:
        """What ``run`` applies for ``spec``; no cluster is asked (``farm matrix --dry-run``)."""
        target = self.target_for(spec)
        return job_manifests(
            spec,
            target,
            name=name or job_name(target.name, spec.labels.get(STAGE_LABEL)),
            namespace=self.namespace,
            image=self.remote_ref(spec.image),
            cpus=self.cpus,
            pull_secret=self.pull_secret,
        )

    def run(self, spec: RunSpec, *, on_line: LineSink | None = None) -> RunResult:
        """Create the Job, send its inputs, wait for its end, bring its results back, delete it (also on Ctrl-C)."""
        manifests = self.manifests(spec)
        name = str(manifests[0]["metadata"]["name"])
        clients = self.clients
        try:
            return JobRun(clients, self.namespace, name, spec, on_line).run(manifests)
        except Exception as exc:
            if is_api_error(exc):
                raise api_failure(f"running the Kubernetes Job {self.namespace}/{name}", clients.where, exc) from None
            raise

    def sweep(self) -> list[str]:
        """Jobs (and with them their pods and NetworkPolicies) of farm processes on this machine that are gone."""
        clients = self.clients
        removed = []
        try:
            listed = clients.batch.list_namespaced_job(
                self.namespace, label_selector=RUN_LABEL, _request_timeout=REQUEST_TIMEOUT
            )
        except Exception as exc:
            if is_api_error(exc):
                raise api_failure("listing farm's Kubernetes Jobs", clients.where, exc) from None
            raise
        for item in getattr(listed, "items", None) or []:
            job = plain(item)
            metadata = job.get("metadata") or {}
            owner = (metadata.get("annotations") or {}).get(OWNER_LABEL)
            if owner is not None and is_gone(owner):
                delete_job(clients, self.namespace, str(metadata["name"]))
                removed.append(f"Kubernetes Job {self.namespace}/{metadata['name']} of a farm process that is gone")
        return removed


def open_kubernetes(target: Target, config: Config, local: Engine) -> KubernetesBackend:
    """The backend of a ``engine = "kubernetes"`` target (targets.toml's registry, namespace and kube_context)."""
    if not target.registry:
        raise ConfigError(f"{config.source}: [targets.{target.name}]: a kubernetes target needs a registry")
    backend = KubernetesBackend(
        registry=target.registry,
        namespace=target.namespace,
        context=target.kube_context,
        engine=local,
        targets=config.targets,
    )
    _ = backend.clients  # a missing or broken kubeconfig is reported now, with the target that needs it
    return backend
