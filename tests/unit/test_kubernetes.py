"""The Kubernetes backend (farm/backend/kubernetes/) without a cluster.

The manifests of every target in targets.toml are validated offline against the Kubernetes 1.37 JSON schema
(kubernetes-validate, strict: an unknown or misspelt field fails), and checked for what a schema cannot say: the
placement labels per tier, the GPU limit, every hardening field, label syntax. The probe reads fake node objects
(the client's own models), and a run goes through a fake API server whose exec sessions run farm's real transfer
scripts on this machine, so inputs really travel in and results really come back.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes import client as k8s

from farm.backend import imagebuild, runner
from farm.backend.engine import Mount, RunSpec
from farm.backend.kubernetes import backend as kbackend
from farm.backend.kubernetes import client as kclient
from farm.backend.kubernetes import jobrun, transfer
from farm.backend.kubernetes import manifests as kmanifests
from farm.backend.kubernetes import placement as kplace
from farm.errors import BuildFailed, ConfigError, EnvironmentProblem
from farm.host.owner import this_process
from farm.host.probe import Placement
from farm.images import content as images
from farm.targets.config import Target, load_config
from tests.conftest import ROOT

CONFIG = load_config(ROOT / "targets.toml", env={})
# The Kubernetes version the manifests must be valid for: the newest the validator bundles.
KUBERNETES_VERSION = "1.37.0"
NFD = "feature.node.kubernetes.io/cpu-cpuid."
ARCH = "kubernetes.io/arch"
# From the Kubernetes documentation (Labels and Selectors; Object Names; Quantity), independent of farm's own.
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
HARDENED = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def folders(tmp_path: Path) -> tuple[Path, Path]:
    inputs, out = tmp_path / "in", tmp_path / "out"
    (inputs / "artifacts").mkdir(parents=True)
    (inputs / "spec-evaluate.json").write_text('{"stage": "evaluate"}')
    (inputs / "artifacts" / "s8s8-qdq.onnx").write_bytes(bytes(range(256)) * 64)
    out.mkdir()
    return inputs, out


def spec_for(target: Target, inputs: Path, out: Path) -> RunSpec:
    """A representative job: the matrix's evaluate stage, as the runner builds it for a native placement."""
    return runner.run_spec(
        target,
        Placement(mode="native"),
        f"farm/{target.name}:0123456789abcdef",
        ["-m", "farm.job", "/farm/in/spec-evaluate.json", "/farm/out"],
        mounts=[
            Mount(source=inputs, target="/farm/in", read_only=True),
            Mount(source=out, target="/farm/out", read_only=False),
        ],
        timeout_s=target.budget_s,
        memory=target.memory,
        labels={"farm.stage": "evaluate"},
    )


def manifests_of(target: Target, tmp_path: Path, *, owner: str | None = None) -> tuple[dict[str, Any], ...]:
    inputs, out = folders(tmp_path)
    found = kmanifests.job_manifests(
        spec_for(target, inputs, out),
        target,
        name=kmanifests.job_name(target.name, "evaluate"),
        namespace="farm",
        image=f"registry.example.com/farm-{target.name}:0123456789abcdef",
        owner=owner,
    )
    return tuple(found)


