"""The tune stage (farm.job.tune) on the host's real onnxruntime: the greedy search that keeps the sensitive regions
of a model in fp32 until its int8 variant is within tolerance, or says to keep fp32."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from farm.job import ranking, result, tune
from farm.job.data import Dataset
from farm.job.kernels import KernelFinding
from farm.job.metrics import cosine
from farm.job.prepare import run_prepare
from farm.job.quantize import quantize
from farm.job.spec import DEFAULT_FLOOR, Calibration, Spec, SpecError, Tune
from farm.job.tune import kernelstep, points, progress, record
from farm.job.tunecontract import Point
from farm.job.variants import SUBGRAPH_VARIANT
from tests.hostfloor import best_naive_speedup, check_keep_fp32_is_earned, floor_for_second_search
from tests.modelgen import (
    SENSITIVE_REGION,
    make_if_branch_model,
    make_int8_never_pays,
    make_sensitive_cnn,
    make_softmax_map_cnn,
    write_job_spec,
)
from tests.tuneschema import check_tune

ROOT = Path(__file__).resolve().parents[2]
# Enough timed runs that the sensitive CNN's speedups stand clear of the floor its search test sets from them
# (tests/hostfloor.py); few enough that a search takes about a second.
TIMING = {"warmup": 3, "iterations": 30, "rounds": 5}
UNTIMED = {"warmup": 0, "iterations": 0, "rounds": 1}
EMULATED = {"mode": "emulated", "cpu_model": "Haswell"}
TRIAL_KEYS = [
    "index", "change", "lane", "step", "point", "added", "added_seven_bit", "returned", "exclude", "seven_bit", "fused",
    "variant", "calibration", "per_channel", "reduce_range", "nodes", "accuracy", "latency_ms", "speedup",
    "within_tolerance", "kept", "note", "why", "error", "seconds",
]  # fmt: skip
STATE_KEYS = [
    "schema", "status", "error", "target", "mode", "timed", "floor", "tolerance", "budget", "start", "candidate",
    "fp32", "naive", "ranking", "ranking_source", "fusions", "kernels", "lanes", "trials", "stopped", "verdict",
    "reason", "best", "excluded", "seven_bit", "returned", "tuned_model", "warnings", "seconds",
]  # fmt: skip


def read(path: Path) -> Any:
    """A file the tune stage wrote; a tune.json is checked against farm.tune/1 as it is read."""
    document = json.loads(path.read_text(encoding="utf-8"))
    if path.name == "tune.json":
        check_tune(document)
    return document


def tuned(tmp_path: Path, make: Any = make_sensitive_cnn, **spec: Any) -> dict[str, Any]:
    """Generate the model into ``tmp_path``, run the tune stage in-process, and return tune.json."""
    make(tmp_path / "model.onnx").save(tmp_path)
    spec.setdefault("timing", TIMING)
    spec.setdefault("artifacts", None)
    tune.run_tune(Spec.from_file(write_job_spec(tmp_path, stage="tune", **spec)), tmp_path / "out")
    return dict(read(tmp_path / "out" / "tune.json"))


def tuned_cosine(tmp_path: Path) -> float:
    """The tuned model's worst sample cosine against fp32, run here apart from the job."""
    data = Dataset.load(tmp_path / "inputs.npz")
    fp32 = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(tmp_path / "out" / "tuned.onnx"), providers=["CPUExecutionProvider"])
    return min(
        cosine(fp32.run(None, data.feed(i, ["x"]))[0], int8.run(None, data.feed(i, ["x"]))[0])
        for i in range(data.samples)
    )


def searched(tmp_path: Path, **spec: Any) -> tuple[dict[str, Any], Path]:
    """``tuned`` at the default floor; where int8 does not pay that much on this host, the "keep fp32" it found is
    checked against its own timings and the search runs again at a floor set from its naive speedups
    (tests/hostfloor.py). Returns tune.json and the folder that holds the model and ``out``."""
    first = tuned(tmp_path / "default", **spec)
    floor = floor_for_second_search([first], DEFAULT_FLOOR)
    if floor is None:
        return first, tmp_path / "default"
    return tuned(tmp_path / "floor", tune={"floor": floor}, **spec), tmp_path / "floor"


