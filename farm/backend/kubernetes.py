"""A Kubernetes cluster as a backend: each job is a Job, placed by the labels the cluster's nodes already carry.

Placement. ``kubernetes.io/arch`` picks the architecture, and Node Feature Discovery's
``feature.node.kubernetes.io/cpu-cpuid.<FLAG>`` labels pick the ISA tier: a target's ``cpu_features`` become a
nodeSelector (each label ``"true"``), and its ``cpu_excludes`` become node affinity ``NotIn ["true"]`` requirements,
since a nodeSelector cannot say "not": the AVX2 tier never lands on an AVX-512 node, the VNNI tier never on an AMX
one. A GPU target asks for ``nvidia.com/gpu`` (the device plugin's resource) and tolerates the taint clusters put on
GPU nodes. There is no masking and no QEMU on a cluster: a target runs natively on a node of its tier, or not at all.

Images. The target's image is built (or found) on the controller's Docker engine, as for local targets, and pushed
to the registry named in targets.toml as ``<registry>/farm-<target>:<content hash>``; the tag is the content, so a
push happens once per content and ``IfNotPresent`` is always right.

Inputs and results travel through the API server only (no shared volume, no node access, no extra service):

- Inputs: an init container (``receive``, the target's own image and Python) waits until the controller has
  streamed a tar of the job's read-only mounts into an emptyDir through ``pods/exec`` (stdin, length-framed, so it
  works on the v4 and v5 exec protocols alike); the job container then mounts each part read-only (subPath). Not a
  ConfigMap or Secret: those stop at 1 MiB (a model and its artifacts are usually more), and they would keep the
  user's model in etcd, readable by anyone who may read ConfigMaps there, after the job is gone.
- Results: a second container (``collect``) holds the job's writable emptyDirs and waits; once the job container has
  ended, for whatever reason (exit, crash, its budget, the OOM killer), the controller execs a tar of them out of
  ``collect`` and unpacks it into the mounts' source folders. Not the pod's log: the kubelet rotates logs (10 MiB by
  default) and results hold a model's size (optimized.onnx); and a separate container, unlike a tar written by the
  job itself at its end, survives the job's own OOM kill (each container is its own cgroup), so partial results come
  back as they do from a local container.
- The budget: Kubernetes has no per-container deadline, so the job container's command is wrapped in a few lines of
  the image's Python that stop the job at its budget (exit 124, reported as timed out) while ``collect`` keeps its
  results. The Job's ``activeDeadlineSeconds`` (budget plus time to start, receive and collect) is the backstop for a
  controller that died; ``ttlSecondsAfterFinished`` and ``sweep`` remove what is left.

Hardening, as for local containers: every container runs as 65534 (runAsNonRoot), with a read-only root filesystem,
no privilege escalation, every capability dropped, not privileged, the RuntimeDefault seccomp profile, memory and
CPU limits equal to requests, ``/tmp`` an emptyDir with a size limit, no service account token, no service links,
and a NetworkPolicy that denies all ingress and egress of the job's pod (``network_mode="none"``; enforced where
the cluster's network plugin enforces NetworkPolicy). The pod passes the "restricted" Pod Security Standard. What
Kubernetes cannot set per pod: a pids limit (the kubelet's ``podPidsLimit`` applies).

Everything farm creates carries ``farm.run`` (the Job's name), ``farm.target`` and ``farm.owner`` (a label-safe
digest; the controller process itself, as farm/owner.py writes it, is the ``farm.owner`` annotation). The
NetworkPolicy is owned by its Job, so deleting the Job, by farm, by the TTL controller or by hand, removes it too.

The ``kubernetes`` client is imported only inside the functions that talk to a cluster, so that ``farm`` starts as
fast without it; building manifests needs no client.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import io
import os
import re
import secrets
import struct
import tarfile
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from farm import images
from farm.backend import imagebuild
from farm.backend.base import Reach
from farm.backend.engine import RUN_LABEL, STAGE_LABEL, Engine, LogLines, Mount, RunResult, RunSpec
from farm.backend.runner import PYTHON
from farm.config import PLATFORM_ARCH, Config, Target
from farm.errors import BuildFailed, ConfigError, EnvironmentProblem, one_line
from farm.files import LineSink
from farm.host import HostInfo, Placement
from farm.owner import OWNER_LABEL, is_gone, this_process

TARGET_LABEL = "farm.target"
ARCH_LABEL = "kubernetes.io/arch"
NFD_CPUID_PREFIX = "feature.node.kubernetes.io/cpu-cpuid."
NFD_MODEL_PREFIX = "feature.node.kubernetes.io/cpu-model."
GPU_RESOURCE = "nvidia.com/gpu"
# The architecture as Kubernetes names it (GOARCH), per farm platform.
KUBE_ARCH: Mapping[str, str] = {"linux/amd64": "amd64", "linux/arm64": "arm64"}
_MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}

# A CPU flag as /proc/cpuinfo spells it (the names targets.toml uses) -> the flag as Node Feature Discovery labels
# it, ``feature.node.kubernetes.io/cpu-cpuid.<NAME>``, per architecture. NFD takes x86 names from
# github.com/klauspost/cpuid and arm64 names from the kernel's hwcaps (NFD's source/cpu/cpuid_linux_arm64.go).
# NFD does not label, by default, BMI1, BMI2, F16C, POPCNT and the SSE family (its default blacklist): a target
# that needs one of them cannot be placed by label, and farm says so rather than drop the requirement. AVX10 is
# labelled by its version attribute (AVX10_VERSION, any value) rather than as a flag.
NFD_CPUID: Mapping[str, Mapping[str, str]] = {
    "amd64": {
        "avx": "AVX", "avx2": "AVX2", "fma": "FMA3", "aes": "AESNI", "vaes": "VAES", "gfni": "GFNI",
        "vpclmulqdq": "VPCLMULQDQ", "sha_ni": "SHA", "movbe": "MOVBE",
        "avx512f": "AVX512F", "avx512dq": "AVX512DQ", "avx512cd": "AVX512CD", "avx512bw": "AVX512BW",
        "avx512vl": "AVX512VL", "avx512ifma": "AVX512IFMA", "avx512vbmi": "AVX512VBMI",
        "avx512_vbmi2": "AVX512VBMI2", "avx512_vnni": "AVX512VNNI", "avx512_bitalg": "AVX512BITALG",
        "avx512_vpopcntdq": "AVX512VPOPCNTDQ", "avx512_bf16": "AVX512BF16", "avx512_fp16": "AVX512FP16",
        "avx512_vp2intersect": "AVX512VP2INTERSECT", "avx512pf": "AVX512PF", "avx512er": "AVX512ER",
        "avx_vnni": "AVXVNNI", "avx_vnni_int8": "AVXVNNIINT8", "avx_ifma": "AVXIFMA",
        "amx_tile": "AMXTILE", "amx_int8": "AMXINT8", "amx_bf16": "AMXBF16", "amx_fp16": "AMXFP16",
        "avx10": "AVX10_VERSION",
    },
    "arm64": {
        "asimd": "ASIMD", "asimddp": "ASIMDDP", "asimdhp": "ASIMDHP", "asimdfhm": "ASIMDFHM", "fphp": "FPHP",
        "aes": "AES", "sve": "SVE", "sve2": "SVE2", "i8mm": "I8MM", "bf16": "BF16", "sme": "SME",
    },
}  # fmt: skip
# NFD labels that carry a value (an attribute) rather than "true": present or absent is all placement asks.
_NFD_ATTRIBUTES = frozenset({"AVX10_VERSION"})

# How long a job may wait for a node (unschedulable) before it fails rather than wait for ever; image pulls are
# not counted (a GPU image takes minutes), only their failures (back-off, an invalid name).
SCHEDULE_WAIT_S = 300.0
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
_TIMED_OUT = 124
# Seconds for each API call (connect, read); a watch-like poll asks every second.
_REQUEST_TIMEOUT = (10, 60)
_POLL_S = 1.0
# Bytes per websocket frame of an exec session's stdin.
_CHUNK = 256 << 10

_IN = "/farm/inputs"
_OUT = "/farm/outputs"
_CONTROL = "/farm/control"
_RECEIVED = f"{_IN}/.farm-received"
_COLLECTED = f"{_CONTROL}/collected"

# The job container's command: run the job, stop it at its budget (exit 124), exit with its status as Docker
# reports one (128 + signal). stdlib only, in the target image's own Python.
_RUN_WITH_BUDGET = """\
import signal, subprocess, sys
budget, argv = float(sys.argv[1]), sys.argv[2:]
child = subprocess.Popen(argv)
signal.signal(signal.SIGTERM, lambda *_: child.terminate())
try:
    code = child.wait(timeout=budget)
