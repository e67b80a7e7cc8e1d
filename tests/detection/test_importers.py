"""COCO and YOLO predictions into the detections column: exact round trips, empty images, unknown images."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from alray.cli import main as alray_main
from alray.demo import png_bytes

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
