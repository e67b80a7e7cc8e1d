"""Average precision per class and mAP@0.5 on hand-made detections."""

from __future__ import annotations

import pytest

from alray.detection.boxes import Detections
from alray.detection.metrics import average_precision, mean_average_precision

TRUTHS = [Detections.of([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], [1.0, 1.0]),
          Detections.of([[0, 0, 10, 10], [40, 40, 50, 50]], [0, 1], [1.0, 1.0])]


def test_average_precision_follows_the_precision_envelope():
    predictions = [
        # a hit (0.9), the same box again (0.8: its truth is taken, the other too far), a miss (0.6)
        Detections.of([[0, 0, 10, 10], [1, 0, 11, 10], [60, 60, 70, 70]], [0, 0, 0], [0.9, 0.8, 0.6]),
        # a hit (0.7), and a class-1 box on the class-0 truth: no class-0 hit
        Detections.of([[0, 0, 10, 10], [0, 0, 10, 10]], [0, 1], [0.7, 0.95])]
    # class 0, by score: hit, miss, hit, miss over 3 truths -> recall 1/3, 1/3, 2/3, 2/3 and precision
    # 1, 1/2, 2/3, 1/2; the envelope 1, 2/3, 2/3, 1/2 -> AP = 1/3 * 1 + 1/3 * 2/3
    assert average_precision(predictions, TRUTHS, 0) == pytest.approx(5 / 9)
    # class 1: its one box misses its one truth
    assert average_precision(predictions, TRUTHS, 1) == 0.0
    assert average_precision(predictions, TRUTHS, 2) is None  # no truth: not a class of the set
    assert mean_average_precision(predictions, TRUTHS, n_classes=3) == pytest.approx((5 / 9 + 0.0) / 2)


def test_a_perfect_detector_scores_one_and_the_iou_threshold_decides_a_hit():
    assert mean_average_precision(TRUTHS, TRUTHS, n_classes=2) == 1.0
    # IoU of a 10 x 10 box shifted by 4 pixels: 60 / 140 = 0.43
    shifted = [Detections.of([[4, 0, 14, 10]], [1], [0.5]), Detections.of([[44, 40, 54, 50]], [1], [0.5])]
    truths = [Detections.empty(), Detections.of([[40, 40, 50, 50]], [1], [1.0])]
    assert average_precision(shifted, truths, 1, iou_threshold=0.5) == 0.0
    # at 0.4 the second image's box hits; the first image's (no truth there) ranks first by its order
    assert average_precision(shifted, truths, 1, iou_threshold=0.4) == pytest.approx(0.5)
    assert mean_average_precision([Detections.empty()] * 2, truths, n_classes=2) == 0.0
    assert mean_average_precision(shifted, [Detections.empty()] * 2, n_classes=2) == 0.0