def test_the_search_keeps_the_sensitive_region_in_fp32_and_beats_fp32(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, folder = searched(tmp_path)
    floor = state["floor"]
    assert list(state) == STATE_KEYS
    assert state["schema"] == "farm.tune/1" and state["status"] == "done" and state["error"] is None
    assert state["target"] == "x86-avx2" and state["timed"] is True and 0 < floor <= DEFAULT_FLOOR
    # Every naive variant drifts far (the amplified channels take all 256 levels), and each is much faster.
    assert set(state["naive"]) == {"s8s8-qdq", "u8s8-qdq", "u8s8-qdq-rr", "u8u8-qdq"}
    for name, naive in state["naive"].items():
        assert naive["within_tolerance"] is False and naive["accuracy"]["cosine"] < 0.9, name
    assert state["fp32"]["accuracy"]["cosine"] == 1.0 and state["fp32"]["latency_ms"]["p50"] > 0

    trials = state["trials"]
    assert [list(t) for t in trials] == [TRIAL_KEYS] * len(trials)
    # Naive speeds this close to each other start no second lane; the lanes that a faster variant starts are
    # test_a_faster_variant_gets_a_lane_of_its_own's part.
    lane = [t for t in trials if t["lane"] == 0]
    start = lane[0]
    assert start["index"] == 0 and start["change"] == f"start: {state['start']}" and start["kept"] is True
    assert start["step"] == "start" and start["within_tolerance"] is False and start["speedup"] >= floor
    # The kernel check measured every quantized Conv and the Gemm on this host, and none of them loses accuracy in
    # its kernel: the loss is quantization's, so no kernel change is tried.
    assert {k["node"] for k in state["kernels"]} == {f"conv{i}" for i in range(5)} | {"classifier"}
    assert not any(k["lossy"] for k in state["kernels"]) and not any(t["step"] == "kernel" for t in trials)
    # The cheap knobs come next and none of them helps here: the loss is one tensor's range, not the calibration.
    # 7-bit weights everywhere is no knob where the kernel check ran: it finds the nodes that saturate.
    knobs = [t for t in lane if t["step"] == "knob"]
    assert [t["change"] for t in knobs] == ["calibration entropy", "calibration percentile", "per-channel weights"]
    assert all(t["kept"] is False and t["note"].startswith("undone") for t in knobs)

    # The ranking puts the amplified tensor (and the gain that makes it) first, with its region: the Mul that
    # writes it and the Conv that reads it. Its whole-tensor SQNR looks healthy; its typical channel is lost.
    worst = state["ranking"][0]
    assert state["ranking_source"] == "measured"
    assert worst["tensor"] == "amplified" and worst["nodes"] == list(SENSITIVE_REGION)
    assert set(worst["tensors"]) == {"amplified", "gain"}
    assert worst["sqnr_db"] < ranking.LOSSY_DB < 30 < worst["tensor_sqnr_db"]
    assert all(p["sqnr_db"] > ranking.LOSSY_DB for p in state["ranking"][1:])

    point, undo = [t for t in lane if t["step"] in ("point", "return")]
    assert point["point"] == 0 and point["added"] == list(SENSITIVE_REGION)
    assert point["exclude"] == list(SENSITIVE_REGION)
    assert point["kept"] is True and point["within_tolerance"] is True
    assert point["accuracy"]["cosine"] > 0.999 and point["accuracy"]["top1_agreement"] == 1.0
    assert point["speedup"] >= floor and point["latency_ms"]["p50"] > 0
    assert point["nodes"]["quantized"] == point["nodes"]["quantizable"] - 1
    # Within tolerance, the region is returned to int8 alone once: the model falls out again, so it stays fp32.
    assert undo["returned"] == list(SENSITIVE_REGION) and undo["exclude"] == []
    assert undo["kept"] is False and undo["note"] == "undone: out of tolerance without it"
    assert all(t["seconds"] > 0 for t in trials)

    assert state["verdict"] == "tuned" and f"trial {point['index']} is within tolerance" in state["stopped"]
    best = state["best"]
    assert best["exclude"] == list(SENSITIVE_REGION) and best["seven_bit"] == []
    assert best["speedup"] == trials[best["trial"]]["speedup"] >= point["speedup"]
    assert (
        state["excluded"]
        == best["changes"]
        == [
            {
                "trial": point["index"],
                "kind": "fp32",
                "nodes": list(SENSITIVE_REGION),
                "seven_bit": [],
                "cause": "sqnr",
                "kernel_node": None,
                "tensor": "amplified",
                "tensors": worst["tensors"],
                "sqnr_db": worst["sqnr_db"],
                "why": f"quantizing amplified alone keeps {worst['sqnr_db']:.1f} dB SQNR",
            }
        ]
    )
    assert state["seven_bit"] == [] and state["returned"] == []
    assert state["tuned_model"] == "tuned.onnx" and "within tolerance" in state["reason"]
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["tune.json", "tuned.onnx"]
    assert tuned_cosine(folder) > 0.999

    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("farm:")]
    assert f"farm: trial {point['index']}: exclude the region of amplified (0.0 dB): amplify, conv2 -> " in "\n".join(
        lines
    )
    assert lines[-1].startswith("farm: tuned: ")


