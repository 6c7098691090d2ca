"""The artifact cache's key (farm/controller/artifactkey.py): each thing the prepare stage's output depends on changes
it, and nothing of when, where or for which target of the toolchain the run made it does."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from farm.controller.artifactkey import (
    NOT_READ_BY_PREPARE,
    Ingredients,
    artifact_key,
    image_content,
    short,
    spec_material,
)
from farm.controller.jobs import JobSettings, job_spec
from farm.host.probe import Placement
from farm.job.spec import Spec
from farm.targets.config import Target

AVX2 = Target(name="x86-avx2", platform="linux/amd64", cpu_features=("avx2", "fma"))
AVX512 = Target(name="x86-avx512", platform="linux/amd64", cpu_features=("avx512f", "avx512bw"))
CANDIDATES = ["s8s8-qdq", "u8s8-qdq", "u8s8-dynamic"]


def prepare_spec(
    target: Target = AVX2,
    *,
    inputs: Path = Path("/run-a/in"),
    candidates: list[str] = CANDIDATES,
    settings: JobSettings | None = None,
    placement: Placement | None = None,
) -> Spec:
    return job_spec(
        target,
        placement or Placement(mode="native"),
        "prepare",
        candidates,
        settings or JobSettings(),
        inputs=inputs,
        host_flags=frozenset({"avx2", "fma"}),
    )


def ingredients(**changed: Any) -> Ingredients:
    base = Ingredients(
        model_sha256="a" * 64,
        external_data={"weights.bin": "b" * 64},
        rewritten_sha256="c" * 64,
        data_sha256="d" * 64,
        spec=spec_material(prepare_spec()),
        image="e" * 64,
    )
    return replace(base, **changed)


@pytest.mark.parametrize(
    "changed",
    [
        {"model_sha256": "f" * 64},
        {"external_data": {"weights.bin": "f" * 64}},
        {"external_data": {"other.bin": "b" * 64}},
        {"external_data": {}},
        {"rewritten_sha256": "f" * 64},
        {"rewritten_sha256": None},
        {"data_sha256": "f" * 64},
        {"image": "f" * 64},
        {"spec": spec_material(prepare_spec(settings=JobSettings(calibration="entropy")))},
        {"spec": spec_material(prepare_spec(candidates=["s8s8-qdq", "u8s8-qdq"]))},
        {"spec": spec_material(prepare_spec(candidates=[*CANDIDATES, "u8u8-qdq"]))},
    ],
    ids=lambda changed: "-".join(changed),
)
def test_each_ingredient_changes_the_key(changed: dict[str, Any]) -> None:
    assert artifact_key(ingredients(**changed)) != artifact_key(ingredients())


def test_the_calibration_samples_change_the_key() -> None:
    spec = prepare_spec()
    fewer = replace(spec, calibration=replace(spec.calibration, samples=16))
    assert artifact_key(ingredients(spec=spec_material(fewer))) != artifact_key(ingredients())


def test_the_run_folder_the_target_and_the_settings_prepare_does_not_read_leave_it_alone() -> None:
    key = artifact_key(ingredients())
    # Another run's folder, another target of the same image (masked, not native), the timing and tolerance flags.
    elsewhere = prepare_spec(inputs=Path("/run-b/in"))
    other_maker = prepare_spec(AVX512, placement=Placement(mode="masked"))
    flags = prepare_spec(settings=JobSettings(threads=2, iterations=20, cosine=0.9, profile=False, estimates=False))
    for spec in (elsewhere, other_maker, flags):
        assert artifact_key(ingredients(spec=spec_material(spec))) == key
    # The order the selected targets list their candidates in makes the same artifacts.
    reordered = prepare_spec(candidates=list(reversed(CANDIDATES)))
    assert artifact_key(ingredients(spec=spec_material(reordered))) == key


def test_a_field_added_to_the_spec_is_in_the_key_until_someone_lists_it_as_unread() -> None:
    """What prepare reads (farm/job/prepare.py: the model, its rewrite, the data, the candidates, the calibration)
    is exactly what the key keeps of the spec: a new spec field fails here until it is classified."""
    fields = {f.name for f in dataclasses.fields(Spec)}
    assert fields >= NOT_READ_BY_PREPARE, NOT_READ_BY_PREPARE - fields
    assert set(spec_material(prepare_spec())) == {
        "schema",
        "stage",
        "model",
        "rewritten",
        "inputs",
        "labels",
        "artifacts",
        "candidates",
        "calibration",
    }


def test_nothing_in_the_key_depends_on_the_clock_or_the_process() -> None:
    assert artifact_key(ingredients()) == artifact_key(ingredients())
    assert len(artifact_key(ingredients())) == 64 and short(artifact_key(ingredients())) in artifact_key(ingredients())


def test_an_image_is_known_by_its_content_so_targets_of_one_content_share_artifacts() -> None:
    assert image_content("farm/x86-avx2:0123abcd") == image_content("farm/arm64-like:0123abcd") == "0123abcd"
    assert image_content("farm/x86-ort117:99ff") != image_content("farm/x86-avx2:0123abcd")
