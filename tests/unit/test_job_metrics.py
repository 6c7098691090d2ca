"""farm.job.metrics: the figures of docs/contracts.md section 2, checked by hand on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from farm.job.metrics import Latency, MetricsError, compare, cosine, is_classifier_like


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_cosine_is_scale_invariant_and_handles_zero() -> None:
    assert cosine(f32(1, 2, 3), f32(2, 4, 6)) == pytest.approx(1.0)
    assert cosine(f32(1, 0), f32(0, 1)) == pytest.approx(0.0)
    assert cosine(f32(1, 0), f32(-1, 0)) == pytest.approx(-1.0)
    assert cosine(f32(0, 0), f32(0, 0)) == 1.0
    assert cosine(f32(0, 0), f32(1, 0)) == 0.0


def test_compare_means_cosine_over_samples_and_concatenates_float_outputs() -> None:
    # Sample 0 matches; sample 1's two outputs, concatenated, are [1, 0] against [0, 1]: cosine 0.
    reference = [[f32(1), f32(1)], [f32(1), f32(0)]]
    candidate = [[f32(2), f32(2)], [f32(0), f32(1)]]
    result = compare(reference, candidate)
    assert result.cosine == pytest.approx(0.5)
    assert result.max_abs == pytest.approx(1.0)
    assert result.top1_agreement is None  # a 1-element output is not classifier-like
    assert result.accuracy is None


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


def test_latency_percentiles_in_milliseconds() -> None:
    latency = Latency.from_seconds([i / 1000 for i in range(1, 101)])
    assert latency.p50 == pytest.approx(50.5)
    assert latency.p90 == pytest.approx(90.1)
    assert latency.p99 == pytest.approx(99.01)
    assert latency.to_dict() == {"p50": latency.p50, "p90": latency.p90, "p99": latency.p99}