def test_where_int8_does_not_pay_by_the_floor_the_search_keeps_fp32_and_says_why(tmp_path: Path) -> None:
    """The other side of ``searched``, on every CPU: at a floor twice the best naive speedup that this host measured
    for the sensitive CNN, no int8 model pays, and "keep fp32" names the floor and rests on the search's timings."""
    probe = tuned(tmp_path / "probe", tune={"budget_trials": 1})
    floor = round(2 * best_naive_speedup(probe), 3)
    state = tuned(tmp_path / "high", tune={"floor": floor, "budget_trials": 4})
    assert state["floor"] == floor and all(n["speedup"] < floor for n in state["naive"].values())
    check_keep_fp32_is_earned(state, floor)
    assert f"below the floor {floor:g}x" in state["stopped"] and len(state["trials"]) == 1
    assert state["tuned_model"] is None and not (tmp_path / "high" / "out" / "tuned.onnx").exists()


def test_int8_that_never_pays_keeps_fp32_with_the_best_trade_off(tmp_path: Path) -> None:
    state = tuned(tmp_path, make=make_int8_never_pays, tune={"budget_trials": 3})
    assert state["status"] == "done" and state["verdict"] == "keep-fp32"
    # Q/DQ around 16x16 matrices costs more than int8 saves, so the search stops at its start, since keeping nodes
    # in fp32 only makes a model slower. A naive variant may still time near the floor in one run's noise (1.11x
    # seen under load), so the verdict is checked against the search's own timings, not against an expected speed.
    check_keep_fp32_is_earned(state, 1.1)
    assert len(state["trials"]) == 1 and state["trials"][0]["speedup"] < 1.1
    assert "below the floor 1.1x" in state["stopped"]
    assert state["reason"].startswith("nothing within tolerance beats fp32 by 1.1x")
    assert state["best"]["trial"] == 0 and state["best"]["speedup"] < 1.1 and state["best"]["accuracy"]["cosine"] < 0.99
    assert state["tuned_model"] is None and not (tmp_path / "out" / "tuned.onnx").exists()


def test_an_untimed_search_that_finds_nothing_int8_keeps_fp32(tmp_path: Path) -> None:
    """Emulated: accuracy only. The hidden layer's region spans both MatMuls, so the model that meets the tolerance
    quantizes nothing: fp32 under another name, never the tuned model."""
    state = tuned(tmp_path, make=make_int8_never_pays, timing=UNTIMED, target=EMULATED, tune={"budget_trials": 8})
    assert state["timed"] is False and state["mode"] == "emulated"
    assert state["verdict"] == "keep-fp32" and state["reason"].startswith("no int8 model within tolerance was found")
    assert len(state["trials"]) <= 1 + 8
    assert all(t["latency_ms"] is None and t["speedup"] is None for t in state["trials"])
    hidden = next(t for t in state["trials"] if t["point"] == 0)
    assert state["ranking"][0]["tensor"] == "h"
    # The Relu's input is not quantized while the Relu is folded into fc1, but is as soon as the Relu is excluded:
    # the region reaches back through it to fc1.
    # (quant_pre_process fuses each MatMul with its Add into a Gemm named "<matmul>/MatMulAddFusion".)
    assert [name.split("/")[0] for name in hidden["added"]] == ["fc1", "relu", "fc2"]
    assert hidden["nodes"]["quantized"] == 0 and hidden["within_tolerance"] is True and hidden["kept"] is False
    assert "no quantizable node in int8" in hidden["note"]
    assert state["best"] is not None and state["best"]["trial"] != hidden["index"]
    assert state["best"]["within_tolerance"] is False


