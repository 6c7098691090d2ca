"""farm.job.metrics: the figures of docs/contracts.md section 2, checked by hand on tiny arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest

from farm.job.codec import decode, encode
from farm.job.metrics import (
    MetricsError,
    compare,
    cosine,
    default_counted,
    is_classifier_like,
    latency_from_rounds,
    top1_kind,
)
from farm.job.types import Latency


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_cosine_is_scale_invariant_and_handles_zero() -> None:
    assert cosine(f32(1, 2, 3), f32(2, 4, 6)) == pytest.approx(1.0)
    assert cosine(f32(1, 0), f32(0, 1)) == pytest.approx(0.0)
    assert cosine(f32(1, 0), f32(-1, 0)) == pytest.approx(-1.0)
    assert cosine(f32(0, 0), f32(0, 0)) == 1.0
    assert cosine(f32(0, 0), f32(1, 0)) == 0.0


def test_each_output_gets_its_own_figures_and_the_worst_decides() -> None:
    # "score": sample 0 matches, sample 1 is orthogonal: mean cosine 0.5. "state" only scales: cosine 1.
    reference = [[f32(1, 0), f32(1, 2)], [f32(1, 0), f32(3, 4)]]
    candidate = [[f32(2, 0), f32(2, 4)], [f32(0, 1), f32(6, 8)]]
    result = compare(reference, candidate, names=["score", "state"])
    assert [o.name for o in result.outputs] == ["score", "state"]
    assert [o.cosine for o in result.outputs] == [pytest.approx(0.5), pytest.approx(1.0)]
    assert result.cosine == pytest.approx(0.5) and result.worst_output == "score"
    assert result.max_abs == pytest.approx(4.0)  # state's 8 against 4
    assert result.top1_agreement == pytest.approx(0.5)  # both are [2] score vectors; score's argmax moved once
    assert result.accuracy is None


def test_only_counted_outputs_make_the_verdict() -> None:
    reference = [[f32(1, 0), f32(1, 2)], [f32(1, 0), f32(3, 4)]]
    candidate = [[f32(2, 0), f32(2, 4)], [f32(0, 1), f32(6, 8)]]
    result = compare(reference, candidate, names=["score", "state"], counted=["state"])
    assert result.cosine == pytest.approx(1.0) and result.worst_output == "state"
    assert [o.counted for o in result.outputs] == [False, True]
    assert result.outputs[0].cosine == pytest.approx(0.5)  # still reported


def test_a_one_value_output_is_compared_across_samples() -> None:
    # Per sample a single value always has cosine 1; across samples the drift of the third one shows.
    reference = [[f32(1)], [f32(1)], [f32(1)]]
    candidate = [[f32(1)], [f32(1)], [f32(-1)]]
    assert compare(reference, candidate).cosine == pytest.approx(1 / 3)


def test_sequence_of_distributions_gets_per_position_top1() -> None:
    probs = np.array([[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.5, 0.0]]], dtype=np.float32)
    moved = probs.copy()
    moved[0, 2] = [0.5, 0.3, 0.2]  # position 2's argmax moves from 2 to 0
    result = compare([[probs], [probs]], [[probs], [moved]])
    assert result.top1_agreement == pytest.approx(7 / 8)
    assert top1_kind([probs]) == "position"
    # Box coordinates and scores along the last axis are not a decision.
    assert top1_kind([np.array([[[120.0, 80.0, 0.9], [40.0, 30.0, 0.1]]], dtype=np.float32)]) is None
    assert top1_kind([np.array([[3.0, -1.0, 2.0]], dtype=np.float32)]) == "sample"


def test_integer_outputs_are_left_out_of_cosine_when_floats_exist() -> None:
    reference = [[f32(1, 2), np.array([7], dtype=np.int64)]]
    candidate = [[f32(1, 2), np.array([9], dtype=np.int64)]]
    result = compare(reference, candidate)
    assert result.cosine == pytest.approx(1.0) and result.max_abs == 0.0


def test_top1_agreement_and_accuracy_on_classifier_outputs() -> None:
    reference = [[np.array([[0.1, 0.9, 0.0]], dtype=np.float32)] for _ in range(4)]
    candidate = [
        [np.array([[0.1, 0.8, 0.0]], dtype=np.float32)],
        [np.array([[0.1, 0.8, 0.0]], dtype=np.float32)],
        [np.array([[0.1, 0.8, 0.0]], dtype=np.float32)],
        [np.array([[0.9, 0.1, 0.0]], dtype=np.float32)],
    ]
    labels = np.array([1, 1, 0, 1])
    result = compare(reference, candidate, labels)
    assert result.top1_agreement == pytest.approx(0.75)
    assert result.accuracy == pytest.approx(0.5)  # argmax 1,1,1,0 against labels 1,1,0,1
    assert result.max_abs == pytest.approx(0.8, abs=1e-6)
    assert result.within(cosine=0.5, top1_agreement=0.75)
    assert not result.within(cosine=0.5, top1_agreement=0.8)


@pytest.mark.parametrize(
    ("shape", "expected"), [((10,), True), ((1, 10), True), ((1, 1), False), ((2, 10), False), ((1, 3, 4), False)]
)
def test_classifier_like_shapes(shape: tuple[int, ...], expected: bool) -> None:
    assert is_classifier_like(np.zeros(shape)) is expected


def test_mismatches_and_non_finite_values_are_errors() -> None:
    with pytest.raises(MetricsError, match="shape"):
        compare([[f32(1, 2)]], [[f32(1, 2, 3)]])
    with pytest.raises(MetricsError, match="outputs"):
        compare([[f32(1)]], [[f32(1), f32(2)]])
    with pytest.raises(MetricsError, match="NaN"):
        compare([[f32(1, 2)]], [[f32(np.nan, 2)]])


def test_latency_percentiles_in_milliseconds_with_the_rounds_spread() -> None:
    seconds = [i / 1000 for i in range(1, 101)]
    latency = latency_from_rounds([seconds[:50], seconds[50:]])
    assert latency.p50 == pytest.approx(50.5)
    assert latency.p90 == pytest.approx(90.1)
    assert latency.p99 == pytest.approx(99.01)
    assert latency.rounds == pytest.approx((25.5, 75.5))
    assert latency.spread == pytest.approx(50.0)
    assert encode(latency) == {
        "p50": latency.p50,
        "p90": latency.p90,
        "p99": latency.p99,
        "rounds": list(latency.rounds),
        "spread": latency.spread,
        "interleaved": False,
    }
    assert decode(Latency, encode(latency)) == latency


def test_the_worst_output_is_the_one_outside_tolerance() -> None:
    # "probs" keeps a high cosine but its argmax moves; "state" has the lower cosine yet stays within tolerance.
    probs_ref, probs_moved = f32(0.51, 0.49), f32(0.49, 0.51)
    reference = [[probs_ref, f32(1, 2)], [probs_ref, f32(1, 2)]]
    candidate = [[probs_moved, f32(1.2, 2)], [probs_ref, f32(1.2, 2)]]
    plain = compare(reference, candidate, names=["probs", "state"])
    assert plain.worst_output == "state"
    judged = compare(reference, candidate, names=["probs", "state"], tolerance=(0.99, 0.99))
    assert judged.worst_output == "probs" and judged.top1_agreement == pytest.approx(0.5)


def test_an_output_whose_shape_changed_is_out_of_tolerance_not_an_error() -> None:
    # A detector's variable number of boxes: int8 found one fewer in the second sample.
    boxes_ref, boxes_fewer = np.ones((3, 6), np.float32), np.ones((2, 6), np.float32)
    reference = [[f32(0.9, 0.1), boxes_ref], [f32(0.2, 0.8), boxes_ref]]
    candidate = [[f32(0.9, 0.1), boxes_ref], [f32(0.2, 0.8), boxes_fewer]]
    counted = compare(reference, candidate, names=["scores", "boxes"])
    assert counted.worst_output == "boxes" and counted.outputs[1].cosine is None
    assert not counted.within(cosine=0.99, top1_agreement=0.99)
    only_scores = compare(reference, candidate, names=["scores", "boxes"], counted=["scores"])
    assert only_scores.within(cosine=0.99, top1_agreement=0.99) and only_scores.outputs[1].cosine is None


def test_empty_samples_and_nan_outputs_do_not_break_the_reference() -> None:
    empty = np.zeros((1, 0, 3), np.float32)
    probs = np.array([[[0.2, 0.8, 0.0]]], np.float32)
    assert top1_kind([empty, probs]) == "position"
    nan_aux = [[f32(1, 2), f32(np.nan, 1)], [f32(2, 1), f32(1, 1)]]
    assert default_counted(["logits", "aux"], nan_aux) == ("logits",)
    result = compare(nan_aux, nan_aux, names=["logits", "aux"])
    assert result.cosine == pytest.approx(1.0) and result.outputs[1].cosine is None


def test_an_output_empty_in_every_sample_has_no_top1_and_writes_as_json() -> None:
    """A fuzzed model's Slice gave [0, 4] in every sample: top-1 over no rows was NaN, and writing result.json with
    it ended the job, losing every variant."""
    empty = [[np.zeros((0, 4), np.float32)], [np.zeros((0, 4), np.float32)]]
    assert top1_kind([sample[0] for sample in empty]) is None
    result = compare(empty, empty, names=["y"])
    assert result.top1_agreement is None and result.outputs[0].top1_agreement is None
    assert result.cosine == 1.0 and result.max_abs == 0.0
    json.dumps(encode(result), allow_nan=False)  # as the job writes result.json
