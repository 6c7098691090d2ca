"""farm.job.suite on the host's runtime: the onnx wheel's model tests pass, fail or error with a class."""

from __future__ import annotations

from pathlib import Path

import onnx

from farm.job.suite import _cases, run_case

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"


def case(name: str) -> tuple[Path, list[list[Path]]]:
    found = next(c for c in _cases(DATA) if c[1] == name)
    return found[2], found[3]


def test_every_group_of_the_wheel_is_found() -> None:
    groups = {c[0] for c in _cases(DATA)}
    assert groups == {"pytorch-converted", "pytorch-operator", "simple", "light"}
    assert sum(1 for c in _cases(DATA) if c[0] == "light") == 9


def test_a_test_passes_an_opset_1_op_errors_as_a_missing_kernel_and_a_light_model_runs_on_dummy_inputs() -> None:
    assert run_case(*case("test_expand_shape_model1"))["status"] == "passed"
    avg = run_case(*case("test_AvgPool1d"))
    assert (avg["status"], avg["class"]) == ("error", "missing-kernel"), avg
    assert run_case(*case("light_squeezenet"))["status"] == "passed"
