"""Issue 2 on the real engine: images from nothing, cached rebuilds, architectures, and the emulated AVX2 tier."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from farm import runner
from farm.engine import Engine, Mount
from farm.fleet import BuildResults, Fleet, build_images
from farm.images import LABEL_HASH, LABEL_TARGET
from tests.integration.conftest import image_of

pytestmark = pytest.mark.docker


def test_every_runnable_target_gets_a_labelled_image(engine: Engine, built: BuildResults) -> None:
    assert sorted(b.target for b in built.built) == ["arm64", "x86-avx2", "x86-avx512-vnni"]
    assert [name for name, _ in built.skipped] == ["gpu-s8s8"]
    for image in built.built:
        info = engine.image(image.tag)
        assert info is not None
        assert info.labels[LABEL_TARGET] == image.target
        assert image.tag == f"farm/{image.target}:{info.labels[LABEL_HASH]}"


def test_warm_build_builds_nothing(fleet: Fleet, built: BuildResults) -> None:
    again = build_images(fleet, fleet.config.targets, explicit=False, quiet=True)
    assert [b.tag for b in again.built] == [b.tag for b in built.built]
    assert not any(b.built_now for b in again.built)


@pytest.mark.emulation
@pytest.mark.parametrize(("name", "machine"), [("arm64", "aarch64"), ("x86-avx512-vnni", "x86_64")])
def test_image_runs_its_architecture_and_pinned_runtime(
    engine: Engine, fleet: Fleet, built: BuildResults, name: str, machine: str
) -> None:
    target = fleet.config.target(name)
    spec = runner.run_spec(
        target, fleet.placements[name], image_of(built, name),
        ["-c", "import platform, onnxruntime; print(platform.machine(), onnxruntime.__version__)"],
    )
    result = engine.run(spec)
    assert result.exit_code == 0, result.log_tail
    assert result.log_tail.splitlines()[-1] == f"{machine} {target.runtime_version}"


SATURATION_PROBE = textwrap.dedent(
    """
    # A MatMul that saturates VPMADDUBSW: K=512, positive weights, inputs near 1, quantized dynamically as U8S8.
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
    quantize_dynamic("/tmp/fp32.onnx", "/tmp/u8s8.onnx", weight_type=QuantType.QInt8)
    ref = x @ w
    got = ort.InferenceSession("/tmp/u8s8.onnx", providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    print("max_rel_error", float(np.max(np.abs(got - ref) / np.abs(ref))))
    """
)


@pytest.mark.emulation
def test_avx2_tier_takes_the_saturating_avx2_kernels(
    engine: Engine, fleet: Fleet, built: BuildResults, tmp_path: Path
) -> None:
    (tmp_path / "probe.py").write_text(SATURATION_PROBE)
    tmp_path.chmod(0o755)  # the container runs as an unprivileged user
    errors = {}
    for name in ("x86-avx2", "x86-avx512-vnni"):
        spec = runner.run_spec(
            fleet.config.target(name), fleet.placements[name], image_of(built, name), ["/probe/probe.py"],
            mounts=[Mount(source=tmp_path, target="/probe")],
        )
        result = engine.run(spec)
        assert result.exit_code == 0, result.log_tail
        line = next(ln for ln in result.log_tail.splitlines() if ln.startswith("max_rel_error"))
        errors[name] = float(line.split()[1])
    # Measured: about 0.17 under -cpu Haswell (VPMADDUBSW saturates) and 0.0003 natively with VNNI.
    assert errors["x86-avx2"] > 0.05, errors
    assert errors["x86-avx512-vnni"] < 0.01, errors
