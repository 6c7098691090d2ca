"""The kernel check (farm.job.kernels) and what the tune stage makes of it, on the host's real onnxruntime.

Whether MLAS's U8S8 kernels saturate depends on this CPU: they add int16 pair sums (VPMADDUBSW) on x86 without
VNNI and keep 32-bit sums with VNNI and on arm64. Every expectation here is derived from the host's own flags, so the
tests hold on both kinds of machine, and each kind runs the branch it has.
"""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from farm.controller.jobs import VNNI_FLAGS
from farm.host.probe import read_cpu_flags
from farm.job import tune
from farm.job.codec import decode, encode
from farm.job.data import Dataset
from farm.job.kernels import LOSSY_KERNEL_DB, KernelFinding, check_kernels
from farm.job.quantize import quantize
from farm.job.spec import Calibration, Spec, SpecError, SpecTarget
from farm.job.tunecontract import CitedKernel
from tests.modelgen import SATURATING_HEAD, SATURATING_WEIGHT, make_saturating_cnn, write_job_spec
from tests.tuneschema import check_tune

# MLAS picks VPDPBUSD (32-bit sums) for U8S8 where VNNI is present.
HOST_SATURATES = platform.machine() == "x86_64" and not (VNNI_FLAGS & read_cpu_flags())
UNTIMED = {"warmup": 0, "iterations": 0, "rounds": 1}
TIMING = {"warmup": 3, "iterations": 30, "rounds": 5}


def host_target(*, saturation_risk: bool) -> SpecTarget:
    return SpecTarget(
        name="host",
        platform="linux/amd64",
        arch="x86_64",
        mode="native",
        cpu_model=None,
        providers=("CPUExecutionProvider",),
        x86_vnni=not saturation_risk,
    )


def quantized(
    tmp_path: Path, variant: str = "u8s8-qdq", **options: Any
) -> tuple[Path, Path, list[dict[str, Any]], dict[str, Any]]:
    data = make_saturating_cnn(tmp_path / "model.onnx")
    dataset = Dataset(inputs=data.inputs, labels=None, samples=len(data.labels))
    record = quantize(
        variant,
        data.path,
        tmp_path / f"{variant}.onnx",
        dataset=dataset,
        calibration=Calibration(method="minmax", samples=16),
        **options,
    )
    feeds = [{"x": data.inputs["x"][i]} for i in range(len(data.labels))]
    return data.path, tmp_path / f"{variant}.onnx", feeds, record


def test_the_kernel_check_finds_the_node_whose_kernel_saturates_where_this_cpu_saturates(tmp_path: Path) -> None:
    source, model, feeds, _ = quantized(tmp_path)
    findings = check_kernels(source, model, feeds, target=host_target(saturation_risk=True), threads=1)
    by_node = {f.node: f for f in findings}
    # Every quantized Conv and the Gemm head is measured, worst first, each with its weight's float name.
    assert set(by_node) == {"conv0", "conv1", "conv2", "conv3", SATURATING_HEAD}
    assert [f.kernel_db for f in findings] == sorted(f.kernel_db for f in findings)
    assert by_node[SATURATING_HEAD].weight == SATURATING_WEIGHT and by_node["conv0"].weight == "w0"
    assert all(f.precise_db is not None for f in findings)  # a tier at risk is also run with 32-bit sums
    head = by_node[SATURATING_HEAD]
    if HOST_SATURATES:
        # VPMADDUBSW: the head's pairs of 255 x 127 overflow int16; with 32-bit sums its kernel is exact again.
        assert head.lossy and head.saturates and head.kernel_db < 0 and (head.precise_db or 0) > 100, head
        assert "saturate" in head.describe() and "VPMADDUBSW" in head.describe()
    else:
        assert not head.lossy and not head.saturates and head.kernel_db > LOSSY_KERNEL_DB, head
        assert head.describe().startswith("its int8 kernel (Gemm) is exact on this target")
    assert not any(f.lossy for f in findings if f.node != SATURATING_HEAD), findings
    # A tier without the risk is not run a third time, and its findings never claim saturation.
    safe = check_kernels(source, model, feeds, target=host_target(saturation_risk=False), threads=1)
    assert all(f.precise_db is None and not f.saturates for f in safe)
    assert {f.node: f.kernel_db for f in safe} == {f.node: f.kernel_db for f in findings}


