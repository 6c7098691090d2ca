"""The README's --metric example, on detector outputs made to disagree in known ways, through farm's own loader."""

from __future__ import annotations

import numpy as np
import pytest

from farm.inputs.usermetric import check_metric
from farm.job import usermetric
from farm.job.types import MetricScore
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "detection_metric.py"


def detections(scores: list[list[float]], boxes: float = 300.0) -> np.ndarray:
    """One image's output [1, 4 + classes, anchors]: box rows of large numbers, then the class scores."""
    classes = np.asarray(scores, dtype=np.float32)
    box = np.full((4, classes.shape[1]), boxes, dtype=np.float32)
    return np.concatenate([box, classes])[None]


def score(reference: np.ndarray, candidate: np.ndarray) -> MetricScore:
    metric = usermetric.load(EXAMPLE, "score_agreement")
    return usermetric.score(metric, "score_agreement", {"output0": reference[None]}, {"output0": candidate[None]}, None)


def test_the_example_passes_static_checks() -> None:
    assert check_metric(f"{EXAMPLE}:score_agreement").function == "score_agreement"


def test_same_detections_pass_whatever_the_boxes_do() -> None:
    fp32 = detections([[0.9, 0.1, 0.3], [0.05, 0.8, 0.1]])
    moved_boxes = detections([[0.89, 0.1, 0.31], [0.05, 0.79, 0.1]], boxes=330.0)
    result = score(fp32, moved_boxes)
    assert result.passed and result.scores["detection_agreement"] == 1.0
    assert result.scores["max_score_drift"] == pytest.approx(0.01, abs=1e-6)


def test_a_lost_detection_fails_though_the_cosine_barely_moves() -> None:
    fp32 = detections([[0.9, 0.1, 0.3], [0.05, 0.8, 0.1]])
    lost = detections([[0.9, 0.1, 0.2], [0.05, 0.8, 0.1]])  # anchor 2 fell below the threshold
    result = score(fp32, lost)
    assert not result.passed
    assert result.scores["detection_agreement"] == pytest.approx(2 / 3)
    flat = fp32.ravel().astype(np.float64), lost.ravel().astype(np.float64)
    assert float(np.dot(*flat) / np.linalg.norm(flat[0]) / np.linalg.norm(flat[1])) > 0.9999