def test_a_model_whose_compute_sits_inside_if_branches_keeps_fp32_and_says_why(tmp_path: Path) -> None:
    """The static quantizer does not enter If bodies: every start is fp32 under an int8 name, so there is no model
    to compare, and the reason says where the nodes are and which variant of farm matrix quantizes them."""
    state = tuned(tmp_path, make=make_if_branch_model, tune={"budget_trials": 4})
    assert state["status"] == "done" and state["verdict"] == "keep-fp32" and state["best"] is None
    (start,) = state["trials"]
    assert start["step"] == "start" and start["nodes"]["quantized"] == 0 and start["kept"] is False
    assert start["note"].startswith("undone: not quantized: all 4 quantizable nodes sit inside If/Loop/Scan bodies")
    assert state["reason"].startswith("no trial produced a model to compare (")
    assert state["reason"].endswith(f"`farm matrix` adds {SUBGRAPH_VARIANT} beside u8s8-dynamic)")
    assert state["tuned_model"] is None and not (tmp_path / "out" / "tuned.onnx").exists()


def test_nodes_the_opset_converter_adds_for_per_channel_weights_are_named(tmp_path: Path) -> None:
    """Per-channel weights need opset 13; raised from 11, the converter writes the Softmax as unnamed Shape, Flatten
    and Reshape nodes. Unnamed, a region around the Softmax would exclude the node "" (to the quantizer: every
    unnamed node) and the report would list a blank; named, they are excluded by their own names."""
    state = tuned(
        tmp_path,
        make=make_softmax_map_cnn,
        timing=UNTIMED,
        target=EMULATED,
        tune={"start": "u8s8-qdq-pc", "budget_trials": 6},
    )
    assert state["status"] == "done" and state["start"] == "u8s8-qdq-pc", state["error"]
    regions = [point["nodes"] for point in state["ranking"]]
    softmax = next(nodes for nodes in regions if "softmax" in nodes)
    assert "Reshape" in {name.split("_")[0] for name in softmax}, softmax
    assert not [nodes for nodes in regions if "" in nodes], regions
    assert not [t["exclude"] for t in state["trials"] if "" in t["exclude"]]


