"""Detection quality: average precision per class at an IoU threshold, and their mean (mAP@0.5).

PASCAL VOC's rule (all-point interpolation): detections of a class, over all images, by
descending score, are true positives when they match a ground-truth box of that class at IoU
>= ``iou_threshold`` not matched by a higher-scored detection; AP is the area under the
precision envelope of the precision-recall curve.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from alray.detection.boxes import Detections, box_iou


def average_precision(predictions: Sequence[Detections], truths: Sequence[Detections], label: int, *,
                      iou_threshold: float = 0.5) -> float | None:
    """AP of class ``label`` over images (predictions and truths in the same order); None without truths."""
    n_truths = sum(int((t.labels == label).sum()) for t in truths)
    if n_truths == 0:
        return None
    scored: list[tuple[float, bool]] = []
    for prediction, truth in zip(predictions, truths, strict=True):
        mine = np.flatnonzero(prediction.labels == label)
        targets = truth.boxes[truth.labels == label]
        taken = np.zeros(len(targets), dtype=bool)
        for k in mine[np.argsort(-prediction.scores[mine], kind="stable")]:
            hit = False
            if len(targets):
                iou = box_iou(prediction.boxes[k: k + 1], targets)[0]
                iou[taken] = -1.0
                best = int(iou.argmax())
                if iou[best] >= iou_threshold:
                    taken[best] = hit = True
            scored.append((float(prediction.scores[k]), hit))
    if not scored:
        return 0.0
    order = sorted(range(len(scored)), key=lambda i: -scored[i][0])
    hits = np.array([scored[i][1] for i in order], dtype=np.float64)
    tp = np.cumsum(hits)
    recall = tp / n_truths
    precision = tp / np.arange(1, len(hits) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float((steps * envelope).sum())


def mean_average_precision(predictions: Sequence[Detections], truths: Sequence[Detections], *,
                           n_classes: int, iou_threshold: float = 0.5) -> float:
    """The mean of :func:`average_precision` over the classes that have ground-truth boxes."""
    values = [average_precision(predictions, truths, c, iou_threshold=iou_threshold) for c in range(n_classes)]
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else 0.0