def test_u8u8_kernels_do_not_saturate_anywhere(tmp_path: Path) -> None:
    source, model, feeds, _ = quantized(tmp_path, "u8u8-qdq")
    findings = check_kernels(source, model, feeds, target=host_target(saturation_risk=True), threads=1)
    assert len(findings) == 5 and not any(f.lossy for f in findings), findings


def test_a_finding_round_trips_through_tune_json() -> None:
    finding = KernelFinding(node="head", op="Gemm", weight="fc", kernel_db=-6.2, precise_db=131.5)
    written = json.loads(json.dumps(encode(finding.cited())))
    assert written == {
        "node": "head",
        "op": "Gemm",
        "weight": "fc",
        "kernel_db": -6.2,
        "precise_db": 131.5,
        "lossy": True,
        "saturates": True,
    }
    assert KernelFinding.of(decode(CitedKernel, written)) == finding
    assert encode(finding.entry("u8s8-qdq")) == {**written, "variant": "u8s8-qdq"}
    assert finding.brief() == "its Gemm kernel keeps -6.2 dB here, 131.5 dB with 32-bit sums: it saturates"


def test_seven_bit_weights_for_one_node_only(tmp_path: Path) -> None:
    _, model, _, record = quantized(tmp_path, seven_bit=[SATURATING_WEIGHT])
    assert record["seven_bit"] == [SATURATING_WEIGHT] and record["reduce_range"] is False
    weights = {
        t.name: numpy_helper.to_array(t)
        for t in onnx.load(str(model)).graph.initializer
        if t.name.endswith("_quantized") and t.data_type == onnx.TensorProto.INT8
    }
    # 7 bits (symmetric [-64, 64]) for the head alone; the Convs keep all 8.
    assert np.abs(weights[f"{SATURATING_WEIGHT}_quantized"]).max() == 64
    assert all(np.abs(w).max() == 127 for name, w in weights.items() if not name.startswith(SATURATING_WEIGHT))


def tuned(tmp_path: Path, **spec: Any) -> dict[str, Any]:
    make_saturating_cnn(tmp_path / "model.onnx").save(tmp_path)
    spec.setdefault("artifacts", None)
    spec.setdefault("candidates", ["u8s8-qdq"])
    tune.run_tune(Spec.from_file(write_job_spec(tmp_path, stage="tune", **spec)), tmp_path / "out")
    written = json.loads((tmp_path / "out" / "tune.json").read_text())
    check_tune(written)
    return dict(written)


def test_a_saturating_head_gets_7_bit_weights_tried_then_fp32_where_this_cpu_saturates(tmp_path: Path) -> None:
    state = tuned(tmp_path, timing=UNTIMED, target={"mode": "emulated", "cpu_model": "Haswell"})
    assert state["verdict"] == "tuned", state["reason"]
    kernel = [t for t in state["trials"] if t["step"] == "kernel"]
    if not HOST_SATURATES:
        # Plain U8S8 is within tolerance here: nothing to repair, nothing kept out of int8.
        assert state["trials"][0]["within_tolerance"] and not kernel
        assert state["best"]["exclude"] == [] and state["best"]["seven_bit"] == []
        return
    seven, fp32 = kernel
    assert seven["added_seven_bit"] == [SATURATING_WEIGHT] and seven["seven_bit"] == [SATURATING_WEIGHT]
    # 7-bit weights end the saturation, and are closer (so kept for now), but this head's weights need 8 bits.
    assert seven["kept"] is True and seven["within_tolerance"] is False
    assert seven["change"].startswith(f"7-bit weights for {SATURATING_HEAD} ({SATURATING_WEIGHT}): its Gemm kernel")
    # fp32 for the head, from the same base (8-bit weights), is closer still and meets the tolerance.
    assert fp32["added"] == [SATURATING_HEAD] and fp32["seven_bit"] == [] and fp32["within_tolerance"] is True
    assert state["best"]["exclude"] == [SATURATING_HEAD] and state["best"]["seven_bit"] == []
    (change,) = state["excluded"]
    assert change["cause"] == "kernel" and change["kernel_node"] == SATURATING_HEAD
    assert f"7-bit weights for it (trial {seven['index']}) left cosine" in change["why"]
    # Within tolerance, the head is returned to int8 alone once, and falls out again.
    undo = state["trials"][-1]
    assert undo["step"] == "return" and undo["returned"] == [SATURATING_HEAD] and undo["kept"] is False


