"""The features table's detection columns of a batch of images, from their detections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from alray.detection.boxes import Detections, detections_array
from alray.detection.scores import FREQUENCY_PENALTY, MATCH_IOU, class_counts, class_key, image_scores
from alray.tables import CLASS_COUNTS_TYPE, DETECTION_SCORES


@dataclass(frozen=True)
class DetectionOptions:
    """How detections are read and scored: the class ids a label may take (None: any id >= 0), the
    width of ``probs`` (None: any), the class names a string label may take (``detection.classes``),
    ``object_frequency``'s penalty, the IoU of a match, and where the sample passes come from
    (``none``, ``mc_dropout``, ``hflip``)."""

    known_labels: frozenset[int] | None = None
    n_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    frequency_penalty: float = FREQUENCY_PENALTY
    match_iou: float = MATCH_IOU
    samples: str = "none"
    max_objects: int = 100
    score_threshold: float = 0.0
    objects: bool = False  # also emit each object's row (crop selection)


def detection_columns(images: Sequence[Detections | None], options: DetectionOptions,
                      samples: Sequence[Sequence[Detections]] | None = None) -> dict[str, pa.Array]:
    """The features columns of :data:`~alray.tables.DETECTION_SCORES`, ``object_class_counts``,
    ``object_classes`` and ``detections`` of N images; a None image (rejected) gets nulls.

    ``samples`` holds, per image, the detections of each MC or augmented pass (None: no passes;
    the two sample scores are then null).
    """
    n = len(images)
    ok = np.array([d is not None for d in images], dtype=bool)
    good = [d for d in images if d is not None]
    good_samples = None if samples is None else [s for s, d in zip(samples, images, strict=True) if d is not None]
    scores = image_scores(good, penalty=options.frequency_penalty, samples=good_samples,
                          iou_threshold=options.match_iou)
    columns: dict[str, pa.Array] = {}
    for name in DETECTION_SCORES:
        full = np.full(n, np.nan)
        full[ok] = scores[name]
        if name == "n_objects":
            columns[name] = pa.array(np.nan_to_num(full).astype(np.int64), pa.int64(), mask=~ok)
        else:
            columns[name] = pa.array(full, pa.float64(), mask=~np.isfinite(full))
    counts = iter(class_counts([d.labels for d in good]))
    per_image = [next(counts) if d is not None else None for d in images]
    columns["object_class_counts"] = pa.array(
        [None if c is None else sorted(c.items()) for c in per_image], CLASS_COUNTS_TYPE)
    columns["object_classes"] = pa.array([None if c is None else class_key(c) for c in per_image], pa.string())
    columns["detections"] = detections_array(images)
    return columns
