"""The objects farm applies for one job (a Job and its NetworkPolicy), built without asking a cluster."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from farm.backend.engine import RUN_LABEL, Mount, RunSpec
from farm.backend.kubernetes.placement import GPU_RESOURCE, TARGET_LABEL, node_affinity, node_selector
from farm.backend.runner import PYTHON
from farm.host.owner import OWNER_LABEL, this_process
from farm.targets.config import Target

# How long the init container waits for the controller's inputs, and the collector for the controller after the
# job's budget: a controller that died leaves a pod that ends on its own.
RECEIVE_WAIT_S = 600
COLLECT_WAIT_S = 600
# Time to schedule, pull and start, counted into the Job's backstop deadline.
START_WAIT_S = 900
TTL_AFTER_FINISHED_S = 600
TMP_SIZE = "1Gi"
DEFAULT_CPUS = 2
# The receive and collect containers only copy files.
_HELPER_RESOURCES = {"cpu": "250m", "memory": "256Mi"}


INPUTS = "/farm/inputs"
OUTPUTS = "/farm/outputs"
CONTROL = "/farm/control"
RECEIVED = f"{INPUTS}/.farm-received"
COLLECTED = f"{CONTROL}/collected"

# A Kubernetes label value: at most 63 characters, alphanumerics with - _ . inside (it may be empty).
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# A label key: an optional DNS-subdomain prefix and "/", and a name like a value's (not empty).
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_MEMORY_RE = re.compile(r"^(?P<number>[0-9]+)(?P<unit>[bkmg]?)$")
_MEMORY_UNITS = {"b": "", "": "", "k": "Ki", "m": "Mi", "g": "Gi"}


def memory_quantity(memory: str) -> str:
    """Docker's spelling of a memory size ("4g", "512m") as a Kubernetes quantity ("4Gi", "512Mi")."""
    found = _MEMORY_RE.match(memory.strip().lower())
    if found is None:
        raise ValueError(f"memory {memory!r} is not a number and a unit (b, k, m, g)")
    return f"{int(found['number'])}{_MEMORY_UNITS[found['unit']]}"


def label_value(text: str) -> str:
    """``text`` as a valid label value: itself when it is one, else a readable prefix and a digest of the whole."""
    if _LABEL_VALUE_RE.match(text) and len(text) <= 63:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:52].strip("-_.")
    return f"{readable}-{digest}" if readable else digest


def job_name(target: str, stage: str | None = None) -> str:
    """A fresh Job name: ``farm-<target>[-<stage>]-<random>``, a DNS label of at most 63 characters."""
    token = secrets.token_hex(4)
    middle = re.sub(r"[^a-z0-9-]+", "-", "-".join(p for p in (target, stage) if p).lower()).strip("-")
    return f"farm-{middle[: 63 - len('farm--') - len(token)].strip('-')}-{token}"


def _check_label_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if not _LABEL_NAME_RE.match(name) or len(prefix) > 253:
        raise ValueError(f"{key!r} is not a valid Kubernetes label key")


def _labels(spec: RunSpec, target: Target, name: str, owner: str) -> tuple[dict[str, str], dict[str, str]]:
    """farm's labels (values made label-safe) and the annotations that keep what did not fit."""
    wanted = {RUN_LABEL: name, **spec.labels, TARGET_LABEL: target.name, OWNER_LABEL: owner}
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {OWNER_LABEL: owner}
    for key, value in wanted.items():
        _check_label_key(key)
        labels[key] = label_value(value)
        if labels[key] != value:
            annotations[key] = value
    return labels, annotations


def _container(
    name: str, image: str, command: list[str], resources: Mapping[str, Any], mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    """One of the pod's containers, hardened as every one is, with requests equal to limits."""
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": _security_context(),
        "volumeMounts": mounts,
    }


def _security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "runAsGroup": 65534,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _quantity_of(size: int) -> str:
    """A size limit for an emptyDir that holds ``size`` bytes: rounded up to MiB, with room for tar's overhead."""
    return f"{(size * 11 // 10 >> 20) + 64}Mi"


def _cpus(spec: RunSpec, cpus: int) -> str:
    if spec.cpuset:
        count = 0
        for part in spec.cpuset.split(","):
            low, _, high = part.partition("-")
            count += int(high or low) - int(low) + 1
        return str(count)
    return str(cpus)


def input_mounts(spec: RunSpec) -> list[tuple[str, Mount]]:
    return [(f"m{i}", m) for i, m in enumerate(spec.mounts) if m.read_only]