except subprocess.TimeoutExpired:
    child.kill()
    child.wait()
    print(f"farm: the job ran past its budget of {budget:.0f} s and was stopped", file=sys.stderr, flush=True)
    sys.exit(124)
sys.exit(code if code >= 0 else 128 - code)
"""
# The init container: wait for the inputs the controller streams in (_UNPACK), or give up.
_RECEIVE_WAIT = """\
import os, sys, time
marker, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while not os.path.exists(marker):
    if time.monotonic() > deadline:
        sys.exit("farm: the controller sent no inputs in time")
    time.sleep(0.2)
"""
# Exec'd in the init container: an 8-byte big-endian length, then that many bytes of tar, unpacked under argv[1].
_UNPACK = """\
import os, struct, sys, tarfile
source = sys.stdin.buffer
def exactly(n):
    data = b""
    while len(data) < n:
        more = source.read(n - len(data))
        if not more:
            sys.exit("farm: the inputs ended early")
        data += more
    return data
class Framed:
    def __init__(self, size):
        self.left = size
    def read(self, n=-1):
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = exactly(n) if n else b""
        self.left -= len(data)
        return data
size = struct.unpack(">Q", exactly(8))[0]
options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
with tarfile.open(fileobj=Framed(size), mode="r|") as archive:
    archive.extractall(sys.argv[1], **options)
