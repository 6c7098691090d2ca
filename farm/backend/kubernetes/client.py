"""Talking to a cluster's API: the client, imported on first use, its objects as plain data, its failures in farm's
words."""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.errors import EnvironmentProblem, one_line

# Seconds for each API call (connect, read).
REQUEST_TIMEOUT = (10, 60)


def _module(name: str) -> Any:
    """A module of the kubernetes client, imported on first use (and typed Any: the client is generated code)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise EnvironmentProblem(
            "farm's Kubernetes backend needs the kubernetes client, which is not installed",
            fix="reinstall farm (scripts/setup), or `pip install kubernetes`",
        ) from None


@dataclass(frozen=True, kw_only=True)
class Clients:
    """The API objects the backend uses; tests pass their own."""

    core: Any
    batch: Any
    networking: Any
    # Streams exec sessions: kubernetes.stream.stream, or a test's stand-in with its signature.
    stream: Any = None
    where: str = "kubernetes"


def connect(*, context: str | None = None, env: Mapping[str, str] | None = None) -> Clients:
    """The cluster's API from a kubeconfig ($KUBECONFIG, else ~/.kube/config; ``context`` or its current one), or
    from inside a pod (the service account); EnvironmentProblem, one line, when neither is there or usable.
    Nothing is asked of the cluster yet: ``probe`` is the first call."""
    env = os.environ if env is None else env
    config = _module("kubernetes.config")
    client = _module("kubernetes.client")
    configuration = client.Configuration()
    home = Path(env.get("HOME") or Path.home())
    kubeconfig = env.get("KUBECONFIG") or str(home / ".kube" / "config")
    found = any(Path(p).expanduser().is_file() for p in kubeconfig.split(os.pathsep) if p)
    try:
        if found:
            config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration, persist_config=False
            )
            where = f"kubernetes: {context or _current_context(config, kubeconfig)}"
        elif env.get("KUBERNETES_SERVICE_HOST") and context is None:
            loader = _module("kubernetes.config.incluster_config")
            loader.InClusterConfigLoader(
                token_filename=loader.SERVICE_TOKEN_FILENAME, cert_filename=loader.SERVICE_CERT_FILENAME, environ=env
            ).load_and_set(configuration)
            where = "kubernetes: in-cluster"
        else:
            raise EnvironmentProblem(
                f"no Kubernetes cluster is configured: no kubeconfig at {kubeconfig} and farm is not running in a pod",
                fix="point KUBECONFIG at the cluster's kubeconfig (kind and minikube write ~/.kube/config), or set "
                "kube_context in targets.toml",
            )
    except EnvironmentProblem:
        raise
    except Exception as exc:  # ConfigException, and what a broken file raises on its way (YAML, missing cert files)
        raise EnvironmentProblem(
            f"the kubeconfig {kubeconfig} cannot be used ({one_line(exc)})",
            fix="check it with `kubectl config view`, and kube_context in targets.toml",
        ) from None
    # An API server that is down must fail the probe in seconds, not after urllib3's retries.
    configuration.retries = 1
    api = client.ApiClient(configuration=configuration)
    return Clients(
        core=client.CoreV1Api(api),
        batch=client.BatchV1Api(api),
        networking=client.NetworkingV1Api(api),
        stream=_module("kubernetes.stream").stream,
        where=f"{where} ({configuration.host})",
    )


def _current_context(config: Any, kubeconfig: str) -> str:
    with contextlib.suppress(Exception):
        _, current = config.list_kube_config_contexts(config_file=kubeconfig)
        return str(current["name"])
    return "current context"


def plain(obj: Any) -> Any:
    """An API object as the API's JSON (camelCase keys); dicts pass through, so fakes may be plain data."""
    if obj is None or isinstance(obj, dict | list | str | int | float | bool):
        return obj
    return _serializer().sanitize_for_serialization(obj)


@functools.cache
def _serializer() -> Any:
    # Serializing asks nothing of a cluster: one client, never connected, serves every call.
    return _module("kubernetes.client").ApiClient()


def api_failure(doing: str, where: str, exc: BaseException) -> EnvironmentProblem:
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return EnvironmentProblem(
            f"{doing} failed because {where} refused it ({status} {getattr(exc, 'reason', '')})".rstrip(),
            fix="farm needs to list nodes, and in its namespace to create, read and delete jobs, pods, pods/log, "
            "pods/exec and networkpolicies (see docs/kubernetes.md)",
        )
    reason = getattr(exc, "reason", None) or exc
    return EnvironmentProblem(
        f"{doing} failed because {where} did not answer ({one_line(reason)})",
        fix="check that the cluster is up (`kubectl get nodes`) and run farm again",
    )


def is_api_error(exc: BaseException) -> bool:
    """What the client raises when the cluster is down or refuses: its ApiException (exec sessions' too), urllib3's
    errors, and socket errors that escaped them."""
    return type(exc).__module__.split(".")[0] in ("kubernetes", "urllib3", "websocket") or isinstance(
        exc, ConnectionError | TimeoutError
    )


def delete_job(clients: Clients, namespace: str, name: str) -> None:
    with contextlib.suppress(Exception):  # gone already, or the cluster is: the TTL and sweep remove it later
        clients.batch.delete_namespaced_job(
            name, namespace, propagation_policy="Background", grace_period_seconds=0, _request_timeout=REQUEST_TIMEOUT
        )
