"""`farm matrix`'s prepare stage with farm's artifact cache (farm/controller/artifacts.py), its prepare job replaced
by a fake that writes what a real one writes: a second run of the same work runs no job and says so, another
toolchain or setting makes its own, and what the cache cannot give is made again with a warning."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from farm.backend.engine import Engine, EngineInfo
from farm.backend.runspec import RunResult
from farm.controller import artifacts as stage
from farm.controller.artifacts import Prepared, make_artifacts
from farm.controller.fleet import Fleet
from farm.controller.jobs import INPUT_DIR, InputFiles, JobInputs, JobSettings, load_inputs
from farm.controller.progress import QuietReporter
from farm.host.probe import HostInfo, Mode, Placement
from farm.job.spec import Spec
from farm.targets.config import load_config

TAGS = {"x86-avx2": "farm/x86-avx2:1111", "arm64": "farm/arm64:2222", "x86-ort117": "farm/x86-ort117:3333"}
HOST = HostInfo(arch="x86_64", cpu_flags=frozenset({"avx2", "fma"}))


@dataclass
class FakePrepare:
    """run_job for the prepare stage: the artifacts of every candidate, or a failure."""

    calls: list[Spec] = field(default_factory=list)
    exit_code: int = 0

    def __call__(self, fleet: Fleet, target: Any, tag: str, spec: Spec, inputs: Path, out: Path, **_: Any) -> RunResult:
        self.calls.append(spec)
        record = {
            "schema": "farm.prepare/1",
            "warnings": [f"made by {tag}"],
            "variants": {name: {"status": "ok", "error": None, "quantization": None} for name in spec.candidates},
        }
        (out / "artifacts").mkdir()
        for name in spec.candidates:
            (out / "artifacts" / f"{name}.onnx").write_bytes(f"{tag} {name}".encode())
        for path in (out / "prepare.json", out / "artifacts" / "prepare.json"):
            path.write_text(json.dumps(record))
        return RunResult(exit_code=self.exit_code, log_tail="", oom_killed=False, timed_out=False, duration_s=0.1)


@pytest.fixture
def job(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePrepare]:
    fake = FakePrepare()
    monkeypatch.setattr(stage, "run_job", fake)
    yield fake


@pytest.fixture
def given() -> JobInputs:
    return load_inputs(InputFiles(), JobSettings())


def fleet(tmp_path: Path, x86: Mode = "native") -> Fleet:
    config = replace(load_config(env={}), cache_dir=tmp_path / "farm-cache", artifact_cache=tmp_path / "artifacts")
    placements = {t.name: Placement(mode="unavailable", reason="not here") for t in config.targets}
    placements |= {"x86-avx2": Placement(mode=x86), "x86-ort117": Placement(mode="native")}
    placements["arm64"] = Placement(mode="emulated", cpu_model="neoverse-n1")
    return Fleet(
        config=config,
        engine=cast(Engine, None),
        host=HOST,
        placements=placements,
        engine_info=cast(EngineInfo, None),
        hosts={name: HOST for name in placements},
    )


def run(
    tmp_path: Path,
    given: JobInputs,
    names: tuple[str, ...],
    *,
    settings: JobSettings | None = None,
    cache: bool = True,
    x86: Mode = "native",
) -> tuple[Prepared, list[str], Path]:
    """One matrix run's prepare stage, in a run folder of its own (the rewrite staged as the real one is)."""
    work = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    (work / INPUT_DIR).mkdir(parents=True)
    (work / INPUT_DIR / "rewritten.onnx").write_bytes(given.model.read_bytes())
    where = fleet(tmp_path, x86)
    warnings: list[str] = []
    prepared = make_artifacts(
        where,
        [where.config.target(n) for n in names],
        dict(TAGS),
        work=work,
        given=given,
        settings=settings or JobSettings(),
        cache=cache,
        reporter=QuietReporter(),
        warnings=warnings,
    )
    return prepared, warnings, work / INPUT_DIR