open(sys.argv[2], "w").close()
print("farm-received", size, flush=True)
"""
# The collector: hold the job's outputs until the controller has taken them, or give up.
_COLLECT_WAIT = _RECEIVE_WAIT.replace("sent no inputs", "took no results")
# Exec'd in the collector: a tar of the given NAME=FOLDER pairs on stdout, its length on stderr, then done.
_PACK = """\
import os, sys, tarfile
class Counted:
    def __init__(self, out):
        self.out, self.size = out, 0
    def write(self, data):
        self.out.write(data)
        self.size += len(data)
        return len(data)
    def flush(self):
        self.out.flush()
sink = Counted(sys.stdout.buffer)
with tarfile.open(fileobj=sink, mode="w|") as archive:
    for pair in sys.argv[2:]:
        name, folder = pair.split("=", 1)
        archive.add(folder, arcname=name)
sink.flush()
open(sys.argv[1], "w").close()
print("farm-sent", sink.size, file=sys.stderr, flush=True)
"""

# A Kubernetes label value: at most 63 characters, alphanumerics with - _ . inside (it may be empty).
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# A label key: an optional DNS-subdomain prefix and "/", and a name like a value's (not empty).
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_MEMORY_RE = re.compile(r"^(?P<number>[0-9]+)(?P<unit>[bkmg]?)$")
_MEMORY_UNITS = {"b": "", "": "", "k": "Ki", "m": "Mi", "g": "Gi"}
# Container waiting reasons that will not resolve on their own.
_START_FAILURES = frozenset(
    {
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


# --- placement ---------------------------------------------------------------------------------------------------


def kube_arch(target: Target) -> str:
    return KUBE_ARCH[target.platform]


def nfd_label(arch: str, flag: str, *, target: str = "?") -> str:
    """NFD's label for a /proc/cpuinfo flag on ``arch`` (amd64, arm64); ConfigError when NFD has none by default."""
    name = NFD_CPUID.get(arch, {}).get(flag)
    if name is None:
        raise ConfigError(
            f"target {target}: Node Feature Discovery publishes no label for the CPU flag '{flag}' on {arch} by "
            "default, so a Kubernetes node cannot be chosen by it",
            fix=f"drop '{flag}' from the target's cpu_features/cpu_excludes (labelled: "
            f"{', '.join(sorted(NFD_CPUID.get(arch, {})))}), or run the target on a Docker engine",
        )
    return NFD_CPUID_PREFIX + name


def node_selector(target: Target) -> dict[str, str]:
    """The labels a node must carry: its architecture and, for each of the target's cpu_features, NFD's flag."""
    arch = kube_arch(target)
    selector = {ARCH_LABEL: arch}
    for flag in target.cpu_features:
        label = nfd_label(arch, flag, target=target.name)
        if label.removeprefix(NFD_CPUID_PREFIX) not in _NFD_ATTRIBUTES:
            selector[label] = "true"
    return selector


def node_requirements(target: Target) -> list[dict[str, Any]]:
    """What a nodeSelector cannot say: the excluded flags (absent, or not "true") and attribute labels present."""
    arch = kube_arch(target)
    found: list[dict[str, Any]] = []
    for flag in target.cpu_features:
        label = nfd_label(arch, flag, target=target.name)
        if label.removeprefix(NFD_CPUID_PREFIX) in _NFD_ATTRIBUTES:
            found.append({"key": label, "operator": "Exists"})
    for flag in target.cpu_excludes:
        label = nfd_label(arch, flag, target=target.name)
        if label.removeprefix(NFD_CPUID_PREFIX) in _NFD_ATTRIBUTES:
            found.append({"key": label, "operator": "DoesNotExist"})
        else:
            # NotIn also matches a node without the label, which is how NFD says "not there".
            found.append({"key": label, "operator": "NotIn", "values": ["true"]})
    return found


def node_affinity(target: Target) -> dict[str, Any] | None:
    """The pod's affinity for the target's requirements beyond its nodeSelector, or None when there are none."""
    requirements = node_requirements(target)
    if not requirements:
        return None
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": requirements}]
            }
        }
    }


# --- manifests ---------------------------------------------------------------------------------------------------


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