def by_kind(manifests: Sequence[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [m for m in manifests if m["kind"] == kind]
    return found


def pod_of(manifests: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return dict(by_kind(manifests, "Job")["spec"]["template"]["spec"])


def all_containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def required(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    affinity = pod.get("affinity", {}).get("nodeAffinity", {})
    terms = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])
    return [e for term in terms for e in term["matchExpressions"]]


# --- manifests -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", CONFIG.targets, ids=lambda t: t.name)
def test_every_targets_manifests_validate_against_the_kubernetes_schema(target: Target, tmp_path: Path) -> None:
    manifests = manifests_of(target, tmp_path)
    assert [m["kind"] for m in manifests] == ["Job", "NetworkPolicy"]
    for manifest in manifests:
        assert kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True) == "1.37"


def test_the_validator_is_strict_enough_to_fail(tmp_path: Path) -> None:
    job = by_kind(manifests_of(CONFIG.target("x86-avx2"), tmp_path), "Job")
    context = job["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context["readOnlyRootFileSystem"] = context.pop("readOnlyRootFilesystem")  # a misspelling drops the hardening
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    job["spec"]["backoffLimit"] = "none"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=False)


def test_each_tier_is_placed_by_arch_and_nfd_labels(tmp_path: Path) -> None:
    avx2 = pod_of(manifests_of(CONFIG.target("x86-avx2"), tmp_path / "a"))
    assert avx2["nodeSelector"] == {ARCH: "amd64", NFD + "AVX2": "true", NFD + "FMA3": "true"}
    # A nodeSelector cannot say "absent": the AVX2 tier keeps off AVX-512, AVX-VNNI and AMX nodes by affinity.
    assert {(e["key"], e["operator"], tuple(e.get("values", ()))) for e in required(avx2)} == {
        (NFD + name, "NotIn", ("true",)) for name in ("AVX512F", "AVXVNNI", "AVX512VNNI", "AMXINT8")
    }

    avx512 = pod_of(manifests_of(CONFIG.target("x86-avx512"), tmp_path / "b"))
    assert avx512["nodeSelector"] == {ARCH: "amd64", NFD + "AVX512F": "true", NFD + "AVX512BW": "true"}
    assert {e["key"] for e in required(avx512)} == {NFD + "AVX512VNNI", NFD + "AVXVNNI", NFD + "AMXINT8"}

    vnni = pod_of(manifests_of(CONFIG.target("x86-avx512-vnni"), tmp_path / "c"))
    assert vnni["nodeSelector"] == {
        ARCH: "amd64",
        NFD + "AVX512F": "true",
        NFD + "AVX512BW": "true",
        NFD + "AVX512VNNI": "true",
    }
    assert [(e["key"], e["operator"]) for e in required(vnni)] == [(NFD + "AMXINT8", "NotIn")]

    arm = pod_of(manifests_of(CONFIG.target("arm64"), tmp_path / "d"))
    assert arm["nodeSelector"] == {ARCH: "arm64"} and "affinity" not in arm

    for pod in (avx2, avx512, vnni, arm):
        assert all(kplace.GPU_RESOURCE not in c["resources"]["limits"] for c in all_containers(pod))
        assert "tolerations" not in pod


def test_the_gpu_target_asks_for_its_gpu_and_tolerates_gpu_nodes(tmp_path: Path) -> None:
    pod = pod_of(manifests_of(CONFIG.target("gpu-s8s8"), tmp_path))
    job = next(c for c in pod["containers"] if c["name"] == "job")
    assert job["resources"]["limits"][kplace.GPU_RESOURCE] == "1"
    assert job["resources"]["requests"][kplace.GPU_RESOURCE] == "1"
    assert pod["nodeSelector"] == {ARCH: "amd64"}
    assert {"key": kplace.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # Only the job container holds the GPU; the helpers that copy files do not.
    assert all(kplace.GPU_RESOURCE not in c["resources"]["limits"] for c in all_containers(pod) if c is not job)


def test_arm64_dot_product_and_nfd_attributes_map_to_their_labels() -> None:
    dotprod = Target(name="arm-dotprod", platform="linux/arm64", cpu_features=("asimddp",))
    assert kplace.node_selector(dotprod) == {ARCH: "arm64", NFD + "ASIMDDP": "true"}
    no_avx10 = Target(name="no-avx10", platform="linux/amd64", cpu_features=("avx2",), cpu_excludes=("avx10",))
    assert kplace.node_requirements(no_avx10) == [{"key": NFD + "AVX10_VERSION", "operator": "DoesNotExist"}]


def test_a_flag_nfd_does_not_label_is_refused_not_dropped() -> None:
    popcnt = Target(name="needs-popcnt", platform="linux/amd64", cpu_features=("avx2", "popcnt"))
    with pytest.raises(ConfigError, match=r"needs-popcnt: Node Feature Discovery .* 'popcnt' on amd64"):
        kplace.node_selector(popcnt)
    wrong_arch = Target(name="arm-avx", platform="linux/arm64", cpu_excludes=("avx512f",))
    with pytest.raises(ConfigError, match=r"avx512f.*arm64"):
        kplace.node_requirements(wrong_arch)
    placement = kplace.place(popcnt, kplace.cluster_info([], where="kubernetes: test"))
    assert placement.mode == "unavailable" and "popcnt" in (placement.reason or "")


@pytest.mark.parametrize("target", CONFIG.targets, ids=lambda t: t.name)
def test_every_job_is_hardened_like_a_local_container(target: Target, tmp_path: Path) -> None:
    manifests = manifests_of(target, tmp_path)
    job, policy = by_kind(manifests, "Job"), by_kind(manifests, "NetworkPolicy")
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] >= target.budget_s
    assert 0 < spec["ttlSecondsAfterFinished"] <= 3600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "runAsGroup": 65534,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for key in ("hostNetwork", "hostPID", "hostIPC", "serviceAccountName", "hostUsers"):
        assert key not in pod
    memory = target.memory[:-1] + {"g": "Gi", "m": "Mi", "k": "Ki"}[target.memory[-1]]
    for container in all_containers(pod):
        assert {k: container["securityContext"][k] for k in HARDENED} == HARDENED, container["name"]
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], container["name"]  # Guaranteed QoS: steady timings
        assert {"cpu", "memory"} <= set(resources["limits"])
        assert all(QUANTITY.match(str(v)) for v in resources["limits"].values()), resources
        assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])
        assert container["imagePullPolicy"] == "IfNotPresent"
        assert container["image"] == f"registry.example.com/farm-{target.name}:0123456789abcdef"
    job_container = next(c for c in pod["containers"] if c["name"] == "job")
    assert job_container["resources"]["limits"]["memory"] == memory == kmanifests.memory_quantity(target.memory)
    # The job's inputs are read-only; only its own output folder is writable.
    mounts = {m["mountPath"]: m for m in job_container["volumeMounts"]}
    assert mounts["/farm/in"]["readOnly"] is True and not mounts["/farm/out"].get("readOnly")
    # Only emptyDirs, each with a size limit: nothing of the node is mounted.
    assert all(set(v) == {"name", "emptyDir"} and "sizeLimit" in v["emptyDir"] for v in pod["volumes"])
    assert next(v for v in pod["volumes"] if v["name"] == "tmp")["emptyDir"]["sizeLimit"] == "1Gi"
    # No network: the policy selects the pod and allows nothing either way.
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {"farm.run": job["metadata"]["name"]}},
        "policyTypes": ["Ingress", "Egress"],
    }
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_everything_carries_farms_labels_as_valid_label_values(tmp_path: Path) -> None:
    owner = this_process()
    manifests = manifests_of(CONFIG.target("x86-avx512-vnni"), tmp_path, owner=owner)
    name = manifests[0]["metadata"]["name"]
    assert DNS_LABEL.match(name) and len(name) <= 63 and name.startswith("farm-x86-avx512-vnni-evaluate-")
    for metadata in (manifests[0]["metadata"], manifests[1]["metadata"], manifests[0]["spec"]["template"]["metadata"]):
        labels = metadata["labels"]
        assert {"farm.run", "farm.target", "farm.host.owner", "farm.stage"} <= set(labels)
        assert labels["farm.run"] == name and labels["farm.target"] == "x86-avx512-vnni"
        for key, value in labels.items():
            _, _, key_name = key.rpartition("/")
            assert LABEL_NAME.match(key_name) and len(key_name) <= 63, key
            assert LABEL_VALUE.match(value) and len(value) <= 63, (key, value)
        # The owner (host, boot id, pid, start time) has spaces: the label is a digest, the annotation the owner.
        assert " " in owner and labels["farm.host.owner"] != owner
        assert metadata["annotations"]["farm.host.owner"] == owner


