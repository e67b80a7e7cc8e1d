"""COCO and YOLO predictions into the detections column: exact round trips, empty images, unknown images."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from alray.cli import main as alray_main
from alray.demo import png_bytes
from alray.lake import Lake
from alray.models import SmallCNN, save_checkpoint

# (id, width, height, objects as (x0, y0, x1, y1, label, score)); dyadic numbers, so every
# conversion (corner + size, shares of the image) is exact in float32
IMAGES = [
    ("cam/a.png", 64, 32, [(2.0, 4.0, 10.0, 12.0, 0, 0.5), (32.0, 0.0, 64.0, 32.0, 2, 0.875)]),
    ("cam/b.png", 128, 64, [(0.5, 1.25, 8.0, 16.0, 1, 0.25)]),
    ("c.png", 32, 32, []),  # no predictions: zero objects
    ("d.png", 16, 48, [(4.0, 8.0, 12.0, 40.0, 1, 1.0)]),
]


def _pool(tmp_path) -> str:
    rows = [{"id": i, "image": png_bytes(np.zeros((h, w, 3), dtype=np.uint8)), "camera": i[:3]}
            for i, w, h, _ in IMAGES]
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


def _import(tmp_path, predictions: str, fmt: str, *extra: str) -> tuple[int, str, str]:
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"pool": {"path": _pool(tmp_path)}, "selection": {"n_samples": 1},
                                      "output": {"path": str(tmp_path / "lake")}}))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = alray_main(["import-predictions", str(config), predictions, "--format", fmt,
                           "--out", str(tmp_path / "imported"), "--json", *extra])
    return code, out.getvalue(), err.getvalue()


def _imported(tmp_path) -> dict[str, dict]:
    table = pq.read_table(str(tmp_path / "imported" / "part-00000.parquet"))
    return {row["id"]: row for row in table.to_pylist()}


def _expected_objects(objects) -> list[tuple]:
    return [(x0, y0, x1, y1, label, score) for x0, y0, x1, y1, label, score in objects]


def _as_tuples(row) -> list[tuple]:
    return [(o["x0"], o["y0"], o["x1"], o["y1"], o["label"], o["score"]) for o in row["detections"]]


def test_coco_results_round_trip_exactly(tmp_path):
    entries = [{"image_id": i, "category_id": label, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score}
               for i, _, _, objects in IMAGES for x0, y0, x1, y1, label, score in objects]
    (tmp_path / "results.json").write_text(json.dumps(entries))
    code, out, err = _import(tmp_path, str(tmp_path / "results.json"), "coco")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["n_images"] == 4 and summary["n_with_objects"] == 3 and summary["n_objects"] == 4
    rows = _imported(tmp_path)
    for identifier, width, height, objects in IMAGES:
        assert _as_tuples(rows[identifier]) == _expected_objects(objects)
        assert (rows[identifier]["width"], rows[identifier]["height"]) == (width, height)
    assert rows["c.png"]["detections"] == []  # zero objects, not null
    assert rows["cam/a.png"]["camera"] == "cam"


def test_coco_image_ids_through_a_dataset_file(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"images": [{"id": 7, "file_name": "d.png"}]}))
    (tmp_path / "results.json").write_text(json.dumps([
        {"image_id": 7, "category_id": 3, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}]))
    code, _, err = _import(tmp_path, str(tmp_path / "results.json"), "coco", "--coco-images",
                           str(tmp_path / "dataset.json"))
    assert code == 0, err
    assert _as_tuples(_imported(tmp_path)["d.png"]) == [(1.0, 2.0, 4.0, 6.0, 3, 0.5)]


@pytest.mark.parametrize("classes, expected", [(None, [0, 1, 2]), (["car", "toothbrush", "person"], [2, 0, 1])])
def test_coco_category_ids_map_through_the_datasets_categories(tmp_path, classes, expected):
    """COCO's ids run 1 to 90 with gaps: mapped to 0..C-1 in id order, or by name to detection.classes."""
    categories = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    (tmp_path / "dataset.json").write_text(json.dumps({"images": [{"id": 7, "file_name": "d.png"}],
                                                       "categories": categories}))
    (tmp_path / "results.json").write_text(json.dumps([
        {"image_id": 7, "category_id": c, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5} for c in (1, 3, 90)]))
    extra = ["--set", f"detection.classes={json.dumps(classes)}"] if classes else []
    code, _, err = _import(tmp_path, str(tmp_path / "results.json"), "coco", "--coco-images",
                           str(tmp_path / "dataset.json"), *extra)
    assert code == 0, err
    assert [o["label"] for o in _imported(tmp_path)["d.png"]["detections"]] == expected
    (tmp_path / "results.json").write_text(json.dumps([
        {"image_id": 7, "category_id": 5, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}]))
    code, _, err = _import(tmp_path, str(tmp_path / "results.json"), "coco", "--coco-images",
                           str(tmp_path / "dataset.json"), *extra)
    assert code == 2 and err.strip() == (f"alray: error: {tmp_path / 'results.json'}: predictions[0].category_id: 5 "
                                         f"is not a category of {tmp_path / 'dataset.json'}")