def _inputs(spec: RunSpec) -> list[tuple[str, Mount]]:
    return [(f"m{i}", m) for i, m in enumerate(spec.mounts) if m.read_only]


def _outputs(spec: RunSpec) -> list[tuple[str, Mount]]:
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
    ``spec.image``; ``owner`` the controller process (farm/owner.py), this one by default."""
    owner = owner or this_process()
    labels, annotations = _labels(spec, target, name, owner)
    memory = memory_quantity(spec.memory)
    inputs, outputs = _inputs(spec), _outputs(spec)
    argv = [*(spec.entrypoint or ()), *spec.command]
    job_resources: dict[str, Any] = {"cpu": _cpus(spec, cpus), "memory": memory}
    if spec.gpus:
        job_resources[GPU_RESOURCE] = str(spec.gpus)
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    mounts += [{"name": "inputs", "mountPath": m.target, "subPath": part, "readOnly": True} for part, m in inputs]
    mounts += [{"name": volume, "mountPath": m.target} for volume, m in outputs]
    job_container = _container(
        "job", image, [PYTHON, "-c", _RUN_WITH_BUDGET, f"{spec.timeout_s:.0f}", *argv], job_resources, mounts
    )
    job_container["env"] = [{"name": k, "value": v} for k, v in sorted(spec.environment.items())]
    receive = _container(
        "receive",
        image,
        [PYTHON, "-c", _RECEIVE_WAIT, _RECEIVED, str(RECEIVE_WAIT_S)],
        _HELPER_RESOURCES,
        [{"name": "inputs", "mountPath": _IN}, {"name": "tmp", "mountPath": "/tmp"}],
    )
    collect_wait = int(spec.timeout_s) + COLLECT_WAIT_S
    collect = _container(
        "collect",
        image,
        [PYTHON, "-c", _COLLECT_WAIT, _COLLECTED, str(collect_wait)],
        _HELPER_RESOURCES,
        [
            {"name": "control", "mountPath": _CONTROL},
            {"name": "tmp", "mountPath": "/tmp"},
            *({"name": volume, "mountPath": f"{_OUT}/{volume}", "readOnly": True} for volume, _ in outputs),
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


# --- the cluster's nodes -----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NodeFacts:
    """One node as placement sees it: its labels read back into farm's terms."""

    name: str
    arch: str  # x86_64, aarch64 (as HostInfo names it), or Kubernetes' own name for any other
    cpu_flags: frozenset[str]
    gpus: int
    ready: bool
    # Why farm's pods cannot go there (cordoned, a taint they do not tolerate), or None.
    blocked: str | None = None
    cpu_model: str | None = None
    labelled: bool = False  # whether NFD labelled its CPU at all
    # Tainted for GPU pods only (nvidia.com/gpu): farm's GPU jobs tolerate that taint, its CPU jobs do not.
    gpu_only: bool = False

    @property
    def usable(self) -> bool:
        return self.ready and self.blocked is None


@dataclass(frozen=True, kw_only=True)
class ClusterInfo(HostInfo):
    """A cluster as the Backend protocol's HostInfo: its own fields describe the nodes of the most common
    architecture (flags every one of them has); ``nodes`` is each node. Place a target with ``place``."""

    nodes: tuple[NodeFacts, ...] = ()


def node_facts(node: Mapping[str, Any]) -> NodeFacts:
    """A node object (as the API returns it, serialized: camelCase keys) as NodeFacts."""
    metadata = node.get("metadata") or {}
    labels: Mapping[str, str] = metadata.get("labels") or {}
    status = node.get("status") or {}
    spec = node.get("spec") or {}
    kube = labels.get(ARCH_LABEL) or (status.get("nodeInfo") or {}).get("architecture") or "?"
    by_nfd = {nfd: flag for flag, nfd in NFD_CPUID.get(kube, {}).items()}
    flags = set()
    for key, value in labels.items():
        if key.startswith(NFD_CPUID_PREFIX):
            name = key.removeprefix(NFD_CPUID_PREFIX)
            if name in by_nfd and (value == "true" or name in _NFD_ATTRIBUTES):
                flags.add(by_nfd[name])
    try:
        gpus = int(str((status.get("allocatable") or {}).get(GPU_RESOURCE, "0")))
    except ValueError:
        gpus = 0
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    blocked = None
    taints = [t for t in spec.get("taints") or [] if t.get("effect") in ("NoSchedule", "NoExecute")]
    if spec.get("unschedulable"):
        blocked = "cordoned"
    else:
        for taint in taints:
            if taint.get("key") != GPU_RESOURCE:
                blocked = f"tainted {taint.get('key')}={taint.get('value', '')}:{taint.get('effect')}"
                break
    vendor, family, model = (labels.get(NFD_MODEL_PREFIX + k) for k in ("vendor_id", "family", "id"))
    cpu_model = f"{vendor} family {family} model {model}" if vendor and family and model else None
    return NodeFacts(
        name=str(metadata.get("name", "?")),
        arch=_MACHINE.get(kube, kube),
        cpu_flags=frozenset(flags),
        gpus=gpus,
        ready=ready,
        blocked=blocked,
        cpu_model=cpu_model,
        labelled=any(k.startswith(NFD_CPUID_PREFIX) for k in labels),
        gpu_only=any(t.get("key") == GPU_RESOURCE for t in taints),
    )