def test_label_values_memory_and_job_names() -> None:
    assert kmanifests.label_value("x86-avx2") == "x86-avx2"
    long = kmanifests.label_value("a" * 80)
    assert len(long) <= 63 and LABEL_VALUE.match(long)
    assert kmanifests.label_value("a" * 80) != kmanifests.label_value("a" * 81)  # the digest tells them apart
    odd = kmanifests.label_value(" host name/with:odd chars ")
    assert LABEL_VALUE.match(odd) and odd.startswith("host-name-with-odd-chars")
    assert LABEL_VALUE.match(kmanifests.label_value("---")) and kmanifests.label_value("---")
    assert [kmanifests.memory_quantity(m) for m in ("4g", "512m", "64k", "1000b", "2G")] == [
        "4Gi",
        "512Mi",
        "64Ki",
        "1000",
        "2Gi",
    ]
    with pytest.raises(ValueError):
        kmanifests.memory_quantity("lots")
    names = {kmanifests.job_name("x86_avx512.vnni-with-a-very-long-target-name-indeed", "evaluate") for _ in range(20)}
    assert len(names) == 20
    assert all(DNS_LABEL.match(n) and len(n) <= 63 for n in names), names


def test_dry_run_writes_one_yaml_file_per_job_that_reads_back_as_the_manifests(tmp_path: Path) -> None:
    manifests = manifests_of(CONFIG.target("gpu-s8s8"), tmp_path / "job")
    path = kmanifests.write_dry_run(manifests, tmp_path / "dry")
    assert path.parent == tmp_path / "dry" and path.name == f"{manifests[0]['metadata']['name']}.yaml"
    assert list(yaml.safe_load_all(path.read_text())) == list(manifests)