def test_yolo_txt_round_trips_exactly(tmp_path):
    folder = tmp_path / "labels"
    for identifier, width, height, objects in IMAGES:
        if not objects:
            continue  # an image without a file has no objects
        path = folder / identifier.replace(".png", ".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{label} {(x0 + x1) / 2 / width!r} {(y0 + y1) / 2 / height!r} {(x1 - x0) / width!r} "
                 f"{(y1 - y0) / height!r} {score!r}" for x0, y0, x1, y1, label, score in objects]
        path.write_text("\n".join(lines) + "\n")
    (folder / "d.txt").write_text("1 0.5 0.5 0.5 0.6666666666666666\n")  # no confidence: score 1
    code, _, err = _import(tmp_path, str(folder), "yolo")
    assert code == 0, err
    rows = _imported(tmp_path)
    for identifier, _, _, objects in IMAGES[:3]:
        assert _as_tuples(rows[identifier]) == _expected_objects(objects)
    assert _as_tuples(rows["d.png"]) == [(4.0, 8.0, 12.0, 40.0, 1, 1.0)]


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_a_prediction_of_an_image_not_in_the_pool_is_exit_2_naming_file_id_and_field(tmp_path, fmt):
    if fmt == "coco":
        source = tmp_path / "results.json"
        source.write_text(json.dumps([{"image_id": "cam/a.png", "category_id": 0, "bbox": [0, 0, 1, 1]},
                                      {"image_id": "zz.png", "category_id": 0, "bbox": [0, 0, 1, 1], "score": 1}]))
        expected = f"alray: error: {source}: image_id zz.png (predictions[1].image_id): not in the pool"
    else:
        source = tmp_path / "labels"
        source.mkdir()
        (source / "zz.txt").write_text("0 0.5 0.5 0.1 0.1\n")
        expected = f"alray: error: {source / 'zz.txt'}: image id zz (the file name): not in the pool"
    code, out, err = _import(tmp_path, str(source), fmt)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert not (tmp_path / "imported" / "part-00000.parquet").exists()


def test_a_malformed_entry_names_the_field(tmp_path):
    source = tmp_path / "results.json"
    source.write_text(json.dumps([{"image_id": "c.png", "category_id": 0, "bbox": [0, 0, 1]}]))
    code, _, err = _import(tmp_path, str(source), "coco")
    assert code == 2
    assert err.strip() == (f"alray: error: {source}: predictions[0].bbox: expected [x, y, width, height], "
                           "got [0, 0, 1]")


def _encoder(path) -> str:
    torch.manual_seed(0)
    save_checkpoint(SmallCNN(in_channels=3, image_size=32, n_classes=0, embedding_dim=16), path)
    return str(path)