def cluster_info(nodes: Sequence[NodeFacts], *, where: str) -> ClusterInfo:
    usable = [n for n in nodes if n.usable] or list(nodes)
    archs = [n.arch for n in usable]
    arch = max(sorted(set(archs)), key=archs.count) if archs else "?"
    same = [n.cpu_flags for n in usable if n.arch == arch]
    flags = frozenset.intersection(*same) if same else frozenset()
    models = {n.cpu_model for n in usable if n.arch == arch and n.cpu_model}
    return ClusterInfo(
        arch=arch,
        cpu_flags=flags,
        gpu_runtime=any(n.gpus for n in usable),
        cpu_model=models.pop() if len(models) == 1 else None,
        where=where,
        nodes=tuple(nodes),
    )


def matching_nodes(target: Target, nodes: Sequence[NodeFacts]) -> list[NodeFacts]:
    """The usable nodes a target's Job may land on: its arch, its flags, none of its excludes, its GPUs (and no GPU
    node for a job that asks for none: it does not tolerate their taint)."""
    return [
        n
        for n in nodes
        if n.usable
        and n.arch == target.arch
        and set(target.cpu_features) <= n.cpu_flags
        and not set(target.cpu_excludes) & n.cpu_flags
        and n.gpus >= target.gpus
        and (target.gpus or not n.gpu_only)
    ]


