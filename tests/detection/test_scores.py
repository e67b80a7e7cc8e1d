"""Each detection score against a direct NumPy computation on hand-made detections."""

from __future__ import annotations

import numpy as np
import pytest

from alray.detection.boxes import Detections
from alray.detection.scores import (
    class_counts,
    class_key,
    class_uncertainty,
    image_scores,
    object_frequency,
    object_stability,
    objectness_least_confidence,
    parse_class_key,
    sample_scores,
)

P_A = np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]])
P_C = np.array([[0.1, 0.1, 0.8]])

IMAGES = [
    # two objects of class 0, one of class 2
    Detections.of([[0, 0, 10, 10], [5, 5, 20, 25], [30, 30, 40, 50]], [0, 0, 2], [0.9, 0.6, 0.3],
                  np.vstack([P_A, P_C])),
    Detections.empty(3),  # no objects
    Detections.of([[1, 1, 4, 4]], [1], [0.5], [[0.3, 0.5, 0.2]]),
    Detections.of([[2, 2, 8, 9]], [1], [0.8]),  # no class probabilities
]


def _entropy(p):
    return -(p * np.log(p)).sum(axis=1)


def _margin(p):
    top = np.sort(p, axis=1)
    return 1.0 - (top[:, -1] - top[:, -2])


def test_object_frequency_counts_further_objects_of_a_class_at_the_penalty():
    labels = [d.labels for d in IMAGES]
    expected = np.array([1 + 0.25 + 1, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(object_frequency(labels), expected)
    np.testing.assert_allclose(object_frequency(labels, penalty=1.0), [3.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(object_frequency([np.array([4, 4, 4, 4])], penalty=0.5), [1 + 3 * 0.5])


def test_objectness_least_confidence_is_one_minus_the_mean_score_and_zero_without_objects():
    expected = [1 - np.mean([0.9, 0.6, 0.3]), 0.0, 0.5, 1 - 0.8]
    np.testing.assert_allclose(objectness_least_confidence([d.scores for d in IMAGES]), expected)


def test_class_uncertainty_reduces_the_objects_scores_by_max_and_mean():
    out = class_uncertainty(IMAGES)
    first = np.vstack([P_A, P_C])
    for name, fn in (("entropy", _entropy), ("margin", _margin), ("least_confidence", lambda p: 1 - p.max(axis=1))):
        values = fn(first)
        assert out[f"object_{name}_max"][0] == pytest.approx(values.max())
        assert out[f"object_{name}_mean"][0] == pytest.approx(values.mean())
        assert out[f"object_{name}_max"][1] == 0.0 and out[f"object_{name}_mean"][1] == 0.0  # no objects
        assert out[f"object_{name}_mean"][2] == pytest.approx(fn(np.array([[0.3, 0.5, 0.2]]))[0])
        assert np.isnan(out[f"object_{name}_max"][3])  # objects without probabilities


def test_counts_and_the_balance_key_round_trip():
    counts = class_counts([d.labels for d in IMAGES])
    assert counts == [{0: 2, 2: 1}, {}, {1: 1}, {1: 1}]
    keys = [class_key(c) for c in counts]
    assert keys == ["0:2,2:1", "", "1:1", "1:1"]
    assert [parse_class_key(k) for k in keys] == counts


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_box_instability_and_class_disagreement_against_a_direct_matching():
    reference = IMAGES[0]
    samples = [
        Detections.of([[1, 0, 11, 10], [5, 5, 20, 24]], [0, 1], [0.8, 0.5]),  # the third object is missed
        Detections.of([[0, 0, 10, 10], [6, 5, 20, 25], [30, 31, 40, 50]], [0, 0, 2], [0.9, 0.5, 0.3]),
        Detections.empty(),
    ]
    stability, disagreement = object_stability(reference, samples, iou_threshold=0.5)
    expected_iou = np.zeros(3)
    expected_disagree = np.zeros(3)
    for sample in samples:
        for j, box in enumerate(reference.boxes):
            ious = [_iou(box, other) for other in sample.boxes]
            best = int(np.argmax(ious)) if ious else -1
            expected_iou[j] += ious[best] if ious else 0.0
            same = ious and ious[best] >= 0.5 and sample.labels[best] == reference.labels[j]
            expected_disagree[j] += 0.0 if same else 1.0
    np.testing.assert_allclose(stability, expected_iou / 3)
    np.testing.assert_allclose(disagreement, expected_disagree / 3)
    image = sample_scores([reference, Detections.empty()], [samples, samples])
    assert image["box_instability"][0] == pytest.approx(1 - (expected_iou / 3).mean())
    assert image["class_disagreement"][0] == pytest.approx((expected_disagree / 3).mean())
    assert image["box_instability"][1] == 0.0 and image["class_disagreement"][1] == 0.0


def test_identical_passes_are_stable():
    stability, disagreement = object_stability(IMAGES[0], [IMAGES[0]] * 4)
    np.testing.assert_allclose(stability, 1.0)
    np.testing.assert_allclose(disagreement, 0.0)


def test_image_scores_without_samples_leave_the_sample_scores_nan():
    scores = image_scores(IMAGES)
    np.testing.assert_array_equal(scores["n_objects"], [3, 0, 1, 1])
    assert np.isnan(scores["box_instability"]).all() and np.isnan(scores["class_disagreement"]).all()
    assert set(scores) >= {"object_frequency", "objectness_least_confidence", "object_entropy_max"}