def test_manifests_survive_the_clients_own_models(tmp_path: Path) -> None:
    """What the client sends is what farm built: no field is lost to a model that does not know it."""
    job, policy = manifests_of(CONFIG.target("x86-avx2"), tmp_path)
    api = k8s.ApiClient()
    assert api.sanitize_for_serialization(k8s.V1Job.from_dict(job)) == job
    assert api.sanitize_for_serialization(k8s.V1NetworkPolicy.from_dict(policy)) == policy


# --- the cluster's nodes -----------------------------------------------------------------------------------------


def node(
    name: str,
    arch: str,
    flags: Sequence[str] = (),
    *,
    gpus: int = 0,
    ready: bool = True,
    unschedulable: bool = False,
    taints: Sequence[k8s.V1Taint] = (),
    model: bool = False,
) -> k8s.V1Node:
    labels = {ARCH: arch, "kubernetes.io/hostname": name, **{NFD + f: "true" for f in flags}}
    if model:
        labels |= {
            "feature.node.kubernetes.io/cpu-model.vendor_id": "Intel",
            "feature.node.kubernetes.io/cpu-model.family": "6",
            "feature.node.kubernetes.io/cpu-model.id": "106",
        }
    return k8s.V1Node(
        metadata=k8s.V1ObjectMeta(name=name, labels=labels),
        spec=k8s.V1NodeSpec(unschedulable=unschedulable, taints=list(taints) or None),
        status=k8s.V1NodeStatus(
            allocatable={"cpu": "16", "memory": "64Gi", **({kplace.GPU_RESOURCE: str(gpus)} if gpus else {})},
            conditions=[k8s.V1NodeCondition(type="Ready", status="True" if ready else "False")],
        ),
    )


ZEN2 = ("AVX", "AVX2", "FMA3", "AESNI")
ICELAKE = (*ZEN2, "AVX512F", "AVX512BW", "AVX512DQ", "AVX512VL", "AVX512VNNI")
SAPPHIRE = (*ICELAKE, "AVX512BF16", "AVX512FP16", "AMXTILE", "AMXINT8", "AMXBF16", "AVXVNNI")
NODES = [
    node("zen2", "amd64", ZEN2),
    node("icelake", "amd64", ICELAKE, model=True),
    node("sapphire", "amd64", SAPPHIRE),
    node("graviton", "arm64", ("ASIMD", "ASIMDDP", "ASIMDHP", "I8MM")),
    node(
        "a100",
        "amd64",
        ZEN2,
        gpus=2,
        taints=[k8s.V1Taint(key=kplace.GPU_RESOURCE, value="present", effect="NoSchedule")],
    ),
    node("cordoned-zen2", "amd64", ZEN2, unschedulable=True),
    node("down-zen2", "amd64", ZEN2, ready=False),
    node("tainted-icelake", "amd64", ICELAKE, taints=[k8s.V1Taint(key="dedicated", value="db", effect="NoSchedule")]),
]


class FakeCore:
    def __init__(self, nodes: Sequence[Any]) -> None:
        self.nodes = nodes

    def list_node(self, **_: Any) -> Any:
        return k8s.V1NodeList(items=list(self.nodes))


def cluster(nodes: Sequence[Any] = NODES) -> kbackend.KubernetesBackend:
    clients = kclient.Clients(core=FakeCore(nodes), batch=None, networking=None, where="kubernetes: fake")
    return kbackend.KubernetesBackend(
        registry="registry.example.com", namespace="farm", clients=clients, targets=CONFIG.targets
    )


def test_probe_reads_each_nodes_arch_flags_and_gpus_from_its_labels() -> None:
    info = cluster().probe()
    facts = {n.name: n for n in info.nodes}
    assert facts["zen2"].arch == "x86_64" and facts["zen2"].cpu_flags == {"avx", "avx2", "fma", "aes"}
    assert facts["icelake"].cpu_flags >= {"avx512f", "avx512bw", "avx512_vnni"}
    assert facts["icelake"].cpu_model == "Intel family 6 model 106"
    assert {"amx_int8", "amx_tile", "avx_vnni"} <= facts["sapphire"].cpu_flags
    assert facts["graviton"].arch == "aarch64" and facts["graviton"].cpu_flags == {
        "asimd",
        "asimddp",
        "asimdhp",
        "i8mm",
    }
    assert facts["a100"].gpus == 2 and facts["a100"].usable and facts["a100"].gpu_only  # GPU pods tolerate it
    assert facts["cordoned-zen2"].blocked == "cordoned" and not facts["down-zen2"].usable
    assert "dedicated=db" in (facts["tainted-icelake"].blocked or "")
    # As a HostInfo: most nodes are x86_64, and the flags every usable one of them has.
    assert info.arch == "x86_64" and info.cpu_flags == {"avx", "avx2", "fma", "aes"} and info.gpu_runtime


