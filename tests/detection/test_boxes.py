"""The detections contract: row checks that name the object and field, and box arithmetic."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from alray.detection.boxes import (
    DETECTIONS_TYPE,
    DetectionError,
    Detections,
    box_iou,
    check_detections,
    detections_array,
    detections_type_problem,
    flip_boxes,
    scale_boxes,
)


def _object(**fields):
    base = {"x0": 1.0, "y0": 2.0, "x1": 11.0, "y1": 12.0, "label": 1, "score": 0.5, "probs": None}
    return {**base, **fields}


def _check(value, **kwargs):
    options = {"width": 64, "height": 48, "known_labels": frozenset({0, 1, 2}), "n_classes": 3, **kwargs}
    return check_detections(value, **options)


@pytest.mark.parametrize("value, message", [
    ([_object(x1=70.0)], "detections[0].x1: 70 outside the image (width 64)"),
    ([_object(y0=-3.0)], "detections[0].y0: -3 outside the image (height 48)"),
    ([_object(), _object(x0=20.0, x1=15.0)], "detections[1].x1: 15 < x0 20 (a box needs x1 > x0)"),
    ([_object(y1=1.0)], "detections[0].y1: 1 < y0 2 (a box needs y1 > y0)"),
    ([_object(x1=1.0)], "detections[0].x1: 1 = x0 1 (a box needs x1 > x0)"),
    ([_object(y0=12.0)], "detections[0].y1: 12 = y0 12 (a box needs y1 > y0)"),
    ([_object(label=7)], "detections[0].label: unknown class id 7 (expected one of [0, 1, 2])"),
    ([_object(label=1.5)], "detections[0].label: expected an integer class id, got 1.5"),
    ([_object(score=1.5)], "detections[0].score: 1.5 outside 0..1"),
    ([_object(x0=float("nan"))], "detections[0].x0: non-finite value"),
    ([_object(probs=[0.5, 0.5])], "detections[0].probs: 2 values, expected 3"),
    ([_object(probs=[0.5, 0.3, 0.1])], "detections[0].probs: probabilities sum to 0.9, not 1"),
    ([_object(probs=[0.2, 0.3, 0.5]), _object()], "detections[1].probs: missing while other objects"),
    (None, "detections: missing (null)"),
    ([_object(label="car")], "detections[0].label: expected an integer class id (class names need "
                             "detection.classes), got 'car'"),
    ([_object(label=[1])], "detections[0].label: expected an integer class id, got [1]"),
    ([_object(label=1e300)], "detections[0].label: expected an integer class id, got 1e+300"),
    ([_object(label=10**400)], "detections[0].label: expected an integer class id, got 1000000000000000000"),
    ([_object(x0="3")], "detections[0].x0: expected a number, got '3'"),
    ([_object(score=[0.5])], "detections[0].score: expected a number, got [0.5]"),
    ([_object(y1=10**400)], "detections[0].y1: non-finite value 1000000000000000000"),
    ([_object(probs=["a", "b", "c"])], "detections[0].probs: expected a list of numbers, got ['a', 'b', 'c']"),
    ([_object(probs=[10**400, 0, 0])], "detections[0].probs: expected a list of numbers"),
    ([_object(probs=3)], "detections[0].probs: expected a list of numbers, got 3"),
])
def test_bad_detections_name_the_object_and_field(value, message):
    with pytest.raises(DetectionError) as info:
        _check(value)
    assert str(info.value).startswith(message)


def test_labels_may_be_the_names_of_detection_classes():
    names = ("car", "bus", "bike")
    found = _check([_object(label="bike"), _object(label=0)], class_names=names)
    assert found.labels.tolist() == [2, 0]
    with pytest.raises(DetectionError) as info:
        _check([_object(label="zebra")], class_names=names)
    assert str(info.value) == ("detections[0].label: unknown class name 'zebra' (expected one of detection.classes "
                               "['car', 'bus', 'bike'])")


@pytest.mark.parametrize("kind, problem", [
    (DETECTIONS_TYPE, None),
    (pa.large_list(pa.struct([*(pa.field(n, pa.float64()) for n in ("x0", "y0", "x1", "y1", "score")),
                              pa.field("label", pa.int64()), pa.field("extra", pa.string())])), None),
    (pa.list_(pa.struct([*(pa.field(n, pa.float64()) for n in ("x0", "y0", "x1", "y1", "score")),
                         pa.field("label", pa.string())])),
     "field label is string, expected an integer class id (class names need detection.classes)"),
    (pa.list_(pa.struct([*(pa.field(n, pa.string()) for n in ("x0", "y0", "x1", "y1", "score")),
                         pa.field("label", pa.int32())])), "field x0 is string, expected a number"),
    (pa.list_(pa.struct([pa.field("x0", pa.float32())])), "field y0 is missing"),
    (pa.string(), "expected a list of structs"),
    (pa.list_(pa.struct([*(pa.field(n, pa.float64()) for n in ("x0", "y0", "x1", "y1", "score")),
                         pa.field("label", pa.int32()), pa.field("probs", pa.list_(pa.string()))])),
     "field probs is list<item: string>, expected a list of numbers"),
])
def test_the_detections_column_type_is_checked_field_by_field(kind, problem):
    found = detections_type_problem(kind, class_names=False)
    assert found == problem if problem is None else found.startswith(problem), found
    named = pa.list_(pa.struct([*(pa.field(n, pa.float64()) for n in ("x0", "y0", "x1", "y1", "score")),
                                pa.field("label", pa.string())]))
    assert detections_type_problem(named, class_names=True) is None


def test_good_detections_and_an_empty_image():
    value = [_object(probs=[0.2, 0.3, 0.5]), _object(x0=0.0, x1=64.2, label=0, probs=[1.0, 0.0, 0.0])]
    detections = _check(value)
    np.testing.assert_allclose(detections.boxes, [[1, 2, 11, 12], [0, 2, 64.2, 12]])
    assert detections.labels.tolist() == [1, 0] and detections.probs.shape == (2, 3)
    empty = _check([])
    assert len(empty) == 0 and empty.probs.shape == (0, 3)
    assert len(_check([_object(label=99)], known_labels=None, n_classes=None)) == 1  # any id >= 0


def test_the_arrow_column_round_trips():
    images = [Detections.of([[1, 2, 3, 4]], [2], [0.25], [[0.25, 0.25, 0.5]]), Detections.empty(), None]
    array = detections_array(images)
    assert array.type == DETECTIONS_TYPE and array.null_count == 1
    back = [None if v is None else _check(v) for v in pa.array(array).to_pylist()]
    np.testing.assert_allclose(back[0].boxes, images[0].boxes)
    np.testing.assert_allclose(back[0].probs, images[0].probs)
    assert len(back[1]) == 0 and back[2] is None


def test_iou_flip_and_scale():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10]])
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 1.0], [0.0, 0.0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 2)
    flipped = flip_boxes([[2, 3, 10, 7]], width=32)
    np.testing.assert_allclose(flipped, [[22, 3, 30, 7]])
    np.testing.assert_allclose(flip_boxes(flipped, 32), [[2, 3, 10, 7]])
    np.testing.assert_allclose(scale_boxes([[1, 2, 3, 4]], 2.0, 0.5), [[2, 1, 6, 2]])
