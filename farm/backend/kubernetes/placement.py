"""Where a target's Job may run: its labels as a nodeSelector and node affinity, and the cluster's nodes read back
into farm's terms (NodeFacts, ClusterInfo) to place a target before any Job is made."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from farm.errors import ConfigError
from farm.host.probe import HostInfo, Placement
from farm.targets.config import Target

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
