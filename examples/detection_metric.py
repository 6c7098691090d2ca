"""A --metric for YOLO-style detectors: do int8 and fp32 find the same confident detections?

A detector's output mixes box coordinates (hundreds of pixels) with class scores (0 to 1), so the cosine of the
whole output is dominated by the boxes and says little about the scores. This metric looks at the scores only:

    farm matrix yolo.onnx --data images.npz --metric examples/detection_metric.py:score_agreement

It expects one output of shape ``[N, 1, 4 + classes, anchors]`` (Ultralytics' export: rows 0-3 are the box, the
rest one score per class) and passes when the anchors above the confidence threshold agree (Jaccard index of the
two sets) and their class and score stay close. Adapt OUTPUT and the thresholds to your model. numpy only: it runs
inside the target's container.
"""

from __future__ import annotations

from typing import Any

import numpy as np

OUTPUT: str | None = None  # the detector output's name; None takes the first one
CONFIDENCE = 0.25  # a detection is an anchor whose best class score reaches this
MIN_AGREEMENT = 0.9  # share of confident anchors both models find (Jaccard index), averaged over images
MAX_SCORE_DRIFT = 0.05  # largest change of a shared detection's best score


def score_agreement(fp32: dict[str, Any], outputs: dict[str, Any], labels: Any) -> dict[str, Any]:
    name = OUTPUT or next(iter(fp32))
    reference, candidate = np.asarray(fp32[name]), np.asarray(outputs[name])
    agreements, drifts, same_class = [], [0.0], []
    for ref, cand in zip(reference, candidate, strict=True):
        ref_scores, cand_scores = ref.reshape(ref.shape[-2], -1)[4:], cand.reshape(cand.shape[-2], -1)[4:]
        ref_best, cand_best = ref_scores.max(axis=0), cand_scores.max(axis=0)
        ref_hits, cand_hits = ref_best >= CONFIDENCE, cand_best >= CONFIDENCE
        union = np.logical_or(ref_hits, cand_hits).sum()
        both = np.logical_and(ref_hits, cand_hits)
        agreements.append(1.0 if union == 0 else float(both.sum() / union))
        if both.any():
            drifts.append(float(np.abs(ref_best[both] - cand_best[both]).max()))
            same_class.append(float(np.mean(ref_scores[:, both].argmax(0) == cand_scores[:, both].argmax(0))))
    agreement, drift = float(np.mean(agreements)), max(drifts)
    class_agreement = float(np.mean(same_class)) if same_class else 1.0
    return {
        "passed": agreement >= MIN_AGREEMENT and drift <= MAX_SCORE_DRIFT and class_agreement >= MIN_AGREEMENT,
        "detection_agreement": agreement,
        "class_agreement": class_agreement,
        "max_score_drift": drift,
    }
