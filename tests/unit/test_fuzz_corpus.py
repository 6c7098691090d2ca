"""tests/fuzzmodels.py: the fixed corpus of malformed models is big enough, varied, small, reproducible, and grown
from seeds that are themselves valid models."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from farm.model.inspect import inspect_model
from tests.fuzzmodels import KINDS, SEEDS, Case, build_corpus, nested_if, nested_loop

# Issue 10 asks for 200 fuzzed or mutated models through inspect and matrix; the seeds themselves are not counted.
MIN_MUTATED = 200


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    return build_corpus(tmp_path_factory.mktemp("fuzz") / "corpus")


def test_the_corpus_has_enough_cases_of_every_kind(corpus: list[Case]) -> None:
    kinds = Counter(case.kind for case in corpus)
    assert sum(n for kind, n in kinds.items() if kind != "seed") >= MIN_MUTATED, kinds
    assert set(kinds) == set(KINDS), kinds
    assert all(n >= 5 for n in kinds.values()), kinds
    assert len({case.name for case in corpus}) == len(corpus)


def test_every_case_is_small(corpus: list[Case]) -> None:
    sizes = {case.name: sum(f.stat().st_size for f in case.path.parent.rglob("*") if f.is_file()) for case in corpus}
    assert max(sizes.values()) < 1 << 20, max(sizes.items(), key=lambda item: item[1])


def test_the_corpus_is_the_same_every_time(corpus: list[Case], tmp_path: Path) -> None:
    again = build_corpus(tmp_path / "again")
    assert [(c.name, c.kind) for c in again] == [(c.name, c.kind) for c in corpus]
    assert all(a.path.read_bytes() == c.path.read_bytes() for a, c in zip(again, corpus, strict=True))
    other = build_corpus(tmp_path / "other", seed=1)
    assert any(o.path.read_bytes() != c.path.read_bytes() for o, c in zip(other, corpus, strict=True))


def test_the_seeds_are_valid_models_that_run(corpus: list[Case]) -> None:
    seeds = [case for case in corpus if case.kind == "seed"]
    assert {case.name.removeprefix("seed-") for case in seeds} == {*SEEDS, "external"}
    for case in seeds:
        info = inspect_model(case.path)
        session = ort.InferenceSession(str(case.path), providers=["CPUExecutionProvider"])
        feeds = {
            t.name: np.ones([d if isinstance(d, int) else 1 for d in t.shape or ()], np.float32) for t in info.inputs
        }
        assert all(np.isfinite(out).all() for out in session.run(None, feeds)), case.name


@pytest.mark.parametrize("depth", [1, 12])
def test_the_nested_builders_make_models_that_run(depth: int) -> None:
    for data in (nested_if(depth), nested_loop(depth)):
        model = onnx.ModelProto()
        model.ParseFromString(data)
        onnx.checker.check_model(model)
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        x = np.array([[1.0, -2.0, 3.0, -4.0]], np.float32)
        assert np.array_equal(session.run(None, {"x": x})[0], np.maximum(x, 0))