def test_a_second_run_of_the_same_work_runs_no_prepare_job_and_says_so(
    tmp_path: Path, given: JobInputs, job: FakePrepare, capsys: pytest.CaptureFixture[str]
) -> None:
    first, warnings, _ = run(tmp_path, given, ("x86-avx2", "arm64"))
    assert len(job.calls) == 1 and warnings == ["made by farm/x86-avx2:1111"]
    (made,) = first.stages
    assert (made.artifacts, made.maker, made.cached, made.targets) == ("made", "x86-avx2", True, ("x86-avx2", "arm64"))
    assert made.toolchain == "onnxruntime==1.31.1 onnx==1.20.1 ml_dtypes==0.6.0 sympy==1.14.0"

    second, warnings, inputs = run(tmp_path, given, ("x86-avx2", "arm64"))
    assert len(job.calls) == 1, "the second run quantized again"
    assert warnings == ["made by farm/x86-avx2:1111"]  # prepare's findings, replayed
    (reused,) = second.stages
    assert (reused.artifacts, reused.key, reused.cached) == ("reused", made.key, True)
    assert second.folders == {"x86-avx2": "artifacts", "arm64": "artifacts"}
    assert (inputs / "artifacts" / "u8s8-qdq.onnx").read_bytes() == b"farm/x86-avx2:1111 u8s8-qdq"
    assert json.loads((inputs / "artifacts" / "prepare.json").read_text())["variants"].keys() >= {"u8s8-qdq"}
    log = capsys.readouterr().err
    assert f"prepare int8 artifacts in x86-avx2: reused from the artifact cache (key {made.short_key}" in log