def test_an_emulated_target_checks_the_given_model_and_returns_what_it_does_not_need(tmp_path: Path) -> None:
    """The candidate as a saturating tier's search would give it: the head in fp32 for its kernel."""
    candidate = {
        "target": "x86-avx2",
        "variant": "u8s8-qdq",
        "calibration": "minmax",
        "per_channel": False,
        "reduce_range": False,
        "exclude": [SATURATING_HEAD],
        "seven_bit": [],
        "fused": False,
        # As the native search's best writes a kernel change: it names no ranked point.
        "changes": [
            {
                "trial": 3,
                "kind": "fp32",
                "nodes": [SATURATING_HEAD],
                "seven_bit": [],
                "cause": "kernel",
                "kernel_node": SATURATING_HEAD,
                "tensor": None,
                "tensors": [],
                "sqnr_db": None,
                "why": "its int8 kernel (Gemm) saturates there",
            }
        ],
    }
    state = tuned(
        tmp_path,
        timing=UNTIMED,
        candidates=["u8s8-qdq", "u8u8-qdq", "s8s8-qdq"],
        target={"name": "arm64", "mode": "emulated", "x86_vnni": None},
        tune={"candidate": candidate},
    )
    assert state["candidate"] == candidate and state["start"] == "u8s8-qdq"
    # Untimed, only the given model's own naive variant is evaluated: the others would cost QEMU time for nothing.
    assert list(state["naive"]) == ["u8s8-qdq"]
    first, undo = state["trials"][:2]
    assert first["change"].startswith("start: x86-avx2's tuned model (u8s8-qdq, 1 node kept in fp32)")
    assert first["exclude"] == [SATURATING_HEAD] and first["within_tolerance"] is True
    assert undo["step"] == "return" and undo["returned"] == [SATURATING_HEAD]
    head = next(k for k in state["kernels"] if k["node"] == SATURATING_HEAD)
    if HOST_SATURATES:
        # This CPU saturates like the tier that found it: the head stays fp32, for the reason it was given.
        assert head["lossy"] and undo["kept"] is False
        assert state["best"]["exclude"] == [SATURATING_HEAD] and state["returned"] == []
        (kept,) = state["excluded"]
        assert kept["from"] == "x86-avx2" and kept["why"] == "its int8 kernel (Gemm) saturates there"
    else:
        assert not head["lossy"] and undo["kept"] is True
        assert state["best"]["exclude"] == [] and state["excluded"] == []
        (returned,) = state["returned"]
        assert returned["returned"] == [SATURATING_HEAD]
        assert returned["why"].startswith("within tolerance without it: its int8 kernel (Gemm) is exact")


def test_a_faster_kernel_family_gets_a_lane_of_its_own(tmp_path: Path) -> None:
    """Timed: when plain U8S8's family ran faster than U8U8's by more than noise (it does on every x86 CPU, unless
    the host is very busy), the U8S8 family is searched after the first lane, from its plain recipe; the tuned model
    is the fastest within tolerance of them all."""
    state = tuned(
        tmp_path, timing=TIMING, candidates=["u8u8-qdq", "u8s8-qdq", "u8s8-qdq-rr"], tune={"start": "u8u8-qdq"}
    )
    naive, lanes, trials = state["naive"], state["lanes"], state["trials"]
    assert lanes[0]["variant"] == "u8u8-qdq" and lanes[0]["start_trial"] == 0
    family = max(naive["u8s8-qdq"]["speedup"], naive["u8s8-qdq-rr"]["speedup"])
    # The rule as farm.job.tune states it: past the rival family's naive speed (or the floor) by the noise margin.
    bar = max(naive["u8u8-qdq"]["speedup"], state["floor"]) * (1 + tune.FASTER_BY)
    rival = trials[0]["kept"] and trials[0]["within_tolerance"] and trials[0]["speedup"] >= state["floor"]
    if family > bar:
        second = lanes[1]
        # The plain recipe starts the lane (reduce_range is a knob of the family, not a start), naming the speeds
        # that justified it, with the first lane's settings when that lane found a model within tolerance.
        assert second["variant"] == "u8s8-qdq"
        start = trials[second["start_trial"]]
        if rival:
            assert second["from_trial"] == 0
            assert re.match(
                r"start: u8s8-qdq with trial 0's settings \(nothing kept in fp32\): its kernels ran "
                r"[0-9.]+x fp32 naive, against [0-9.]+x for u8u8-qdq's",
                start["change"],
            ), start["change"]
        else:
            assert second["from_trial"] is None and start["change"].startswith("start: u8s8-qdq (its kernels ran")
    else:
        assert len(lanes) == 1, lanes
    assert len({lane["variant"] for lane in lanes}) == len(lanes) <= 2  # one lane per family
    within = [t for t in trials if t["kept"] and t["within_tolerance"] and (t["speedup"] or 0) >= state["floor"]]
    if within:
        assert state["verdict"] == "tuned" and state["best"]["speedup"] == max(t["speedup"] for t in within)
    else:
        assert state["verdict"] == "keep-fp32"