def test_probe_places_each_tier_only_on_nodes_of_that_tier() -> None:
    info = cluster().probe()

    def where(name: str) -> str:
        placement = kplace.place(CONFIG.target(name), info)
        return placement.mode if placement.mode == "unavailable" else (placement.reason or "")

    assert "zen2" in where("x86-avx2") and "icelake" not in where("x86-avx2")
    assert "icelake" in where("x86-avx512-vnni") and "sapphire" not in where("x86-avx512-vnni")
    assert "graviton" in where("arm64")
    assert "a100" in where("gpu-s8s8")
    # AVX-512 without VNNI: no such node here, and the reason says what was looked for and what there is.
    avx512 = kplace.place(CONFIG.target("x86-avx512"), info)
    assert avx512.mode == "unavailable"
    assert "AVX512F" in (avx512.reason or "") and "no AVX512VNNI" in (avx512.reason or "")
    assert "icelake (amd64:" in (avx512.reason or "")
    # Not the GPU node either: its taint keeps off pods that ask for no GPU.
    assert [n.name for n in kplace.matching_nodes(CONFIG.target("x86-avx2"), info.nodes)] == ["zen2"]
    vnni_host = kplace.host_for(CONFIG.target("x86-avx512-vnni"), info)
    assert vnni_host.arch == "x86_64" and "avx512_vnni" in vnni_host.cpu_flags and not vnni_host.gpu_runtime


def test_a_cluster_without_nfd_says_to_install_it() -> None:
    info = cluster([node("plain", "amd64")]).probe()
    placement = kplace.place(CONFIG.target("x86-avx2"), info)
    assert placement.mode == "unavailable" and "install NFD" in (placement.reason or "")
    assert kplace.place(CONFIG.target("x86-ort117"), info).mode == "native"  # no CPU flags asked: any amd64 node


def one_line_problem(exc: pytest.ExceptionInfo[EnvironmentProblem]) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.strip() == text and len(text) < 600, text
    return text


