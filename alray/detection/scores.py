"""Scores of object detections: per image and per object, arrays in, arrays out.

Every score is higher for an image more worth labeling, so a ``weights`` strategy can take it as
it is. An image without objects scores 0 (nothing detected, nothing uncertain), as in Lightly's
detection scorers; the class-uncertainty scores are null (NaN) when the detector gave no class
probabilities. The per-object class scores are :mod:`alray.scoring`'s, on each object's probabilities.

- ``object_frequency``: the objects, each class's first counting 1 and every further one
  ``penalty`` (Lightly's object frequency before its min-max scaling, which ``weights`` does);
- ``objectness_least_confidence``: 1 - the mean detection score;
- ``object_{entropy,margin,least_confidence}_{max,mean}``: the class uncertainty of the objects,
  reduced over the image by max and mean;
- ``box_instability`` and ``class_disagreement`` (MC dropout or test-time augmentation): each
  object of the reference pass is matched in every sample pass to the box of largest IoU;
  ``box_instability`` is 1 - the mean of those IoUs (box stability, as in Kao et al. 2018 and
  Haussmann et al. 2020), ``class_disagreement`` the share of samples whose matched box (IoU at
  least ``iou_threshold``) is missing or of another class; both averaged over the objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from alray.detection.boxes import Detections, box_iou
from alray.scoring import entropy, least_confidence, margin

#: Lightly's default weight of the second and further objects of one class in ``object_frequency``.
FREQUENCY_PENALTY = 0.25
#: IoU at which a sample's box matches a reference box (PASCAL VOC's and mAP@0.5's threshold).
MATCH_IOU = 0.5
#: The per-object class scores, each reduced by max and mean over an image.
CLASS_SCORES = ("entropy", "margin", "least_confidence")
#: Image columns of the class scores, in the features table's order.
CLASS_SCORE_COLUMNS = tuple(f"object_{name}_{how}" for name in CLASS_SCORES for how in ("max", "mean"))
#: Image columns of the MC / augmentation scores.
SAMPLE_SCORE_COLUMNS = ("box_instability", "class_disagreement")


def n_objects(images: Sequence[Detections]) -> np.ndarray:
    """Objects per image, (N,) int64."""
    return np.array([len(d) for d in images], dtype=np.int64)


def object_frequency(labels: Sequence[np.ndarray], penalty: float = FREQUENCY_PENALTY) -> np.ndarray:
    """Objects of each image, the first of a class counting 1 and each further one ``penalty``: (N,).

    ``labels`` holds one (K,) array of class ids per image; 0 for an image without objects.
    """
    out = np.zeros(len(labels))
    for i, row in enumerate(labels):
        counts = np.unique(np.asarray(row, dtype=np.int64), return_counts=True)[1]
        out[i] = float(len(counts) + penalty * (counts - 1).sum())
    return out


def objectness_least_confidence(scores: Sequence[np.ndarray]) -> np.ndarray:
    """1 - the mean detection score of each image (one (K,) array per image): (N,); 0 without objects."""
    return np.array([1.0 - float(np.mean(s)) if len(s) else 0.0 for s in scores])


def object_class_scores(probs: np.ndarray) -> dict[str, np.ndarray]:
    """Entropy, margin and least confidence of each object's class probabilities (K, C): name -> (K,)."""
    p = np.asarray(probs, dtype=np.float64)
    if len(p) == 0:
        return {name: np.zeros(0) for name in CLASS_SCORES}
    return {"entropy": entropy(p), "margin": margin(p), "least_confidence": least_confidence(p)}


def class_uncertainty(images: Sequence[Detections]) -> dict[str, np.ndarray]:
    """The per-object class scores of each image's probabilities reduced over the image by max and mean.

    Returns :data:`CLASS_SCORE_COLUMNS` -> (N,): 0 for an image without objects, NaN for one whose
    objects have no class probabilities.
    """
    out = {name: np.full(len(images), np.nan) for name in CLASS_SCORE_COLUMNS}
    for i, image in enumerate(images):
        if len(image) and image.probs is None:
            continue
        scores = object_class_scores(image.probs if image.probs is not None else np.zeros((0, 1)))
        for name in CLASS_SCORES:
            values = scores[name]
            out[f"object_{name}_max"][i] = float(values.max()) if len(values) else 0.0
            out[f"object_{name}_mean"][i] = float(values.mean()) if len(values) else 0.0
    return out


