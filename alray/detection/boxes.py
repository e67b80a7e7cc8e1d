"""The ``detections`` column: its Arrow type, a per-image :class:`Detections`, row checks and box arithmetic.

A detections value is one image's list of objects, each a struct ``x0, y0, x1, y1`` (the box in
pixels of the image, corners, x to the right, y down), ``label`` (the class id), ``score`` (the
detector's confidence, 0..1) and ``probs`` (the class probabilities, one per class, or null).
An empty list is an image without objects; a null value an image the detector did not see.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

# the table contract's type, re-exported beside the checks of its values
from alray.tables import DETECTIONS_TYPE as DETECTIONS_TYPE

BOX_FIELDS = ("x0", "y0", "x1", "y1")
#: One object of a ``detections`` value.
DETECTION_STRUCT = DETECTIONS_TYPE.value_type

# How far (pixels) a box may reach past the image's edge before it counts as outside: detectors
# and exported results round their coordinates.
BOX_TOLERANCE = 0.5
# How far a row of class probabilities may sum from 1.
PROBS_TOLERANCE = 1e-3


class DetectionError(ValueError):
    """A detections value that breaks the contract; the message names the object and field."""


@dataclass(frozen=True)
class Detections:
    """One image's objects: ``boxes`` (K, 4) x0, y0, x1, y1 in pixels, ``labels`` (K,) int, ``scores`` (K,)
    and ``probs`` (K, C) or None."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    probs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls, n_classes: int | None = None) -> Detections:
        """No objects (with an empty (0, C) probs when ``n_classes`` is given)."""
        probs = np.zeros((0, n_classes)) if n_classes else None
        return cls(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0), probs)

    @classmethod
    def of(cls, boxes: npt.ArrayLike, labels: npt.ArrayLike, scores: npt.ArrayLike,
           probs: npt.ArrayLike | None = None) -> Detections:
        """Detections from array-likes, as float64 boxes and scores and int64 labels."""
        box_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        prob_array = None
        if probs is not None:
            prob_array = np.asarray(probs, dtype=np.float64)
            prob_array = prob_array.reshape(len(box_array), prob_array.shape[-1] if prob_array.ndim == 2 else -1)
        return cls(box_array, np.asarray(labels, dtype=np.int64).reshape(-1),
                   np.asarray(scores, dtype=np.float64).reshape(-1), prob_array)

    def take(self, rows: npt.ArrayLike) -> Detections:
        """The objects at ``rows``, in that order."""
        index = np.asarray(rows, dtype=np.int64)
        return Detections(self.boxes[index], self.labels[index], self.scores[index],
                          None if self.probs is None else self.probs[index])

    def to_pylist(self) -> list[dict[str, Any]]:
        """The objects as the structs of :data:`DETECTIONS_TYPE`."""
        return [{"x0": float(b[0]), "y0": float(b[1]), "x1": float(b[2]), "y1": float(b[3]), "label": int(label),
                 "score": float(s), "probs": None if self.probs is None else self.probs[k].tolist()}
                for k, (b, label, s) in enumerate(zip(self.boxes, self.labels, self.scores, strict=True))]