def test_probe_without_a_kubeconfig_is_one_clear_line(tmp_path: Path) -> None:
    backend = kbackend.KubernetesBackend(registry="r", env={"HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "no")})
    with pytest.raises(EnvironmentProblem) as raised:
        backend.probe()
    text = one_line_problem(raised)
    assert "no Kubernetes cluster is configured" in text and str(tmp_path / "no") in text and "KUBECONFIG" in text


def kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "farm-test",
                "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "farm-test", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    return path


def test_probe_of_a_cluster_that_is_down_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = kubeconfig(tmp_path, f"https://127.0.0.1:{port}")
    backend = kbackend.KubernetesBackend(registry="r", env={"HOME": str(tmp_path), "KUBECONFIG": str(path)})
    with pytest.raises(EnvironmentProblem) as raised:
        backend.probe()
    text = one_line_problem(raised)
    assert f"127.0.0.1:{port}" in text and "did not answer" in text and "kubectl get nodes" in text


def test_a_context_the_kubeconfig_lacks_is_one_clear_line(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, "https://127.0.0.1:6443")
    backend = kbackend.KubernetesBackend(
        registry="r", context="no-such-context", env={"HOME": str(tmp_path), "KUBECONFIG": str(path)}
    )
    with pytest.raises(EnvironmentProblem) as raised:
        backend.probe()
    assert "cannot be used" in one_line_problem(raised) and "no-such-context" in str(raised.value)


# --- a run, through a fake API server ----------------------------------------------------------------------------


class FakeSession:
    """An exec session that runs the command on this machine, with /farm/ under the fake node's folder and the
    image's Python replaced by this one: farm's real transfer scripts, over a stand-in for the websocket."""

    def __init__(self, root: Path, command: Sequence[str]) -> None:
        self.command = [sys.executable if c == runner.PYTHON else c.replace("/farm/", f"{root}/farm/") for c in command]
        self.stdin = io.BytesIO()
        self.out = b""
        self.err = b""
        self.open = True
        self.ran = False

    def write_stdin(self, data: bytes) -> None:
        assert isinstance(data, bytes) and len(data) <= transfer._CHUNK
        self.stdin.write(data)

    def is_open(self) -> bool:
        return self.open

    def update(self, timeout: float = 0) -> None:
        if not self.ran:
            done = subprocess.run(self.command, input=self.stdin.getvalue(), capture_output=True, timeout=60)
            self.out, self.err, self.ran, self.open = done.stdout, done.stderr, True, False

    def peek_stdout(self) -> bytes:
        return self.out

    def read_stdout(self) -> bytes:
        out, self.out = self.out, b""
        return out

    def peek_stderr(self) -> bytes:
        return self.err

    def read_stderr(self) -> bytes:
        err, self.err = self.err, b""
        return err

    def close(self) -> None:
        self.open = False


class FakeCluster:
    """Just enough of the API server and one node: the pod starts, waits for its inputs, runs a stand-in job that
    reads them and writes results, and ends the way the test says."""

    def __init__(
        self,
        root: Path,
        *,
        exit_code: int = 0,
        reason: str = "Completed",
        schedulable: bool = True,
        interrupt_after: int | None = None,
    ) -> None:
        self.root = root
        (root / "farm/control").mkdir(parents=True)  # the pod's emptyDirs: the controller's, and the inputs'
        (root / "farm/inputs").mkdir(parents=True)
        self.exit_code, self.reason, self.schedulable = exit_code, reason, schedulable
        self.interrupt_after = interrupt_after
        self.jobs: dict[str, dict[str, Any]] = {}
        self.policies: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.polls = 0
        self.ran = False
        self.clients = kclient.Clients(core=self, batch=self, networking=self, stream=self.stream, where="fake")

    # batch/v1
    def create_namespaced_job(self, namespace: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        assert kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
        self.jobs[body["metadata"]["name"]] = body
        return {**body, "metadata": {**body["metadata"], "uid": "0f0f-uid"}}

    def delete_namespaced_job(self, name: str, namespace: str, **kwargs: Any) -> None:
        assert kwargs["propagation_policy"] == "Background"
        self.deleted.append(name)

    # networking/v1
    def create_namespaced_network_policy(self, namespace: str, body: dict[str, Any], **_: Any) -> None:
        self.policies.append(body)

    # core/v1
    def list_namespaced_pod(self, namespace: str, *, label_selector: str, **_: Any) -> Any:
        self.polls += 1
        if self.interrupt_after is not None and self.polls > self.interrupt_after:
            raise KeyboardInterrupt
        name = label_selector.split("=", 1)[1]
        assert name in self.jobs and name not in self.deleted
        return SimpleNamespace(items=[self.pod(name)])

    def pod(self, name: str) -> dict[str, Any]:
        if not self.schedulable:
            return {
                "metadata": {"name": f"{name}-abcde"},
                "status": {
                    "phase": "Pending",
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
                        }
                    ],
                },
            }
        if self.polls == 1:
            return {
                "metadata": {"name": f"{name}-abcde"},
                "status": {
                    "phase": "Pending",
                    "initContainerStatuses": [{"name": "receive", "state": {"waiting": {"reason": "PodInitializing"}}}],
                },
            }
        if not (self.root / "farm/inputs/.farm-received").exists():
            return {
                "metadata": {"name": f"{name}-abcde"},
                "status": {
                    "phase": "Pending",
                    "initContainerStatuses": [
                        {"name": "receive", "state": {"running": {"startedAt": "2026-11-02T10:00:00Z"}}}
                    ],
                },
            }
        if not self.ran:
            self.run_job()
        return {
            "metadata": {"name": f"{name}-abcde"},
            "status": {
                "phase": "Running",
                "initContainerStatuses": [{"name": "receive", "state": {"terminated": {"exitCode": 0}}}],
                "containerStatuses": [
                    {
                        "name": "job",
                        "state": {
                            "terminated": {
                                "exitCode": self.exit_code,
                                "reason": self.reason,
                                "startedAt": "2026-11-02T10:00:01Z",
                                "finishedAt": "2026-11-02T10:00:13Z",
                            }
                        },
                    },
                    {"name": "collect", "state": {"running": {"startedAt": "2026-11-02T10:00:01Z"}}},
                ],
            },
        }

    def run_job(self) -> None:
        """The job container: reads its inputs where the pod mounts them (subPath m0), writes into out-1."""
        self.ran = True
        given = self.root / "farm/inputs/m0"
        out = self.root / "farm/outputs/out-1"
        (out / "variants").mkdir(parents=True)
        (out / "result.json").write_text((given / "spec-evaluate.json").read_text())
        (out / "variants" / "copy.onnx").write_bytes((given / "artifacts" / "s8s8-qdq.onnx").read_bytes())

    def connect_get_namespaced_pod_exec(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("called through stream() only")

    def stream(self, method: Any, pod: str, namespace: str, **kwargs: Any) -> FakeSession:
        assert method == self.connect_get_namespaced_pod_exec and kwargs["binary"] is True
        assert kwargs["tty"] is False and kwargs["_preload_content"] is False
        return FakeSession(self.root, kwargs["command"])

    def read_namespaced_pod_log(self, pod: str, namespace: str, **kwargs: Any) -> Any:
        assert kwargs["container"] == "job" and kwargs["follow"] is True
        return SimpleNamespace(stream=lambda _: iter([b"farm.job loading\nfarm.job eval", b"uating\n"]))


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(jobrun, "_POLL_S", 0.0)
    yield


def backend_on(fake: FakeCluster) -> kbackend.KubernetesBackend:
    return kbackend.KubernetesBackend(
        registry="registry.example.com", namespace="farm", clients=fake.clients, targets=CONFIG.targets
    )


def test_a_run_sends_inputs_in_and_brings_results_back_through_the_api(tmp_path: Path, fast: None) -> None:
    fake = FakeCluster(tmp_path / "node")
    inputs, out = folders(tmp_path)
    lines: list[str] = []
    result = backend_on(fake).run(spec_for(CONFIG.target("x86-avx2"), inputs, out), on_line=lines.append)
    assert result.failure is None and result.exit_code == 0 and result.duration_s == 12.0
    [name] = fake.jobs
    assert (
        fake.jobs[name]["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.example.com/farm-x86-avx2:0123456789abcdef"
    )
    # The policy is owned by its Job, so that deleting the Job (by farm, its TTL or by hand) removes it too.
    assert fake.policies[0]["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": "0f0f-uid", "blockOwnerDeletion": False}
    ]
    # Inputs arrived whole, and the results came back into the writable mount's folder.
    assert (out / "result.json").read_text() == '{"stage": "evaluate"}'
    assert (out / "variants" / "copy.onnx").read_bytes() == (inputs / "artifacts" / "s8s8-qdq.onnx").read_bytes()
    assert (tmp_path / "node/farm/control/collected").exists()  # the collector may end
    assert lines == ["farm.job loading", "farm.job evaluating"] and "evaluating" in result.log_tail
    assert fake.deleted == [name]


def test_an_oom_killed_job_still_gives_back_what_it_wrote(tmp_path: Path, fast: None) -> None:
    fake = FakeCluster(tmp_path / "node", exit_code=137, reason="OOMKilled")
    inputs, out = folders(tmp_path)
    result = backend_on(fake).run(spec_for(CONFIG.target("x86-avx512-vnni"), inputs, out))
    assert result.oom_killed and "ran out of memory" in (result.failure or "")
    assert (out / "result.json").is_file() and fake.deleted == list(fake.jobs)


def test_a_job_past_its_budget_reads_as_timed_out(tmp_path: Path, fast: None) -> None:
    fake = FakeCluster(tmp_path / "node", exit_code=124, reason="Error")
    inputs, out = folders(tmp_path)
    result = backend_on(fake).run(spec_for(CONFIG.target("arm64"), inputs, out))
    assert result.timed_out and "timed out" in (result.failure or "") and (out / "result.json").is_file()


def test_a_job_no_node_can_take_fails_with_the_schedulers_words(
    tmp_path: Path, fast: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobrun, "SCHEDULE_WAIT_S", 0.05)
    fake = FakeCluster(tmp_path / "node", schedulable=False)
    inputs, out = folders(tmp_path)
    result = backend_on(fake).run(spec_for(CONFIG.target("x86-avx512"), inputs, out))
    assert result.engine_error and "found no node" in result.engine_error
    assert "didn't match Pod's node affinity/selector" in result.engine_error
    assert fake.deleted == list(fake.jobs)


def test_ctrl_c_deletes_the_job(tmp_path: Path, fast: None) -> None:
    fake = FakeCluster(tmp_path / "node", interrupt_after=1)
    inputs, out = folders(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        backend_on(fake).run(spec_for(CONFIG.target("x86-avx2"), inputs, out))
    assert fake.deleted == list(fake.jobs) and len(fake.deleted) == 1


def test_sweep_deletes_only_jobs_whose_farm_process_is_gone(tmp_path: Path) -> None:
    here = this_process().split()
    gone = " ".join([here[0], here[1], str(2**22 + 7), "1"])  # a pid above pid_max: no such process
    elsewhere = "another-host 00000000-0000-0000-0000-000000000000 1 1"
    jobs = [
        {"metadata": {"name": n, "annotations": {"farm.host.owner": o}}}
        for n, o in (("farm-gone", gone), ("farm-alive", this_process()), ("farm-elsewhere", elsewhere))
    ]
    deleted: list[str] = []
    batch = SimpleNamespace(
        list_namespaced_job=lambda ns, **kw: SimpleNamespace(items=jobs),
        delete_namespaced_job=lambda name, ns, **kw: deleted.append(name),
    )
    backend = kbackend.KubernetesBackend(
        registry="r", namespace="farm", clients=kclient.Clients(core=None, batch=batch, networking=None)
    )
    assert backend.sweep() == ["Kubernetes Job farm/farm-gone of a farm process that is gone"]
    assert deleted == ["farm-gone"]


# --- images ------------------------------------------------------------------------------------------------------


class FakeDockerApi:
    def __init__(self, *, present: bool = False, error: str | None = None) -> None:
        self.present, self.error = present, error
        self.tagged: list[tuple[str, str, str]] = []
        self.pushed: list[tuple[str, str]] = []

    def inspect_distribution(self, ref: str) -> dict[str, Any]:
        if not self.present:
            raise RuntimeError("manifest unknown")
        return {"Descriptor": {"digest": "sha256:0"}}

    def tag(self, image: str, repository: str, tag: str) -> None:
        self.tagged.append((image, repository, tag))

    def push(self, repository: str, *, tag: str, stream: bool, decode: bool) -> Iterator[dict[str, Any]]:
        self.pushed.append((repository, tag))
        yield {"status": "Pushing", "id": "abc", "progressDetail": {"current": 1}}
        yield {"status": "Pushed", "id": "abc"}
        if self.error:
            yield {"error": self.error}


def test_ensure_image_pushes_the_content_tag_to_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = images.BuiltImage(
        target="x86-avx2", tag="farm/x86-avx2:0123456789abcdef", size_bytes=10, built_now=False, seconds=0.1
    )
    monkeypatch.setattr(imagebuild, "ensure_image", lambda *a, **k: local)
    api = FakeDockerApi()
    engine: Any = SimpleNamespace(client=SimpleNamespace(api=api))
    backend = kbackend.KubernetesBackend(
        registry="localhost:5001/", engine=engine, clients=FakeCluster(tmp_path).clients
    )
    lines: list[str] = []
    built = backend.ensure_image(CONFIG, CONFIG.target("x86-avx2"), on_line=lines.append, on_stage=lambda _: None)
    assert api.tagged == [("farm/x86-avx2:0123456789abcdef", "localhost:5001/farm-x86-avx2", "0123456789abcdef")]
    assert api.pushed == [("localhost:5001/farm-x86-avx2", "0123456789abcdef")]
    assert built.origin == "shipped" and built.tag == local.tag and lines == ["abc Pushed"]
    assert backend.image_ref(local.tag) is None
    api.present = True
    assert backend.image_ref(local.tag) == "localhost:5001/farm-x86-avx2:0123456789abcdef"
    assert (
        backend.ensure_image(CONFIG, CONFIG.target("x86-avx2"), on_line=lines.append, on_stage=lambda _: None).origin
        == "cached"
    )
    assert len(api.pushed) == 1  # there already: not pushed again
    denied: Any = SimpleNamespace(
        client=SimpleNamespace(api=FakeDockerApi(error="denied: requested access to the resource is denied"))
    )
    refused = kbackend.KubernetesBackend(registry="localhost:5001", engine=denied)
    with pytest.raises(BuildFailed, match=r"pushing localhost:5001/farm-x86-avx2:0123456789abcdef failed.*denied"):
        refused.ensure_image(CONFIG, CONFIG.target("x86-avx2"), on_line=lines.append, on_stage=lambda _: None)


def test_the_client_is_not_imported_until_a_cluster_is_needed() -> None:
    code = (
        "import sys, farm.cli, farm.backend.kubernetes.backend as k; "
        "assert 'kubernetes' not in sys.modules and 'kubernetes.client' not in sys.modules, sorted(sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