@pytest.mark.parametrize("level", ["images", "objects"])
def test_an_imported_pool_is_scored_with_an_encoder(ray_session, detection_files, tmp_path, level):
    """import-predictions writes width and height beside the detections; a run with a model decodes the
    images, so it takes them as inputs checked against the decoded size, not as clashing metadata."""
    truths = {r["id"]: r["detections"] for r in pq.read_table(detection_files.labeled).to_pylist()}
    entries = [{"image_id": i, "category_id": o["label"], "score": 0.75,
                "bbox": [o["x0"], o["y0"], o["x1"] - o["x0"], o["y1"] - o["y0"]]}
               for i, objects in truths.items() for o in objects]
    (tmp_path / "results.json").write_text(json.dumps(entries))
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({
        "task": "detection", "detection": {"classes": ["circle", "square", "triangle"], "level": level},
        "pool": {"path": detection_files.pool}, "model": {"checkpoint": _encoder(tmp_path / "encoder.pt")},
        "score": {"batch_size": 32, "max_bad_fraction": 0.1}, "run": {"seed": 0},
        "selection": {"n_samples": 5, "engine": "local",
                      "strategies": [{"input": "embeddings", "strategy": "diversity"}]},
        "output": {"path": str(tmp_path / "lake")}}))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = alray_main(["import-predictions", str(config), str(tmp_path / "results.json"), "--format", "coco",
                           "--out", str(tmp_path / "imported")])
        assert code == 0, err.getvalue()
        code = alray_main(["run", str(config), "--set", f"pool.path={tmp_path / 'imported'}", "--run-id", "imp",
                           "--json", "--quiet"])
    assert code == 0, err.getvalue()[-2000:]
    lake = Lake(str(tmp_path / "lake"))
    features = lake.read_run("features", "imp", columns=["id", "n_objects", "width", "height"]).to_pylist()
    assert len(features) == detection_files.n_pool - 3  # the corrupt images are rejected
    for row in features:
        assert row["n_objects"] == len(truths.get(row["id"], [])) and (row["width"], row["height"]) == (96, 96)
    assert {r["id"] for r in lake.read_run("rejects", "imp").to_pylist()} == {f"corrupt-{i:03d}" for i in range(3)}
    ranking = lake.read_run("ranking", "imp")
    assert pc.sum(ranking.column("selected")).as_py() == (5 if level == "images" else len(
        set(lake.read_run("object_ranking", "imp").filter(pc.field("selected")).column("image_id").to_pylist())))


def test_the_image_size_is_the_upright_one_scoring_decodes():
    from PIL import Image

    from alray.detection.importers import image_size
    from alray.payloads import decode_image

    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the upright image is 20 wide, 40 high
    Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8)).save(buffer, format="JPEG", exif=exif)
    data = buffer.getvalue()
    decoded = decode_image(data, channels=3, size=8).quality
    assert image_size({"image": data}, "image", "row") == (decoded["width"], decoded["height"]) == (20.0, 40.0)
    # an image that cannot be read (a uri to nothing, a payload that is no bytes) has no size: scoring rejects it
    for row, payload in (({"uri": "/no/such/image.png"}, "uri"), ({"image": "not bytes"}, "image")):
        assert all(np.isnan(image_size(row, payload, "row")))


@pytest.mark.parametrize("fmt, name, content, message", [
    ("yolo", "labels/d.txt", b"\xff\xfe 1 0.5 0.5",
     "labels/d.txt: not UTF-8 text; expected YOLO lines 'class cx cy w h [conf]'"),
    ("yolo", "labels/d.txt", b"99999999999 0.5 0.5 0.25 0.25", "labels/d.txt: line 1: class 99999999999: expected a "
                                                               "class id from 0 to 2147483647"),
    ("yolo", "labels/d.txt", b"-1 0.5 0.5 0.25 0.25", "labels/d.txt: line 1: class -1: expected a class id from 0 "
                                                      "to 2147483647"),
    ("coco", "results.json", json.dumps([{"image_id": "d.png", "category_id": 2**40, "bbox": [0, 0, 1, 1],
                                          "score": 0.5}]).encode(),
     "results.json: predictions[0].category_id: expected a class id from 0 to 2147483647, got 1099511627776"),
])
def test_a_predictions_file_that_cannot_be_read_is_one_line_naming_it(tmp_path, fmt, name, content, message):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    code, _, err = _import(tmp_path, str(tmp_path / name.split("/")[0]), fmt)
    assert code == 2 and err.strip() == f"alray: error: {tmp_path}/{message}", err