def test_the_spec_s_candidate(tmp_path: Path) -> None:
    def parse(candidate: Any) -> Spec:
        return Spec.from_file(write_job_spec(tmp_path, stage="tune", tune={"candidate": candidate}))

    good = {
        "variant": "u8s8-qdq",
        "calibration": "minmax",
        "per_channel": False,
        "reduce_range": False,
        "exclude": ["head"],
        "seven_bit": [],
        "changes": [],
        "target": "x86-avx2",
    }
    parsed = parse(good).tune
    assert parsed is not None and parsed.candidate is not None and encode(parsed.candidate) == {**good, "fused": False}
    bad = {
        "tune.candidate holds unknown keys ['excluded']": {**good, "excluded": []},
        "tune.candidate.variant is 'u8s8-dynamic'; expected a static variant": {**good, "variant": "u8s8-dynamic"},
        "tune.candidate.calibration": {**good, "calibration": "max"},
        "tune.candidate.exclude[0] must be str, not int 1": {**good, "exclude": [1]},
        "tune.candidate.changes[0] must be an object": {**good, "changes": ["head"]},
    }
    for message, candidate in bad.items():
        with pytest.raises(SpecError, match=re.escape(message)):
            parse(candidate)


def test_seven_bit_weights_of_a_per_channel_model_stay_per_channel(tmp_path: Path) -> None:
    _, model, _, record = quantized(tmp_path, "u8s8-qdq-pc", seven_bit=[SATURATING_WEIGHT])
    assert record["per_channel"] is True and record["seven_bit"] == [SATURATING_WEIGHT]
    graph = onnx.load(str(model)).graph
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    dequantize = next(
        n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == f"{SATURATING_WEIGHT}_quantized"
    )
    # One scale per class (the Gemm's output axis, 1 without transB), and 7 bits.
    assert [a.i for a in dequantize.attribute if a.name == "axis"] == [1]
    assert initializers[dequantize.input[1]].shape == (10,)
    assert np.abs(initializers[f"{SATURATING_WEIGHT}_quantized"]).max() <= 64


def test_a_candidate_that_names_no_changes_gets_one_per_node_it_keeps_out(tmp_path: Path) -> None:
    candidate = {
        "target": "x86-avx2",
        "variant": "u8s8-qdq",
        "calibration": "minmax",
        "per_channel": False,
        "reduce_range": False,
        "exclude": [SATURATING_HEAD],
        "seven_bit": [],
    }
    state = tuned(
        tmp_path,
        timing=UNTIMED,
        target={"name": "arm64", "mode": "emulated", "x86_vnni": None},
        tune={"candidate": candidate},
    )
    undo = state["trials"][1]
    assert undo["step"] == "return" and undo["returned"] == [SATURATING_HEAD]
    if HOST_SATURATES:
        (kept,) = state["excluded"]
        assert kept["cause"] == "given" and kept["why"] == "x86-avx2's tuned model keeps it out of int8"
    else:
        assert state["best"]["exclude"] == [] and state["returned"][0]["returned"] == [SATURATING_HEAD]