def test_an_emulated_target_alone_reuses_what_the_native_maker_of_its_toolchain_made(
    tmp_path: Path, given: JobInputs, job: FakePrepare, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its toolchain's native target was not selected: its image (already built) makes the artifacts.
    built = {"x86-avx2": SimpleNamespace(image=SimpleNamespace(tag=TAGS["x86-avx2"]), error=None)}
    monkeypatch.setattr(stage, "ensure_images", lambda fleet, targets, reporter: built)
    run(tmp_path, given, ("x86-avx2", "arm64"))
    alone, _, _ = run(tmp_path, given, ("arm64",))
    assert len(job.calls) == 1 and alone.stages[0].artifacts == "reused"


def test_an_emulated_target_alone_has_its_artifacts_made_by_a_masked_target_of_its_toolchain(
    tmp_path: Path, given: JobInputs, job: FakePrepare, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a CPU with AMX every x86 tier is masked: one of them still calibrates at the host's speed, not QEMU's.
    built = {"x86-avx2": SimpleNamespace(image=SimpleNamespace(tag=TAGS["x86-avx2"]), error=None)}
    monkeypatch.setattr(stage, "ensure_images", lambda fleet, targets, reporter: built)
    alone, warnings, _ = run(tmp_path, given, ("arm64",), x86="masked")
    (made,) = alone.stages
    assert (made.maker, made.targets) == ("x86-avx2", ("arm64",)), made
    assert not any("under QEMU" in w for w in warnings), warnings


def test_another_runtime_or_calibration_or_data_quantizes_again(
    tmp_path: Path, given: JobInputs, job: FakePrepare
) -> None:
    first, _, _ = run(tmp_path, given, ("x86-avx2",))
    # x86-ort117's runtime cannot read what 1.31 writes: its image makes its own, under another key.
    older, _, inputs = run(tmp_path, given, ("x86-ort117",))
    assert len(job.calls) == 2 and older.stages[0].artifacts == "made" and older.stages[0].key != first.stages[0].key
    assert (inputs / "artifacts" / "u8s8-qdq.onnx").read_bytes() == b"farm/x86-ort117:3333 u8s8-qdq"
    entropy, _, _ = run(tmp_path, given, ("x86-avx2",), settings=JobSettings(calibration="entropy"))
    assert len(job.calls) == 3 and entropy.stages[0].artifacts == "made"
    fewer = replace(given, data=replace(given.data, inputs={k: v[:10] for k, v in given.data.inputs.items()}))
    other_data, _, _ = run(tmp_path, fewer, ("x86-avx2",))
    assert len(job.calls) == 4 and other_data.stages[0].artifacts == "made"
    # Each is kept: every one of them is a hit now.
    for names, settings, inputs_given in (
        (("x86-avx2",), None, given),
        (("x86-ort117",), None, given),
        (("x86-avx2",), JobSettings(calibration="entropy"), given),
        (("x86-avx2",), None, fewer),
    ):
        again, _, _ = run(tmp_path, inputs_given, names, settings=settings)
        assert again.stages[0].artifacts == "reused"
    assert len(job.calls) == 4


def test_both_toolchains_of_one_run_get_their_own_artifacts(tmp_path: Path, given: JobInputs, job: FakePrepare) -> None:
    run(tmp_path, given, ("x86-avx2", "x86-ort117"))
    both, _, inputs = run(tmp_path, given, ("x86-avx2", "x86-ort117"))
    assert len(job.calls) == 2 and [s.artifacts for s in both.stages] == ["reused", "reused"]
    assert both.folders == {"x86-avx2": "artifacts", "x86-ort117": "artifacts-1"}
    assert (inputs / "artifacts-1" / "s8s8-qdq.onnx").read_bytes() == b"farm/x86-ort117:3333 s8s8-qdq"


def test_no_cache_makes_them_and_keeps_nothing(tmp_path: Path, given: JobInputs, job: FakePrepare) -> None:
    run(tmp_path, given, ("x86-avx2",))
    bypassed, _, _ = run(tmp_path, given, ("x86-avx2",), cache=False)
    assert len(job.calls) == 2
    assert (bypassed.stages[0].artifacts, bypassed.stages[0].cached) == ("made", False)


def test_a_failed_prepare_job_is_not_kept(tmp_path: Path, given: JobInputs, job: FakePrepare) -> None:
    job.exit_code = 1
    failed, warnings, _ = run(tmp_path, given, ("x86-avx2",))
    # What it made is still evaluated this time (as before the cache), but the next run makes it again.
    assert failed.stages[0].artifacts == "made" and failed.stages[0].cached is False
    assert any(w.startswith("making the int8 artifacts in x86-avx2 exited with") for w in warnings), warnings
    job.exit_code = 0
    again, _, _ = run(tmp_path, given, ("x86-avx2",))
    assert len(job.calls) == 2 and again.stages[0].artifacts == "made" and again.stages[0].cached


def test_a_damaged_entry_is_made_again_with_a_warning(tmp_path: Path, given: JobInputs, job: FakePrepare) -> None:
    first, _, _ = run(tmp_path, given, ("x86-avx2",))
    entry = tmp_path / "artifacts" / first.stages[0].key
    (entry / "artifacts" / "u8s8-qdq.onnx").unlink()
    again, warnings, _ = run(tmp_path, given, ("x86-avx2",))
    assert len(job.calls) == 2 and again.stages[0].artifacts == "made" and again.stages[0].cached
    assert any("is damaged (artifacts/u8s8-qdq.onnx is missing)" in w for w in warnings), warnings


def test_a_cache_that_cannot_be_written_costs_the_cache_not_the_run(
    tmp_path: Path, given: JobInputs, job: FakePrepare
) -> None:
    (tmp_path / "artifacts").write_text("a file where the cache's folder should be")
    prepared, warnings, inputs = run(tmp_path, given, ("x86-avx2",))
    assert prepared.stages[0].artifacts == "made" and not prepared.stages[0].cached
    assert (inputs / "artifacts" / "u8s8-qdq.onnx").is_file()
    assert [w for w in warnings if "cannot be written" in w], warnings