def output_mounts(spec: RunSpec) -> list[tuple[str, Mount]]:
    return [(f"out-{i}", m) for i, m in enumerate(spec.mounts) if not m.read_only]


def job_manifests(
    spec: RunSpec,
    target: Target,
    *,
    name: str,
    namespace: str,
    image: str,
    owner: str | None = None,
    cpus: int = DEFAULT_CPUS,
    pull_secret: str | None = None,
) -> list[dict[str, Any]]:
    """The objects farm applies for one job, in order: the Job, then the NetworkPolicy that cuts its pod off the
    network (made owned by the Job once the Job exists, see KubernetesBackend). ``image`` is the registry's name of
    ``spec.image``; ``owner`` the controller process (farm/host/owner.py), this one by default."""
    owner = owner or this_process()
    labels, annotations = _labels(spec, target, name, owner)
    memory = memory_quantity(spec.memory)
    inputs, outputs = input_mounts(spec), output_mounts(spec)
    argv = [*(spec.entrypoint or ()), *spec.command]
    job_resources: dict[str, Any] = {"cpu": _cpus(spec, cpus), "memory": memory}
    if spec.gpus:
        job_resources[GPU_RESOURCE] = str(spec.gpus)
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    mounts += [{"name": "inputs", "mountPath": m.target, "subPath": part, "readOnly": True} for part, m in inputs]
    mounts += [{"name": volume, "mountPath": m.target} for volume, m in outputs]
    job_container = _container(
        "job", image, [PYTHON, "-m", "farm.job.pod.budget", f"{spec.timeout_s:.0f}", *argv], job_resources, mounts
    )
    job_container["env"] = [{"name": k, "value": v} for k, v in sorted(spec.environment.items())]
    receive = _container(
        "receive",
        image,
        [PYTHON, "-m", "farm.job.pod.wait", "inputs", RECEIVED, str(RECEIVE_WAIT_S)],
        _HELPER_RESOURCES,
        [{"name": "inputs", "mountPath": INPUTS}, {"name": "tmp", "mountPath": "/tmp"}],
    )
    collect_wait = int(spec.timeout_s) + COLLECT_WAIT_S
    collect = _container(
        "collect",
        image,
        [PYTHON, "-m", "farm.job.pod.wait", "results", COLLECTED, str(collect_wait)],
        _HELPER_RESOURCES,
        [
            {"name": "control", "mountPath": CONTROL},
            {"name": "tmp", "mountPath": "/tmp"},
            *({"name": volume, "mountPath": f"{OUTPUTS}/{volume}", "readOnly": True} for volume, _ in outputs),
        ],
    )
    input_bytes = sum(_size_of(m.source) for _, m in inputs)
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
        {"name": "control", "emptyDir": {"sizeLimit": "1Mi"}},
        {"name": "inputs", "emptyDir": {"sizeLimit": _quantity_of(input_bytes)}},
        # Results hold a model's size or a few (optimized.onnx, fp32 outputs): room for several times the inputs.
        *(
            {"name": volume, "emptyDir": {"sizeLimit": _quantity_of(max(4 * input_bytes, 2 << 30))}}
            for volume, _ in outputs
        ),
    ]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 5,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "runAsGroup": 65534,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "nodeSelector": node_selector(target),
        "initContainers": [receive],
        "containers": [job_container, collect],
        "volumes": volumes,
    }
    affinity = node_affinity(target)
    if affinity is not None:
        pod["affinity"] = affinity
    if spec.gpus:
        # Clusters taint their GPU nodes so that only pods that ask for a GPU land there.
        pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    if pull_secret:
        pod["imagePullSecrets"] = [{"name": pull_secret}]
    metadata = {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": int(spec.timeout_s) + START_WAIT_S + RECEIVE_WAIT_S + COLLECT_WAIT_S,
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
            "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": pod},
        },
    }
    network = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels), "annotations": dict(annotations)},
        # No rules under either type: nothing in, nothing out.
        "spec": {"podSelector": {"matchLabels": {RUN_LABEL: name}}, "policyTypes": ["Ingress", "Egress"]},
    }
    return [job, network]


def write_dry_run(manifests: Sequence[Mapping[str, Any]], folder: Path) -> Path:
    """Write one job's objects as one YAML file (``<job name>.yaml``, a document per object) for ``kubectl``."""
    import yaml  # only a dry run writes YAML

    name = next(str(m["metadata"]["name"]) for m in manifests if m.get("kind") == "Job")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all([dict(m) for m in manifests], sort_keys=False, width=120))
    return path
