"""Label Studio tasks, labeling config and export parsing, without a server (tests/labeling/test_server.py
runs them against a real one)."""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET

import pytest

from alray.errors import InputError
from alray.labeling.label_studio import TASK_KINDS, build_task, label_config, parse_export, task_kind
from alray.labeling.selection import Item

KIND = TASK_KINDS["classification"]


def test_a_task_holds_the_reference_ids_scores_and_the_prediction():
    item = Item(id="img/3.png", rank=2, score=0.75, pred=1, probs=[0.2, 0.7, 0.1], scores={"entropy": 0.8})
    task = build_task(item, "data:image/png;base64,xx", run_id="r1", kind=KIND, payload="image",
                      classes=["a", "b", "c"])
    assert task["data"] == {"image": "data:image/png;base64,xx", "alray_id": "img/3.png", "alray_round": "r1",
                            "alray_rank": 2, "alray_score": 0.75, "alray_entropy": 0.8, "alray_pred": "b"}
    (prediction,) = task["predictions"]
    assert prediction["model_version"] == "alray-r1" and prediction["score"] == pytest.approx(0.7)
    assert prediction["result"] == [{"from_name": "label", "to_name": "image", "type": "choices",
                                     "value": {"choices": ["b"]}}]
    odd = build_task(Item(id="x", rank=1, score=float("nan"), scores={"bald": float("inf")}), "u", run_id="r1",
                     kind=KIND, payload="image", classes=[])
    assert (odd["data"]["alray_score"], odd["data"]["alray_bald"]) == (None, None)  # JSON has no NaN
    # no model output (an encoder only): no pre-annotation
    bare = build_task(Item(id="x", rank=1, score=None), "u", run_id="r1", kind=KIND, payload="image", classes=[])
    assert "predictions" not in bare


def test_the_labeling_config_names_every_class_and_the_object():
    xml = ET.fromstring(label_config(KIND, "image", ["cat", 'say "hi"']))
    assert xml.find("Image").attrib == {"name": "image", "value": "$image"}
    choices = xml.find("Choices")
    assert choices.attrib["toName"] == "image" and choices.attrib["name"] == "label"
    assert [c.attrib["value"] for c in choices] == ["cat", 'say "hi"']
    assert ET.fromstring(label_config(KIND, "text", ["x"])).find("Text").attrib["value"] == "$text"


def _task(item, annotations, project=7):
    return {"id": 1, "project": project, "data": {"alray_id": item, "alray_round": "r1"}, "annotations": annotations}