def place(target: Target, info: HostInfo) -> Placement:
    """Native on the cluster when a usable node matches the target's labels, else unavailable with the reason."""
    nodes = info.nodes if isinstance(info, ClusterInfo) else ()
    try:
        node_selector(target)
        node_requirements(target)
    except ConfigError as exc:
        return Placement(mode="unavailable", reason=str(exc))
    found = matching_nodes(target, nodes)
    if found:
        names = ", ".join(n.name for n in found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        return Placement(mode="native", reason=f"runs as a Kubernetes Job on {info.where}, on a node such as {names}")
    wants = [kube_arch(target), *(NFD_CPUID[kube_arch(target)][f] for f in target.cpu_features)]
    wants += [f"no {NFD_CPUID[kube_arch(target)][f]}" for f in target.cpu_excludes]
    if target.gpus:
        wants.append(f"{target.gpus} allocatable {GPU_RESOURCE}")
    seen = "; ".join(_describe(n) for n in nodes[:6]) or "the cluster lists no nodes"
    hint = (
        ""
        if any(n.labelled for n in nodes) or not (target.cpu_features or target.cpu_excludes)
        else " (no node carries Node Feature Discovery's labels: install NFD in the cluster)"
    )
    return Placement(
        mode="unavailable", reason=f"no usable node of {info.where} has {', '.join(wants)}{hint}; nodes: {seen}"
    )


def host_for(target: Target, info: HostInfo) -> HostInfo:
    """The machine the target's jobs will run on, as far as the cluster tells: the flags all its matching nodes
    share, the target's architecture, GPUs when a matching node has them."""
    if not isinstance(info, ClusterInfo):
        return info
    found = matching_nodes(target, info.nodes)
    flags = frozenset.intersection(*(n.cpu_flags for n in found)) if found else frozenset(target.cpu_features)
    models = {n.cpu_model for n in found if n.cpu_model}
    return HostInfo(
        arch=target.arch,
        cpu_flags=flags,
        gpu_runtime=any(n.gpus for n in found),
        cpu_model=models.pop() if len(models) == 1 else None,
        where=info.where,
    )


def _describe(node: NodeFacts) -> str:
    arch = {v: k for k, v in _MACHINE.items()}.get(node.arch, node.arch)
    nfd = NFD_CPUID.get(arch, {})
    flags = " ".join(sorted(nfd[f] for f in node.cpu_flags if f in nfd)) or "no NFD CPU labels"
    state = "" if node.ready else ", not ready"
    state += f", {node.blocked}" if node.blocked else ""
    gpus = f", {node.gpus} GPU" if node.gpus else ""
    return f"{node.name} ({arch}: {flags}{gpus}{state})"


# --- talking to a cluster ----------------------------------------------------------------------------------------


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


def _plain(obj: Any) -> Any:
    """An API object as the API's JSON (camelCase keys); dicts pass through, so fakes may be plain data."""
    if obj is None or isinstance(obj, dict | list | str | int | float | bool):
        return obj
    return _serializer().sanitize_for_serialization(obj)


@functools.cache
def _serializer() -> Any:
    # Serializing asks nothing of a cluster: one client, never connected, serves every call.
    return _module("kubernetes.client").ApiClient()


def _api_failure(doing: str, where: str, exc: BaseException) -> EnvironmentProblem:
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


def _is_api_error(exc: BaseException) -> bool:
    """What the client raises when the cluster is down or refuses: its ApiException (exec sessions' too), urllib3's
    errors, and socket errors that escaped them."""
    return type(exc).__module__.split(".")[0] in ("kubernetes", "urllib3", "websocket") or isinstance(
        exc, ConnectionError | TimeoutError
    )


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
            listed = clients.core.list_node(_request_timeout=_REQUEST_TIMEOUT)
        except Exception as exc:
            if _is_api_error(exc):
                raise _api_failure("listing the cluster's nodes", clients.where, exc) from None
            raise
        nodes = [node_facts(_plain(item)) for item in getattr(listed, "items", None) or []]
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
            return _JobRun(clients, self.namespace, name, spec, on_line).run(manifests)
        except Exception as exc:
            if _is_api_error(exc):
                raise _api_failure(f"running the Kubernetes Job {self.namespace}/{name}", clients.where, exc) from None
            raise

    def sweep(self) -> list[str]:
        """Jobs (and with them their pods and NetworkPolicies) of farm processes on this machine that are gone."""
        clients = self.clients
        removed = []
        try:
            listed = clients.batch.list_namespaced_job(
                self.namespace, label_selector=RUN_LABEL, _request_timeout=_REQUEST_TIMEOUT
            )
        except Exception as exc:
            if _is_api_error(exc):
                raise _api_failure("listing farm's Kubernetes Jobs", clients.where, exc) from None
            raise
        for item in getattr(listed, "items", None) or []:
            job = _plain(item)
            metadata = job.get("metadata") or {}
            owner = (metadata.get("annotations") or {}).get(OWNER_LABEL)
            if owner is not None and is_gone(owner):
                _delete_job(clients, self.namespace, str(metadata["name"]))
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


def _delete_job(clients: Clients, namespace: str, name: str) -> None:
    with contextlib.suppress(Exception):  # gone already, or the cluster is: the TTL and sweep remove it later
        clients.batch.delete_namespaced_job(
            name, namespace, propagation_policy="Background", grace_period_seconds=0, _request_timeout=_REQUEST_TIMEOUT
        )


@dataclass(kw_only=True)
class _Ended:
    exit_code: int
    reason: str | None
    duration_s: float | None


@dataclass(kw_only=True)
class _PodState:
    name: str | None = None
    phase: str = "Pending"
    # Containers by name: "waiting" (with reason), "running", or "terminated" (with _Ended).
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    ended: dict[str, _Ended] = field(default_factory=dict)
    unschedulable: str | None = None
    message: str | None = None


class _JobRun:
    """One Job from creation to deletion."""

    def __init__(self, clients: Clients, namespace: str, name: str, spec: RunSpec, on_line: LineSink | None) -> None:
        self.clients = clients
        self.namespace = namespace
        self.name = name
        self.spec = spec
        self.on_line = on_line
        self._log = LogLines(on_line)

    def run(self, manifests: Sequence[Mapping[str, Any]]) -> RunResult:
        started = time.monotonic()
        job, network = manifests[0], manifests[1]
        created = self.clients.batch.create_namespaced_job(self.namespace, dict(job), _request_timeout=_REQUEST_TIMEOUT)
        try:
            uid = (_plain(created).get("metadata") or {}).get("uid")
            policy = dict(network)
            if uid:
                policy["metadata"] = {
                    **policy["metadata"],
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": self.name,
                            "uid": uid,
                            "blockOwnerDeletion": False,
                        }
                    ],
                }
            self.clients.networking.create_namespaced_network_policy(
                self.namespace, policy, _request_timeout=_REQUEST_TIMEOUT
            )
            return self._follow(started)
        finally:
            if not self.spec.keep:
                _delete_job(self.clients, self.namespace, self.name)

    def _follow(self, started: float) -> RunResult:
        state = self._wait(lambda s: "receive" in s.running, started, "to start")
        if isinstance(state, RunResult):
            return state
        assert state.name is not None
        pod = state.name
        failure = self._send_inputs(pod)
        if failure:
            return RunResult.engine_failure(
                f"could not receive its inputs: {failure}", duration_s=time.monotonic() - started
            )
        state = self._wait(lambda s: "job" in s.running or "job" in s.ended, started, "to start its job")
        if isinstance(state, RunResult):
            return state
        reader = threading.Thread(target=self._read_logs, args=(pod,), daemon=True)
        reader.start()
        job_started = time.monotonic()
        backstop = self.spec.timeout_s + 60
        timed_out = False
        while True:
            state = self._state()
            if state.name is None:
                return RunResult.engine_failure(
                    "was removed from outside while it ran",
                    log_tail=self._tail(),
                    duration_s=time.monotonic() - job_started,
                )
            if "job" in state.ended or state.phase in ("Succeeded", "Failed"):
                break
            if time.monotonic() - job_started > backstop:
                timed_out = True  # the budget wrapper did not stop it: the Job's deletion will
                break
            time.sleep(_POLL_S)
        reader.join(timeout=5)
        ended = state.ended.get("job")
        if "collect" in state.running:
            problem = self._collect(pod)
            if problem and self.on_line:
                self.on_line(f"farm: results could not be brought back: {problem}")
        if ended is None:
            if timed_out:
                return RunResult(
                    exit_code=-1,
                    log_tail=self._tail(),
                    oom_killed=False,
                    timed_out=True,
                    duration_s=time.monotonic() - job_started,
                )
            return RunResult.engine_failure(
                f"ended without a status ({state.message or state.phase})",
                log_tail=self._tail(),
                duration_s=time.monotonic() - job_started,
            )
        return RunResult(
            exit_code=ended.exit_code,
            log_tail=self._tail(),
            oom_killed=ended.reason == "OOMKilled",
            timed_out=timed_out or ended.exit_code == _TIMED_OUT,
            duration_s=ended.duration_s if ended.duration_s is not None else time.monotonic() - job_started,
        )

    def _wait(self, ready: Any, started: float, what: str) -> _PodState | RunResult:
        """Poll the pod until ``ready(state)``, or a RunResult saying why it never will be."""
        unschedulable_since: float | None = None
        while True:
            state = self._state()
            if state.name is not None and ready(state):
                return state
            for container, (reason, message) in state.waiting.items():
                if reason in _START_FAILURES:
                    return RunResult.engine_failure(
                        f"could not be started: {container}: {reason}: {message}", duration_s=time.monotonic() - started
                    )
            for container, ended in state.ended.items():
                if container == "receive" and ended.exit_code != 0:
                    return RunResult.engine_failure(
                        f"could not receive its inputs (exit {ended.exit_code})", duration_s=time.monotonic() - started
                    )
            if state.phase in ("Failed", "Succeeded"):
                return RunResult.engine_failure(
                    f"ended before it began ({state.message or state.phase})", duration_s=time.monotonic() - started
                )
            if state.unschedulable:
                unschedulable_since = unschedulable_since or time.monotonic()
                if time.monotonic() - unschedulable_since > SCHEDULE_WAIT_S:
                    return RunResult.engine_failure(
                        f"found no node to run on in {SCHEDULE_WAIT_S:.0f} s: {state.unschedulable}",
                        duration_s=time.monotonic() - started,
                    )
            else:
                unschedulable_since = None
            if time.monotonic() - started > START_WAIT_S + RECEIVE_WAIT_S:
                return RunResult.engine_failure(
                    f"took too long {what} ({state.message or state.phase})", duration_s=time.monotonic() - started
                )
            time.sleep(_POLL_S)

    def _state(self) -> _PodState:
        listed = self.clients.core.list_namespaced_pod(
            self.namespace, label_selector=f"{RUN_LABEL}={self.name}", _request_timeout=_REQUEST_TIMEOUT
        )
        pods = [_plain(p) for p in getattr(listed, "items", None) or []]
        if not pods:
            return _PodState()
        return _pod_state(pods[0])

    def _send_inputs(self, pod: str) -> str | None:
        """Stream the read-only mounts into the init container; None when they arrived, else why not."""
        with tempfile.TemporaryFile(prefix="farm-inputs-") as archive:
            try:
                _write_inputs(self.spec, archive)
            except OSError as exc:  # a mount's source is missing or unreadable, as a bind mount's would be
                return f"reading them on the controller failed ({one_line(exc)})"
            size = archive.tell()
            archive.seek(0)
            session = self._exec(pod, "receive", [PYTHON, "-c", _UNPACK, _IN, _RECEIVED], stdin=True)
            try:
                session.write_stdin(struct.pack(">Q", size))
                for block in iter(lambda: archive.read(_CHUNK), b""):
                    session.write_stdin(block)
                out, err = _drain(session, None)
            finally:
                session.close()
        if b"farm-received" not in out:
            return (err or out).decode("utf-8", "replace").strip()[-300:] or "the exec session ended without a word"
        return None

    def _collect(self, pod: str) -> str | None:
        """Bring back what the job wrote under each writable mount; None when it came, else why not."""
        outputs = _outputs(self.spec)
        if not outputs:
            return None
        pairs = [f"{volume}={_OUT}/{volume}" for volume, _ in outputs]
        with tempfile.TemporaryFile(prefix="farm-results-") as archive:
            session = self._exec(pod, "collect", [PYTHON, "-c", _PACK, _COLLECTED, *pairs], stdin=False)
            try:
                _, err = _drain(session, archive)
            finally:
                session.close()
            sent = re.search(rb"farm-sent (\d+)", err)
            if sent is None or int(sent.group(1)) != archive.tell():
                return (
                    f"{archive.tell()} bytes came of {sent.group(1).decode() if sent else 'an unknown size'}; "
                    f"{err.decode('utf-8', 'replace').strip()[-200:]}"
                )
            archive.seek(0)
            _unpack_outputs(archive, outputs)
        return None

    def _exec(self, pod: str, container: str, command: list[str], *, stdin: bool) -> Any:
        session = self.clients.stream(
            self.clients.core.connect_get_namespaced_pod_exec,
            pod,
            self.namespace,
            container=container,
            command=command,
            stdin=stdin,
            stdout=True,
            stderr=True,
            tty=False,
            binary=True,
            _preload_content=False,
        )
        # The client keeps a copy of all output for read_all(), which farm never calls: results can be large.
        if hasattr(session, "_all"):
            session._all = _Discard()
        return session

    def _read_logs(self, pod: str) -> None:
        try:
            response = self.clients.core.read_namespaced_pod_log(
                pod, self.namespace, container="job", follow=True, _preload_content=False
            )
        except Exception:  # the pod went away before its log could be opened
            return
        self._log.feed(response.stream(4096))

    def _tail(self) -> str:
        return self._log.tail()


