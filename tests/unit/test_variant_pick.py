"""`farm matrix --variant` and `--no-profile`: what the controller writes into each job's spec, and the one-line
refusal of a name farm does not know."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from farm.controller.jobs import ESTIMATE_SHARE, JobSettings, candidates_for, job_spec, pick_warnings
from farm.controller.variantpick import VARIANT_NAMES, check_variants, picked, skipped_baselines
from farm.errors import BadInput
from farm.host.probe import Placement
from farm.job.codec import json_object
from farm.job.spec import ProfileSpec, Spec, SpecError, Stage
from farm.job.variants import DEFAULT_CANDIDATES
from farm.model.inspect import inspect_model
from farm.models import default_model
from farm.targets.config import Target
from tests.farmcli import assert_one_clean_line, farm

NATIVE = Placement(mode="native")
HOST = frozenset({"avx2", "fma"})
X86 = Target(name="x86", platform="linux/amd64")


def spec(target: Target, settings: JobSettings, stage: Stage = "evaluate", candidates: tuple[str, ...] = ()) -> Spec:
    return job_spec(target, NATIVE, stage, list(candidates), settings, inputs=Path("/nonexistent"), host_flags=HOST)


def test_every_evaluate_spec_asks_for_the_profile_at_the_targets_threads_and_the_threads_count() -> None:
    share = X86.budget_s * ESTIMATE_SHARE  # no profile is waited for past the estimate's share of the budget
    assert spec(X86, JobSettings(threads=2)).profile == ProfileSpec(threads=(2,), budget_s=share)
    listed = replace(X86, threads=(4, 1))
    assert spec(listed, JobSettings(threads=2)).profile == ProfileSpec(threads=(1, 2, 4), budget_s=share)
    assert spec(listed, JobSettings(threads=1)).profile == ProfileSpec(threads=(1, 4), budget_s=share)
    assert spec(X86, JobSettings(timeout_s=100.0)).profile == ProfileSpec(threads=(1,), budget_s=100.0 * ESTIMATE_SHARE)
    # --no-profile, and the stages that evaluate nothing, ask for none, and the spec then has no profile key.
    for quiet in (spec(listed, JobSettings(profile=False)), spec(listed, JobSettings(), stage="prepare")):
        assert quiet.profile is None and "profile" not in json_object(quiet)
    assert json_object(spec(X86, JobSettings()))["profile"] == {"threads": [1], "budget_s": share}


def test_the_profile_is_part_of_what_resume_compares() -> None:
    # The resume key hashes the evaluate spec (farm/controller/matrix.py _resume_key): a result made without the
    # profile differs from one that wants it, and so is not reused.
    assert json_object(spec(X86, JobSettings())) != json_object(spec(X86, JobSettings(profile=False)))


def test_variant_names_are_checked_with_fp32_always_first() -> None:
    assert check_variants([], tuned=False) == ()
    assert check_variants(["u8s8-qdq"], tuned=False) == ("fp32", "u8s8-qdq")
    assert check_variants(["optimized", "fp32", "u8s8-qdq", "optimized"], tuned=False) == (
        "fp32",
        "optimized",
        "u8s8-qdq",
    )
    # --tuned asks for the tuned variant whatever --variant names.
    assert check_variants(["u8s8-qdq"], tuned=True) == ("fp32", "u8s8-qdq", "tuned")
    assert set(VARIANT_NAMES) >= {"fp32", "optimized", "tuned", *DEFAULT_CANDIDATES}


def test_an_unknown_variant_names_the_flag_the_name_and_the_valid_ones() -> None:
    with pytest.raises(BadInput) as close:
        check_variants(["u8s8-qdg"], tuned=False)
    assert str(close.value).startswith("--variant u8s8-qdg is not a variant farm knows; did you mean 'u8s8-qdq'?")
    assert "valid: fp32, optimized, s8s8-qdq" in str(close.value)
    with pytest.raises(BadInput) as far:
        check_variants(["nope"], tuned=False)
    assert "--variant nope" in str(far.value) and "valid: " in str(far.value) and "u8s8-dynamic" in str(far.value)
    with pytest.raises(BadInput, match=r"--variant tuned needs .*--tuned DIR"):
        check_variants(["tuned"], tuned=False)


def test_only_the_named_candidates_are_prepared_and_evaluated_and_optimized_only_when_named() -> None:
    info = inspect_model(default_model().model)
    chosen = JobSettings(variants=("fp32", "u8s8-qdq"))
    assert candidates_for(X86, info, JobSettings()) == list(DEFAULT_CANDIDATES)
    assert candidates_for(X86, info, chosen) == ["u8s8-qdq"]
    assert picked(["a", "b", "c"], ("fp32", "c", "a")) == ["a", "c"]
    assert skipped_baselines(()) == () and skipped_baselines(("fp32", "optimized")) == ()
    written = spec(X86, chosen, candidates=("u8s8-qdq",))
    assert written.skip == ("optimized",) and json_object(written)["skip"] == ["optimized"]
    # Without --variant, the spec is as it was before the key existed: no "skip".
    assert "skip" not in json_object(spec(X86, JobSettings()))
    assert spec(X86, chosen, stage="prepare").skip == ()
    with pytest.raises(SpecError, match="skip holds unknown names"):
        replace(written, skip=("fp32",))


def test_a_named_variant_a_target_does_not_list_is_not_evaluated_there_and_the_report_says_so() -> None:
    info = inspect_model(default_model().model)
    gpu = Target(name="gpu", platform="linux/amd64", candidates=("s8s8-qdq",))
    settings = JobSettings(variants=("fp32", "u8s8-qdq", "optimized"))
    assert candidates_for(gpu, info, settings) == []
    assert pick_warnings([X86, gpu], info, settings) == [
        "--variant u8s8-qdq is not among the candidates of gpu (targets.toml), so it was not evaluated there"
    ]
    assert pick_warnings([X86, gpu], info, JobSettings()) == []


def test_the_command_line_refuses_an_unknown_variant_in_one_line_with_exit_2(tmp_path: Path) -> None:
    result = farm(
        "matrix", "--quiet", "--variant", "nope", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, cwd=tmp_path
    )
    assert_one_clean_line(result, 2, "--variant nope", "valid: ", "u8s8-qdq")


@pytest.mark.parametrize(("threads", "why"), [((), "at least one"), ((0,), "at least 1"), ((2, 2), "not repeat")])
def test_the_spec_refuses_a_profile_without_counts_a_count_below_one_or_a_repeated_one(
    threads: tuple[int, ...], why: str
) -> None:
    with pytest.raises(SpecError, match=why):
        ProfileSpec(threads=threads)
