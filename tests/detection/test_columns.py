"""The features table's detection columns of a batch: per-class counts as a map, class keys, nulls for rejects."""

from __future__ import annotations

from alray.detection.boxes import Detections
from alray.detection.columns import DetectionOptions, detection_columns
from alray.tables import CLASS_COUNTS_TYPE, DETECTION_SCORES


def test_class_counts_are_a_map_of_class_id_to_objects():
    box = [0, 0, 4, 4]
    images = [Detections.of([box] * 4, [2, 0, 2, 2], [0.9, 0.8, 0.7, 0.6]), Detections.empty(), None,
              Detections.of([box], [5], [0.5])]
    columns = detection_columns(images, DetectionOptions())
    counts = columns["object_class_counts"]
    assert counts.type == CLASS_COUNTS_TYPE
    assert counts.to_pylist() == [[(0, 1), (2, 3)], [], None, [(5, 1)]]  # ids ascending; a reject is null
    assert columns["object_classes"].to_pylist() == ["0:1,2:3", "", None, "5:1"]
    assert columns["n_objects"].to_pylist() == [4, 0, None, 1]
    assert set(DETECTION_SCORES) <= set(columns) and columns["detections"].null_count == 1