class _Discard:
    def write(self, data: Any) -> None:
        pass

    def getvalue(self) -> bytes:
        return b""


def _pod_state(pod: Mapping[str, Any]) -> _PodState:
    """A pod object (serialized) as what _JobRun waits on."""
    status = pod.get("status") or {}
    state = _PodState(
        name=(pod.get("metadata") or {}).get("name"),
        phase=str(status.get("phase") or "Pending"),
        message=status.get("message") or status.get("reason"),
    )
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            state.unschedulable = str(condition.get("message") or "unschedulable")
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        name = str(container.get("name"))
        current = container.get("state") or {}
        if current.get("waiting"):
            waiting = current["waiting"]
            state.waiting[name] = (str(waiting.get("reason") or ""), str(waiting.get("message") or ""))
        elif current.get("running"):
            state.running.add(name)
        elif current.get("terminated"):
            ended = current["terminated"]
            state.ended[name] = _Ended(
                exit_code=int(ended.get("exitCode", -1)),
                reason=ended.get("reason"),
                duration_s=_seconds_between(ended.get("startedAt"), ended.get("finishedAt")),
            )
    return state


def _seconds_between(start: Any, end: Any) -> float | None:
    from datetime import datetime

    def parse(value: Any) -> datetime | None:
        if isinstance(value, datetime):
            return value
        if isinstance(value, str) and value:
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00"))
        return None

    begun, done = parse(start), parse(end)
    return (done - begun).total_seconds() if begun and done else None