def class_counts(labels: Sequence[np.ndarray]) -> list[dict[int, int]]:
    """Objects per class id of each image."""
    out = []
    for row in labels:
        values, counts = np.unique(np.asarray(row, dtype=np.int64), return_counts=True)
        out.append({int(v): int(c) for v, c in zip(values, counts, strict=True)})
    return out


def class_key(counts: dict[int, int]) -> str:
    """An image's objects per class as one string, e.g. ``0:2,3:1`` (ids ascending; ``""`` for none).

    The key the object-class balance groups images by: images with one key hold the same objects.
    """
    return ",".join(f"{label}:{counts[label]}" for label in sorted(counts) if counts[label] > 0)


def parse_class_key(key: str) -> dict[int, int]:
    """The counts :func:`class_key` wrote (ValueError for anything else)."""
    if not key:
        return {}
    counts: dict[int, int] = {}
    for part in key.split(","):
        label, _, count = part.partition(":")
        counts[int(label)] = int(count)
    return counts


def object_stability(reference: Detections, samples: Sequence[Detections],
                     iou_threshold: float = MATCH_IOU) -> tuple[np.ndarray, np.ndarray]:
    """Per reference object (K,): the mean over the samples of its best IoU with a sample box, and the
    share of samples where its match (IoU >= ``iou_threshold``) is missing or of another class.

    Without samples every object is stable (IoU 1, disagreement 0).
    """
    k = len(reference)
    if not samples:
        return np.ones(k), np.zeros(k)
    iou_sum = np.zeros(k)
    disagree = np.zeros(k)
    for sample in samples:
        if len(sample) == 0:
            disagree += 1.0
            continue
        iou = box_iou(reference.boxes, sample.boxes)
        best = iou.argmax(axis=1)
        best_iou = iou[np.arange(k), best]
        iou_sum += best_iou
        disagree += (best_iou < iou_threshold) | (sample.labels[best] != reference.labels)
    return iou_sum / len(samples), disagree / len(samples)


def sample_scores(references: Sequence[Detections], samples: Sequence[Sequence[Detections]],
                  iou_threshold: float = MATCH_IOU) -> dict[str, np.ndarray]:
    """:data:`SAMPLE_SCORE_COLUMNS` -> (N,): 1 - the mean over objects of :func:`object_stability`'s IoU, and
    the mean disagreement; 0 for an image without objects in the reference pass."""
    instability = np.zeros(len(references))
    disagreement = np.zeros(len(references))
    for i, (reference, passes) in enumerate(zip(references, samples, strict=True)):
        if len(reference):
            stability, disagree = object_stability(reference, passes, iou_threshold)
            instability[i] = 1.0 - float(stability.mean())
            disagreement[i] = float(disagree.mean())
    return {"box_instability": instability, "class_disagreement": disagreement}


def image_scores(images: Sequence[Detections], *, penalty: float = FREQUENCY_PENALTY,
                 samples: Sequence[Sequence[Detections]] | None = None,
                 iou_threshold: float = MATCH_IOU) -> dict[str, np.ndarray]:
    """Every per-image score of :data:`alray.tables.DETECTION_SCORES` for N images: name -> (N,).

    ``samples`` (per image, the detections of each MC or augmented pass) gives the two sample
    scores; without it they are NaN.
    """
    labels = [d.labels for d in images]
    scores: dict[str, np.ndarray] = {
        "n_objects": n_objects(images).astype(np.float64),
        "object_frequency": object_frequency(labels, penalty),
        "objectness_least_confidence": objectness_least_confidence([d.scores for d in images]),
        **class_uncertainty(images),
    }
    if samples is not None:
        scores.update(sample_scores(images, samples, iou_threshold))
    else:
        scores.update({name: np.full(len(images), np.nan) for name in SAMPLE_SCORE_COLUMNS})
    return scores