def test_several_saturating_nodes_get_7_bit_weights_everywhere_in_one_trial_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the kernel check finds several nodes saturating, one trial of 7-bit weights for all of them comes before
    a trial or two per node. The findings are given (whether MLAS saturates depends on this CPU; test_job_kernels
    measures it); every trial is a real model run here."""
    saturating = [
        KernelFinding(node=f"conv{i}", op="Conv", weight=f"w{i}", kernel_db=8.0, precise_db=90.0) for i in (0, 1, 3)
    ]
    monkeypatch.setattr(kernelstep, "check_kernels", lambda *args, **kwargs: list(saturating))
    state = tuned(tmp_path, timing=UNTIMED, target=EMULATED, tune={"start": "u8s8-qdq", "budget_trials": 8})
    kernel = [t for t in state["trials"] if t["step"] == "kernel"]
    first = kernel[0]
    assert first["index"] == 1 and first["reduce_range"] is False, first
    assert first["added_seven_bit"] == first["seven_bit"] == ["w0", "w1", "w3"], first
    assert first["change"].startswith("7-bit weights for the 3 nodes that saturate here (conv0, conv1, conv3)")
    if first["kept"]:
        assert kernel == [first]  # the nodes it remedied are not tried one by one
    else:
        # Node by node, as for one node, with the idle count starting at the group's trial.
        assert kernel[1]["added_seven_bit"] == ["w0"] and kernel[1]["seven_bit"] == ["w0"]


class _CpuPosingAsCuda(ort.InferenceSession):  # type: ignore[misc]
    """A session that runs on the CPU and reports the CUDA provider it was asked for, as on a GPU host."""

    def __init__(self, path_or_bytes: Any, sess_options: Any = None, providers: Any = None, **kwargs: Any) -> None:
        super().__init__(path_or_bytes, sess_options=sess_options, providers=["CPUExecutionProvider"], **kwargs)

    def get_providers(self) -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_on_an_accelerator_target_the_kernel_check_does_not_run_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel check times the CPU's (MLAS's) int8 kernels node by node; a target whose first provider is an
    accelerator runs its own, so the search skips the check and warns. The spec names CUDAExecutionProvider first,
    which is what the search decides from; there is no GPU here, so the sessions run on the CPU and report CUDA
    (else the job would rightly refuse them as a silent fallback). Everything else is the real search."""
    monkeypatch.setattr(ort, "InferenceSession", _CpuPosingAsCuda)
    monkeypatch.delattr(ort, "preload_dlls", raising=False)  # it would look for CUDA's libraries

    def no_kernel_check(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the kernel check ran on an accelerator target")

    monkeypatch.setattr(kernelstep, "check_kernels", no_kernel_check)
    cuda = {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
    state = tuned(tmp_path, timing=UNTIMED, target=cuda, tune={"start": "u8s8-qdq", "budget_trials": 4})
    assert state["status"] == "done", state["error"]
    # The naive start is out of tolerance, so the search reached the step where the kernel check comes first.
    assert not state["trials"][0]["within_tolerance"], state["trials"][0]
    assert len(state["trials"]) > 1, state["trials"]
    assert "the kernel check measures CPU int8 kernels; it does not run on accelerator targets" in state["warnings"]
    assert state["kernels"] == [] and not [t for t in state["trials"] if t["step"] == "kernel"], state["trials"]


def test_kernel_remedies_that_do_not_move_the_metric_give_way_to_the_ranking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dozen lossy nodes whose remedies change nothing (here: nodes the model does not have): after
    MAX_IDLE_TRIALS of them in a row the search goes on to the knobs and the SQNR ranking, which finds the region."""
    lossy = [KernelFinding(node=f"ghost{i}", op="Conv", weight=None, kernel_db=5.0, precise_db=None) for i in range(12)]
    monkeypatch.setattr(kernelstep, "check_kernels", lambda *args, **kwargs: list(lossy))
    state = tuned(tmp_path, timing=UNTIMED, target=EMULATED, tune={"start": "u8s8-qdq", "budget_trials": 30})
    kernel = [t for t in state["trials"] if t["step"] == "kernel"]
    assert [t["added"] for t in kernel] == [[f"ghost{i}"] for i in range(tune.MAX_IDLE_TRIALS)]
    assert not any(t["kept"] for t in kernel)
    assert state["verdict"] == "tuned" and set(SENSITIVE_REGION) <= set(state["best"]["exclude"]), state["reason"]


def test_a_given_ranking_and_start_are_used_without_measuring_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_ranking(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the native ranking was given; the emulated target must not rank again")

    monkeypatch.setattr(points, "rank_points", no_ranking)
    ranking = [
        {"nodes": ["conv4"], "tensor": "w4", "sqnr_db": 39.0},
        {"nodes": list(SENSITIVE_REGION), "tensor": "amplified", "sqnr_db": 0.0, "tensors": ["amplified", "gain"]},
    ]
    state = tuned(tmp_path, timing=UNTIMED, target=EMULATED, tune={"ranking": ranking, "start": "s8s8-qdq"})
    assert state["ranking_source"] == "given" and state["ranking"] == ranking
    assert state["start"] == "s8s8-qdq" and state["trials"][0]["variant"] == "s8s8-qdq"
    searched = [t for t in state["trials"] if t["point"] is not None]
    assert [(t["point"], t["added"], t["kept"]) for t in searched] == [
        (0, ["conv4"], False),
        (1, list(SENSITIVE_REGION), True),
    ]
    assert state["verdict"] == "tuned" and "not timed" in state["reason"]
    assert state["best"]["exclude"] == list(SENSITIVE_REGION) and state["best"]["speedup"] is None
    assert tuned_cosine(tmp_path) > 0.999


def test_the_trial_budget_stops_the_search(tmp_path: Path) -> None:
    state = tuned(tmp_path, timing=UNTIMED, tune={"budget_trials": 2})
    assert [t["index"] for t in state["trials"]] == [0, 1, 2]
    assert state["stopped"] == "the trial budget (2) is spent" and state["ranking"] == []
    assert state["verdict"] == "keep-fp32" and "the trial budget (2) is spent" in state["reason"]
    assert state["best"]["trial"] in (0, 1, 2) and state["status"] == "done"


def test_the_time_budget_stops_the_search_after_its_start(tmp_path: Path) -> None:
    state = tuned(tmp_path, timing=UNTIMED, tune={"budget_s": 0.001})
    assert [t["index"] for t in state["trials"]] == [0]
    assert state["stopped"] == "the time budget (0.001 s) is spent" and state["verdict"] == "keep-fp32"


def test_tune_json_is_rewritten_after_every_trial_and_survives_an_interruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[dict[str, Any]] = []
    real_write = result.write_json_atomic

    def recording(path: Path, data: Any) -> None:
        real_write(path, data)
        written.append(read(path))

    def interrupting(text: str) -> None:
        if text.startswith("trial 3:"):
            raise KeyboardInterrupt

    monkeypatch.setattr(record, "write_json_atomic", recording)
    monkeypatch.setattr(progress, "say", interrupting)
    with pytest.raises(KeyboardInterrupt):
        tuned(tmp_path, timing=UNTIMED)
    counts = [len(state["trials"]) for state in written]
    # One write per trial, each holding the trials so far, and none lost between them.
    assert [c for i, c in enumerate(counts) if i == 0 or c != counts[i - 1]] == [0, 1, 2, 3, 4]
    left = read(tmp_path / "out" / "tune.json")
    assert left["status"] == "running" and left["verdict"] is None
    assert [t["index"] for t in left["trials"]] == [0, 1, 2, 3]
    assert not (tmp_path / "out" / "tune-work").exists()


def test_the_job_runs_the_tune_stage_with_prepare_s_artifacts(tmp_path: Path) -> None:
    data = make_sensitive_cnn(tmp_path / "model.onnx")
    data.save(tmp_path)
    run_prepare(Spec.from_file(write_job_spec(tmp_path, stage="prepare", candidates=["u8s8-qdq"])), tmp_path / "prep")
    (tmp_path / "prep" / "artifacts").rename(tmp_path / "artifacts")
    spec = write_job_spec(
        tmp_path,
        stage="tune",
        candidates=["u8s8-qdq"],
        timing=UNTIMED,
        target=EMULATED,
        tune={"budget_trials": 10, "floor": 1.5},
    )
    done = subprocess.run(
        [sys.executable, "-m", "farm.job", str(spec), str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "farm: start from u8s8-qdq" in done.stdout
    state = read(tmp_path / "out" / "tune.json")
    assert state["floor"] == 1.5 and state["budget"] == {"seconds": None, "trials": 10}
    assert state["naive"]["u8s8-qdq"]["accuracy"]["cosine"] < 0.9
    assert state["verdict"] == "tuned" and state["best"]["exclude"] == list(SENSITIVE_REGION)


def test_the_spec_s_tune_block(tmp_path: Path) -> None:
    def parse(**spec: Any) -> Spec:
        return Spec.from_file(write_job_spec(tmp_path, stage="tune", **spec))

    assert parse().tune is None and parse().stage == "tune"
    settings = parse(tune={}).tune
    assert settings == Tune() and settings is not None and settings.floor == 1.1
    given = parse(
        tune={
            "budget_s": 60,
            "budget_trials": 0,
            "floor": 1.2,
            "start": "u8u8-qdq",
            "ranking": [{"nodes": ["a"], "tensor": "t", "sqnr_db": None, "extra": 1}],
        }
    ).tune
    assert given == Tune(
        budget_s=60.0,
        budget_trials=0,
        floor=1.2,
        start="u8u8-qdq",
        ranking=(Point(nodes=("a",), tensor="t", sqnr_db=None),),
    )
    bad = {
        "tune holds unknown keys ['budget']": {"budget": 3},
        "tune.budget_s must be above 0": {"budget_s": 0},
        "tune.budget_trials must be at least 0": {"budget_trials": -1},
        "tune.floor must be at least 0": {"floor": -1},
        "tune.start is 'u8s8-dynamic'; expected one of": {"start": "u8s8-dynamic"},
        "tune.ranking[0].nodes is empty": {"ranking": [{"nodes": [], "tensor": "t", "sqnr_db": 1.0}]},
        "tune.ranking[0].tensor is missing": {"ranking": [{"nodes": ["a"], "sqnr_db": 1.0}]},
        "tune.ranking[1] must be an object": {"ranking": [{"nodes": ["a"], "tensor": "t", "sqnr_db": 1}, "a"]},
    }
    for message, block in bad.items():
        with pytest.raises(SpecError, match=re.escape(message)):
            parse(tune=block)


def test_quantize_leaves_excluded_nodes_in_fp32_and_records_them(tmp_path: Path) -> None:
    data = make_sensitive_cnn(tmp_path / "model.onnx", samples=4)
    dataset = Dataset(inputs=data.inputs, labels=None, samples=4)
    calibration = Calibration(method="minmax", samples=4)
    plain = quantize("u8s8-qdq", data.path, tmp_path / "plain.onnx", dataset=dataset, calibration=calibration)
    assert "nodes_to_exclude" not in plain and plain["per_channel"] is False
    varied = quantize(
        "u8s8-qdq",
        data.path,
        tmp_path / "varied.onnx",
        dataset=dataset,
        calibration=calibration,
        exclude=SENSITIVE_REGION,
        per_channel=True,
        reduce_range=True,
    )
    assert varied["nodes_to_exclude"] == list(SENSITIVE_REGION)
    assert varied["per_channel"] is True and varied["reduce_range"] is True
    assert varied["nodes"]["quantized"] == plain["nodes"]["quantized"] - 1
    model = onnx.load(str(tmp_path / "varied.onnx"))
    conv2 = next(n for n in model.graph.node if n.name == "conv2")
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert all(producers.get(name) != "DequantizeLinear" for name in conv2.input)


def _hardswish_graph() -> onnx.ModelProto:
    """Conv, BatchNorm as Mul/Add, hardswish as Add/Clip/Mul/Div, Conv: the chain of an OCR detector."""
    constant = numpy_helper.from_array
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
        helper.make_node("Mul", ["c1", "s"], ["m"], name="bn_mul"),
        helper.make_node("Add", ["m", "b"], ["bn"], name="bn_add"),
        helper.make_node("Add", ["bn", "three"], ["a3"], name="hs_add"),
        helper.make_node("Clip", ["a3", "zero", "six"], ["clipped"], name="hs_clip"),
        helper.make_node("Mul", ["bn", "clipped"], ["hm"], name="hs_mul"),
        helper.make_node("Div", ["hm", "six"], ["hs"], name="hs_div"),
        helper.make_node("Conv", ["hs", "w2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Add", ["r2", "hs"], ["y"], name="residual"),
    ]
    weights = [constant(np.ones((2, 2, 1, 1), np.float32), n) for n in ("w1", "w2")]
    scalars = [
        constant(np.array(v, np.float32), n)
        for n, v in (("s", 1.0), ("b", 0.0), ("three", 3.0), ("zero", 0.0), ("six", 6.0))
    ]
    graph = helper.make_graph(
        nodes,
        "hardswish",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=weights + scalars,
    )
    return helper.make_model(graph)


def test_a_region_follows_lossy_tensors_through_elementwise_nodes_to_the_compute_around_them() -> None:
    graph = ranking._Graph(_hardswish_graph())
    # conv1's output is wide, and so is everything the BatchNorm and hardswish make of it, but for the Clip's.
    lossy = {
        "c1": 1.0,
        "m": 1.0,
        "bn": 1.0,
        "a3": 1.0,
        "clipped": 35.0,
        "hm": 1.0,
        "hs": 2.0,
        "c2": 38.0,
        "r2": 38.0,
        "x": 40.0,
    }
    chain = ["conv1", "bn_mul", "bn_add", "hs_add", "hs_clip", "hs_mul", "hs_div", "conv2", "residual"]
    assert graph.region("bn", lossy) == chain
    assert graph.region("hs", lossy) == chain
    # A well-behaved tensor's region is the nodes that touch it; compute nodes end every region.
    assert graph.region("c2", lossy) == ["conv2", "relu2"]
    assert graph.region("x", lossy) == ["conv1"]
    # Unquantized neighbours (a Relu folded into its Conv) join only from a lossy tensor, for two tensors in a row.
    assert graph.region("r2", {"r2": 1.0}) == ["hs_mul", "hs_div", "conv2", "relu2", "residual"]
    assert graph.region("r2", {"r2": 30.0}) == ["relu2", "residual"]


def test_the_tune_stage_ships_with_the_job_alone(tmp_path: Path) -> None:
    """Only farm/__init__.py and farm/job/ go into the images: the tune stage must pull in no other farm module."""
    (tmp_path / "farm").mkdir()
    shutil.copy(ROOT / "farm" / "__init__.py", tmp_path / "farm")
    shutil.copytree(ROOT / "farm" / "job", tmp_path / "farm" / "job", ignore=shutil.ignore_patterns("__pycache__"))
    probe = (
        "import json, sys, farm.job.tune; "
        "print(json.dumps(sorted(m for m in sys.modules if m.partition('.')[0] in ('farm', 'tests'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    modules = json.loads(done.stdout)
    assert "farm.job.tune" in modules
    assert all(m in ("farm", "farm.job") or m.startswith("farm.job.") for m in modules), modules