def _drain(session: Any, sink: Any | None) -> tuple[bytes, bytes]:
    """Read an exec session to its end: stdout into ``sink`` (or returned), stderr returned."""
    out, err = io.BytesIO(), io.BytesIO()
    target = sink if sink is not None else out
    while session.is_open():
        session.update(timeout=1)
        if session.peek_stdout():
            target.write(session.read_stdout())
        if session.peek_stderr():
            err.write(session.read_stderr())
    target.write(session.read_stdout() or b"")
    err.write(session.read_stderr() or b"")
    return out.getvalue(), err.getvalue()


def _write_inputs(spec: RunSpec, stream: Any) -> None:
    """The read-only mounts as one tar: each under its part name (``m<i>``), a folder's content or the file itself."""
    with tarfile.open(fileobj=stream, mode="w") as archive:
        for part, mount in _inputs(spec):
            archive.add(mount.source, arcname=part, filter=_readable)


def _readable(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = (info.mode | 0o444 | (0o111 if info.isdir() else 0)) & 0o755
    return info


def _unpack_outputs(stream: Any, outputs: Sequence[tuple[str, Mount]]) -> None:
    folders = dict(outputs)
    with tarfile.open(fileobj=stream, mode="r") as archive:
        for member in archive.getmembers():
            parts = PurePosixPath(member.name).parts
            if not parts or parts[0] not in folders or len(parts) == 1 or not (member.isfile() or member.isdir()):
                continue
            member.name = str(PurePosixPath(*parts[1:]))
            archive.extract(member, folders[parts[0]].source, filter="data")