def _annotation(aid, choice, updated, cancelled=False):
    return {"id": aid, "was_cancelled": cancelled, "updated_at": updated, "created_at": updated,
            "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]}


def test_the_latest_annotation_that_was_not_cancelled_is_the_label():
    tasks = [
        _task("a", [_annotation(1, "cat", "2026-03-01T10:00:00Z"), _annotation(2, "dog", "2026-03-02T10:00:00Z"),
                    _annotation(3, "bird", "2026-03-03T10:00:00Z", cancelled=True)]),
        _task("b", []),
        {"id": 9, "data": {"image": "x"}, "annotations": [_annotation(4, "cat", "2026-03-01T10:00:00Z")]},
    ]
    parsed = parse_export(tasks, where="export.json", kind=KIND)
    assert parsed.rows == [{"id": "a", "label": "dog", "source": "label-studio:project/7/annotation/2",
                            "round": "r1", "labeled_at": dt.datetime(2026, 3, 2, 10, tzinfo=dt.timezone.utc)}]
    assert parsed.skipped == {"no annotation": 1, "no alray_id in data": 1}


@pytest.mark.parametrize(("tasks", "message"), [
    ({"tasks": []}, "export.json: expected Label Studio's JSON export (a list of tasks), got dict"),
    ([{"annotations": []}], "export.json: task 0: expected an object with 'data'"),
    ([_task("a", [_annotation(1, "cat", "yesterday")])], "export.json: task 0: annotation time 'yesterday'"),
])
def test_a_bad_export_is_one_line_naming_the_file_and_task(tasks, message):
    with pytest.raises(InputError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_export(tasks, where="export.json", kind=KIND)


def test_an_unknown_task_kind_names_the_known_ones():
    with pytest.raises(InputError, match=r"--task: expected one of \['classification', 'detection'\], got 'segm"):
        task_kind("segmentation")


BOXES = TASK_KINDS["detection"]


def test_a_detection_task_holds_the_boxes_in_percent_and_its_image_size():
    detections = [{"x0": 10.0, "y0": 20.0, "x1": 50.0, "y1": 40.0, "label": 1, "score": 0.8, "probs": None},
                  {"x0": -2.0, "y0": 0.0, "x1": 200.0, "y1": 100.0, "label": 0, "score": 0.4, "probs": None},
                  {"x0": 1.0, "y0": 1.0, "x1": 2.0, "y1": 2.0, "label": 7, "score": 0.9, "probs": None},  # no name
                  {"x0": 201.0, "y0": 1.0, "x1": 230.0, "y1": 2.0, "label": 0, "score": 0.9, "probs": None}]  # outside
    item = Item(id="img", rank=1, score=0.5, detections=detections, width=200, height=100)
    task = build_task(item, "data:x", run_id="r1", kind=BOXES, payload="image", classes=["circle", "square"])
    assert (task["data"]["alray_width"], task["data"]["alray_height"]) == (200, 100)
    first, second = task["predictions"][0]["result"]
    assert first["type"] == "rectanglelabels" and (first["original_width"], first["original_height"]) == (200, 100)
    assert first["value"] == {"x": 5.0, "y": 20.0, "width": 20.0, "height": 20.0, "rotation": 0,
                              "rectanglelabels": ["square"]}
    assert first["score"] == pytest.approx(0.8)
    assert second["value"]["x"] == 0.0 and second["value"]["width"] == 100.0  # clipped to the image
    xml = ET.fromstring(label_config(BOXES, "image", ["circle", "square"]))
    rectangles = xml.find("RectangleLabels")
    assert rectangles.attrib == {"name": "label", "toName": "image"}
    assert [label.attrib["value"] for label in rectangles] == ["circle", "square"]


def test_rectangles_read_back_are_boxes_in_the_image_s_pixels():
    def rectangle(x, y, w, h, name, size=True):
        result = {"type": "rectanglelabels", "from_name": "label", "to_name": "image",
                  "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [name]}}
        return {**result, "original_width": 200, "original_height": 100} if size else result

    tasks = [
        _task("a", [{"id": 1, "updated_at": "2026-03-01T00:00:00Z",
                     "result": [rectangle(50, 10, 25, 50, "square"), rectangle(5, 20, 20, 20, "circle", size=False)]}]),
        _task("b", [{"id": 2, "updated_at": "2026-03-01T00:00:00Z", "result": []}]),  # no objects: a label too
        _task("c", [{"id": 3, "updated_at": "2026-03-01T00:00:00Z", "was_cancelled": True,
                     "result": [rectangle(0, 0, 1, 1, "circle")]}]),
    ]
    for task in tasks:
        task["data"].update(alray_width=200, alray_height=100)
    rows = {row["id"]: json.loads(row["label"]) for row in parse_export(tasks, where="e", kind=BOXES).rows}
    assert rows == {"a": [{"label": "square", "x0": 100.0, "y0": 10.0, "x1": 150.0, "y1": 60.0},  # top first
                          {"label": "circle", "x0": 10.0, "y0": 20.0, "x1": 50.0, "y1": 40.0}],
                    "b": []}
    rotated = rectangle(5, 20, 20, 20, "circle")
    rotated["value"]["rotation"] = 30
    with pytest.raises(InputError, match=r"task of 'a': a rotated rectangle \(30 degrees\)"):
        parse_export([_task("a", [{"id": 4, "updated_at": "2026-03-01T00:00:00Z", "result": [rotated]}])],
                     where="e", kind=BOXES)
