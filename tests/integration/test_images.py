"""Issue 2 on the real engine: images from nothing, cached rebuilds, architectures, and the emulated AVX2 tier."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from farm.backend import runner
from farm.backend.engine import Engine, Mount, RunSpec
from farm.controller.fleet import BuildResults, Fleet, build_images
from farm.controller.progress import QuietReporter
from farm.host.probe import Placement
from farm.images.content import LABEL_HASH, LABEL_TARGET
from farm.targets.config import Target
from tests.conftest import missing
from tests.integration.conftest import image_of, runnable

pytestmark = pytest.mark.docker


def _spec(fleet: Fleet, target: Target, placement: Placement, image: str, args: list[str], **options: Any) -> RunSpec:
    """``python3 ARGS`` in ``image`` the way farm runs ``placement``: the runner gives a masked tier (an x86 CPU with
    cpuid_fault running a narrower tier natively) farm's preload library, built in the fleet's cache."""
    return runner.run_spec(target, placement, image, args, cache_dir=fleet.config.cache_dir, **options)


def test_every_runnable_target_gets_a_labelled_image(engine: Engine, fleet: Fleet, built: BuildResults) -> None:
    expected = sorted(t.name for t in fleet.config.targets if runnable(fleet, t.name) and not t.on_request)
    assert sorted(b.target for b in built.built) == expected
    assert {"x86-avx2", "arm64"} <= set(expected)
    skipped = dict(built.skipped)
    assert "on request" in skipped["gpu-s8s8"] or "NVIDIA" in skipped["gpu-s8s8"]
    for image in built.built:
        info = engine.image(image.tag)
        assert info is not None
        assert image.tag == f"farm/{image.target}:{info.labels[LABEL_HASH]}"
        # An image shared by targets of the same content names the target it was first built for.
        assert info.labels[LABEL_TARGET] in {b.target for b in built.built if b.tag.endswith(info.labels[LABEL_HASH])}
        assert (
            info.architecture
            == {"linux/amd64": "amd64", "linux/arm64": "arm64"}[fleet.config.target(image.target).platform]
        )


def test_targets_this_host_cannot_run_are_skipped_with_the_reason(fleet: Fleet, built: BuildResults) -> None:
    skipped = dict(built.skipped)
    for target in fleet.config.targets:
        if not runnable(fleet, target.name):
            assert skipped[target.name] == fleet.placements[target.name].reason
    vnni = fleet.placements["x86-avx512-vnni"]
    if not vnni.runnable:
        assert "QEMU cannot emulate AVX-512" in (vnni.reason or "")


def test_targets_of_the_same_content_share_one_image_and_no_build_leaves_dangling_images(
    engine: Engine, fleet: Fleet, built: BuildResults
) -> None:
    # x86-avx512-vnni and x86-avx2 differ only in the CPU they need: the same image content. Named, it is built even
    # where this CPU cannot run it, and it reuses x86-avx2's image.
    named = [fleet.config.target("x86-avx512-vnni")]
    vnni = build_images(fleet, named, explicit=True, reporter=QuietReporter()).built[0]
    avx2 = engine.image(image_of(built, "x86-avx2"))
    shared = engine.image(vnni.tag)
    assert avx2 is not None and shared is not None
    assert shared.id == avx2.id and set(shared.tags) >= {vnni.tag, image_of(built, "x86-avx2")}
    assert not vnni.built_now
    dangling = engine.client.api.images(filters={"dangling": True, "label": LABEL_HASH})
    assert not dangling, dangling


def test_warm_build_builds_nothing(fleet: Fleet, built: BuildResults) -> None:
    again = build_images(fleet, fleet.config.targets, explicit=False, reporter=QuietReporter())
    assert [b.tag for b in again.built] == [b.tag for b in built.built]
    assert not any(b.built_now for b in again.built)


@pytest.mark.emulation
@pytest.mark.parametrize(
    ("name", "machine"), [("arm64", "aarch64"), ("x86-avx2", "x86_64"), ("x86-avx512-vnni", "x86_64")]
)
def test_image_runs_its_architecture_and_pinned_runtime(
    engine: Engine, fleet: Fleet, built: BuildResults, name: str, machine: str
) -> None:
    target = fleet.config.target(name)
    spec = _spec(
        fleet,
        target,
        fleet.placements[name],
        image_of(built, name),
        ["-c", "import platform, onnxruntime; print(platform.machine(), onnxruntime.__version__)"],
    )
    result = engine.run(spec)
    assert result.exit_code == 0, result.log_tail
    assert result.log_tail.splitlines()[-1] == f"{machine} {target.runtime_version}"
    # The job's modules come compiled, as this image's Python reads them without compiling (content.job_bytecode).
    probe = _spec(fleet, target, fleet.placements[name], image_of(built, name), ["-c", BYTECODE_PROBE])
    checked = engine.run(probe)
    assert checked.exit_code == 0, checked.log_tail
    assert checked.log_tail.splitlines()[-1].startswith("stale or missing: [] of "), checked.log_tail


BYTECODE_PROBE = textwrap.dedent(
    """
    import importlib.util, pathlib
    sources = sorted(pathlib.Path("/opt/farm/app/farm").rglob("*.py"))
    def valid(source):
        cached = pathlib.Path(importlib.util.cache_from_source(str(source)))
        pyc = cached.read_bytes() if cached.is_file() else b""
        expected = importlib.util.MAGIC_NUMBER + (3).to_bytes(4, "little")
        return pyc[:8] == expected and pyc[8:16] == importlib.util.source_hash(source.read_bytes())
    print("stale or missing:", [str(s) for s in sources if not valid(s)], "of", len(sources))
    """
)


@pytest.mark.emulation
@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
@pytest.mark.parametrize(("name", "machine"), [("arm64", "aarch64"), ("x86-avx2", "x86_64")])
def test_plain_docker_run_of_an_image_reports_its_machine(built: BuildResults, name: str, machine: str) -> None:
    """The acceptance command, word for word: the image is usable without farm, through binfmt for arm64."""
    command = "import platform, onnxruntime; print(platform.machine(), onnxruntime.__version__)"
    result = subprocess.run(
        ["docker", "run", "--rm", image_of(built, name), "python3", "-c", command],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [machine, "1.31.1"]


SATURATION_PROBE = textwrap.dedent(
    """
    # A MatMul that saturates VPMADDUBSW: K=512, positive weights, inputs near 1, quantized dynamically.
    import numpy as np, onnx, onnxruntime as ort
    from onnx import helper, numpy_helper, TensorProto
    from onnxruntime.quantization import quantize_dynamic, QuantType
    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 1.0, (512, 16)).astype(np.float32)
    x = rng.uniform(0.9, 1.0, (4, 512)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "sat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, "/tmp/fp32.onnx")
    ref = x @ w
    for name, weight in (("u8s8", QuantType.QInt8), ("u8u8", QuantType.QUInt8)):
        quantize_dynamic("/tmp/fp32.onnx", f"/tmp/{name}.onnx", weight_type=weight)
        got = ort.InferenceSession(f"/tmp/{name}.onnx", providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        print(name, float(np.max(np.abs(got - ref) / np.abs(ref))))
    """
)


def _probe(
    engine: Engine, fleet: Fleet, target: Target, placement: Placement, image: str, folder: Path
) -> dict[str, float]:
    """The probe's maximum relative error per weight type, run in ``image`` the way ``placement`` says."""
    (folder / "probe.py").write_text(SATURATION_PROBE)
    folder.chmod(0o755)  # the container runs as an unprivileged user
    spec = _spec(fleet, target, placement, image, ["/probe/probe.py"], mounts=[Mount(source=folder, target="/probe")])
    result = engine.run(spec)
    assert result.exit_code == 0, result.log_tail
    lines = [ln.split() for ln in result.log_tail.splitlines()]
    return {parts[0]: float(parts[1]) for parts in lines if len(parts) == 2 and parts[0] in ("u8s8", "u8u8")}


@pytest.mark.emulation
def test_avx2_tier_takes_the_saturating_avx2_kernels(
    engine: Engine, fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    """Run the way farm runs x86-avx2 on this host (natively on AVX2, CPUID masked on an AVX-512 CPU with
    cpuid_fault, else under -cpu Haswell): U8S8 goes through VPMADDUBSW and saturates, U8U8 does not. Measured: about
    0.17 against 0.0002 (FINDINGS.md)."""
    name = "x86-avx2"
    errors = _probe(engine, fleet, fleet.config.target(name), fleet.placements[name], image_of(built, name), tmp_path)
    assert errors["u8s8"] > 0.05, errors
    assert errors["u8u8"] < 0.01, errors


@pytest.mark.emulation
def test_vnni_tier_does_not_saturate(engine: Engine, fleet: Fleet, built: BuildResults, tmp_path: Path) -> None:
    name = "x86-avx512-vnni"
    errors = _probe(engine, fleet, fleet.config.target(name), fleet.placements[name], image_of(built, name), tmp_path)
    # Measured: 0.0003 natively with VNNI, the same kernels' error as U8U8.
    assert errors["u8s8"] < 0.01, errors


@pytest.mark.emulation
def test_the_qemu_haswell_entrypoint_caps_mlas_at_avx2(
    engine: Engine, fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    """The mechanism an AVX-512 host uses for x86-avx2, forced here whatever this CPU has."""
    name = "x86-avx2"
    qemu = fleet.host.qemu.get("x86_64")
    if qemu is None:
        missing("qemu-x86_64 is not installed (run `farm doctor --fix` as root)")
    assert qemu is not None
    forced = Placement(mode="emulated", qemu=qemu, cpu_model="Haswell")
    errors = _probe(engine, fleet, fleet.config.target(name), forced, image_of(built, name), tmp_path)
    assert errors["u8s8"] > 0.05, errors
    assert errors["u8u8"] < 0.01, errors