def _numeric(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


def detections_type_problem(kind: pa.DataType, *, class_names: bool) -> str | None:
    """Why a column of Arrow type ``kind`` cannot hold detections, or None when it can: a list of structs
    with numeric ``x0``, ``y0``, ``x1``, ``y1`` and ``score``, a ``label`` that is an integer (or a string,
    a class name, when ``class_names``) and, optionally, ``probs``, a list of numbers. Other fields
    are ignored; :data:`DETECTIONS_TYPE` is the type alray writes."""
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_struct(kind.value_type):
        return f"expected a list of structs ({DETECTIONS_TYPE}), got {kind}"
    struct = kind.value_type
    fields = {struct.field(i).name: struct.field(i).type for i in range(struct.num_fields)}
    for name in (*BOX_FIELDS, "label", "score"):
        if name not in fields:
            return f"field {name} is missing"
    for name in (*BOX_FIELDS, "score"):
        if not _numeric(fields[name]):
            return f"field {name} is {fields[name]}, expected a number"
    label = fields["label"]
    if not _numeric(label) and not (class_names and (pa.types.is_string(label) or pa.types.is_large_string(label))):
        return (f"field label is {label}, expected an integer class id"
                + ("" if class_names else " (class names need detection.classes)"))
    probs = fields.get("probs")
    if probs is not None and not pa.types.is_null(probs) and not (
            (pa.types.is_list(probs) or pa.types.is_large_list(probs)) and _numeric(probs.value_type)):
        return f"field probs is {probs}, expected a list of numbers"
    return None


def detections_array(values: Sequence[Detections | None]) -> pa.Array:
    """A :data:`DETECTIONS_TYPE` array of one value per image (None: a null)."""
    return pa.array([None if v is None else v.to_pylist() for v in values], DETECTIONS_TYPE)


def check_detections(value: object, *, width: float | None, height: float | None,
                     known_labels: frozenset[int] | None, n_classes: int | None,
                     class_names: Sequence[str] | None = None) -> Detections:
    """One image's detections value (a list of structs) checked against the contract.

    Parameters
    ----------
    value : the column's Python value: a list of mappings with the fields of :data:`DETECTION_STRUCT`
    width, height : the image's size in pixels; None skips the check against the image
    known_labels : the class ids a label may take; None accepts any id >= 0
    n_classes : the width ``probs`` must have; None accepts any width shared by the image's objects
    class_names : the names a string ``label`` may take (``detection.classes``); the id is the
        name's position. None: a label must be an id

    Raises DetectionError naming the object (``detections[k]``) and field: a box outside the
    image, a box without area (x1 <= x0 or y1 <= y0), an unknown label, a score outside 0..1, a value that is no number
    (a string, a list) or not finite, probabilities of the wrong width or that do not sum to 1,
    probs given for some objects only.
    """
    if value is None:
        raise DetectionError("detections: missing (null); an image without objects is an empty list")
    if not isinstance(value, (list, tuple)):
        raise DetectionError(f"detections: expected a list of objects, got {type(value).__name__}")
    boxes = np.zeros((len(value), 4))
    labels = np.zeros(len(value), dtype=np.int64)
    scores = np.zeros(len(value))
    probs: list[np.ndarray] = []
    with_probs = [isinstance(v, dict) and v.get("probs") is not None for v in value]
    for k, item in enumerate(value):
        where = f"detections[{k}]"
        if not isinstance(item, dict):
            raise DetectionError(f"{where}: expected a struct of x0, y0, x1, y1, label, score")
        for j, name in enumerate(BOX_FIELDS):
            boxes[k, j] = finite_number(item.get(name), f"{where}.{name}")
        x0, y0, x1, y1 = boxes[k]
        # a box without area (x1 = x0) has no crop, no IoU with anything: no object
        if x1 <= x0:
            raise DetectionError(f"{where}.x1: {x1:g} {'<' if x1 < x0 else '='} x0 {x0:g} (a box needs x1 > x0)")
        if y1 <= y0:
            raise DetectionError(f"{where}.y1: {y1:g} {'<' if y1 < y0 else '='} y0 {y0:g} (a box needs y1 > y0)")
        for name, low, high, size in (("x0", x0, x1, width), ("y0", y0, y1, height)):
            if size is not None and (low < -BOX_TOLERANCE or high > size + BOX_TOLERANCE):
                axis = "width" if name == "x0" else "height"
                field = name if low < -BOX_TOLERANCE else name.replace("0", "1")
                shown = low if low < -BOX_TOLERANCE else high
                raise DetectionError(f"{where}.{field}: {shown:g} outside the image ({axis} {size:g})")
        labels[k] = class_id(item.get("label"), f"{where}.label", class_names)
        if labels[k] < 0 or (known_labels is not None and labels[k] not in known_labels):
            known = "an id >= 0" if known_labels is None else f"one of {sorted(known_labels)}"
            raise DetectionError(f"{where}.label: unknown class id {labels[k]} (expected {known})")
        scores[k] = finite_number(item.get("score"), f"{where}.score")
        if not 0.0 <= scores[k] <= 1.0:
            raise DetectionError(f"{where}.score: {scores[k]:g} outside 0..1")
        if any(with_probs) and not with_probs[k]:
            raise DetectionError(f"{where}.probs: missing while other objects of the image have them")
        if with_probs[k]:
            # without n_classes, the image's first probabilities say the width
            probs.append(_probs(item["probs"], f"{where}.probs", n_classes or (len(probs[0]) if probs else None)))
    prob_array = np.stack(probs) if probs else (np.zeros((0, n_classes)) if n_classes and not value else None)
    return Detections(boxes, labels, scores, prob_array)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def finite_number(value: object, where: str) -> float:
    """``value`` as a finite float; DetectionError naming ``where`` when it is missing, no number (a
    string, a list, a bool) or not finite (NaN, infinite, an integer beyond a float's range)."""
    if value is None:
        raise DetectionError(f"{where}: missing")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DetectionError(f"{where}: expected a number, got {_shown(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise DetectionError(f"{where}: non-finite value {_shown(value)}")
    return number


#: Class ids are int32 in the detections column.
LARGEST_CLASS_ID = 2**31 - 1


def class_id(value: object, where: str, class_names: Sequence[str] | None = None) -> int:
    """A label as a class id: an integral number, or a name's position in ``class_names``; DetectionError
    naming ``where`` otherwise."""
    if isinstance(value, str) and class_names is not None:
        if value in class_names:
            return list(class_names).index(value)
        raise DetectionError(f"{where}: unknown class name {_shown(value)} (expected one of detection.classes "
                             f"{list(class_names)})")
    expected = "an integer class id" + ("" if class_names is not None else " (class names need detection.classes)"
                                        if isinstance(value, str) else "")
    try:
        number = finite_number(value, where)
    except DetectionError:
        raise DetectionError(f"{where}: expected {expected}, got {_shown(value)}") from None
    if not number.is_integer() or abs(number) > LARGEST_CLASS_ID:
        raise DetectionError(f"{where}: expected {expected}, got {_shown(value)}")
    return int(number)


def _probs(value: object, where: str, width: int | None) -> np.ndarray:
    try:
        given = np.asarray(value)
    except (TypeError, ValueError):
        given = np.asarray(None)
    if given.ndim != 1 or given.dtype.kind not in "iuf":  # strings and huge integers stay objects
        raise DetectionError(f"{where}: expected a list of numbers, got {_shown(value)}")
    row = given.astype(np.float64)
    if width is not None and len(row) != width:
        raise DetectionError(f"{where}: {len(row)} values, expected {width}")
    if not np.isfinite(row).all():
        raise DetectionError(f"{where}: non-finite values")
    if (row < 0).any():
        raise DetectionError(f"{where}: negative probabilities")
    if abs(row.sum() - 1.0) > PROBS_TOLERANCE:
        raise DetectionError(f"{where}: probabilities sum to {row.sum():.4g}, not 1")
    return row


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
    """Intersection over union of every box of ``a`` (K, 4) with every box of ``b`` (M, 4): (K, M).

    Boxes are x0, y0, x1, y1; two empty boxes (zero area) have IoU 0.
    """
    first = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    second = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0.0, None).prod(axis=2)
    area_a = np.clip(first[:, 2:] - first[:, :2], 0.0, None).prod(axis=1)
    area_b = np.clip(second[:, 2:] - second[:, :2], 0.0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - overlap
    return np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)


def flip_boxes(boxes: npt.ArrayLike, width: float) -> np.ndarray:
    """Boxes (K, 4) of a horizontally flipped image of ``width`` mapped back to the original (and vice versa)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], axis=1)


def scale_boxes(boxes: npt.ArrayLike, sx: float, sy: float) -> np.ndarray:
    """Boxes (K, 4) with x multiplied by ``sx`` and y by ``sy``."""
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * np.array([sx, sy, sx, sy])
