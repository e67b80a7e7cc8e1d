"""The report of a detection run: objects per image, the detections' scores and classes, boxes drawn."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from alray.config import config_from_dict
from alray.demo import png_bytes
from alray.detection.boxes import DETECTIONS_TYPE
from alray.detection.report import boxed_image, detection_sections
from alray.html_report import load_run, render
from alray.pipeline import run_pipeline
from alray.progress import Progress


def _pool(tmp_path) -> str:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        objects = [{"x0": 4.0 * k, "y0": 2.0, "x1": 4.0 * k + 10.0, "y1": 20.0, "label": k % 2,
                    "score": float(rng.uniform(0.3, 1.0)), "probs": None} for k in range(i % 4)]
        rows.append({"id": f"img-{i:02d}", "embedding": rng.normal(size=3).tolist(), "detections": objects,
                     "width": 48, "height": 32, "image": png_bytes(np.full((32, 48, 3), 200, dtype=np.uint8))})
    schema = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32())), ("detections", DETECTIONS_TYPE),
                        ("width", pa.int32()), ("height", pa.int32()), ("image", pa.binary())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), str(tmp_path / "pool.parquet"))
    return str(tmp_path / "pool.parquet")


def test_a_detection_run_reports_objects_scores_and_boxes(ray_session, tmp_path):
    config = config_from_dict({
        "task": "detection", "detection": {"classes": ["car", "bike"]}, "pool": {"path": _pool(tmp_path)},
        "selection": {"n_samples": 5, "strategies": [{"input": "embeddings", "strategy": "diversity"},
                                                     {"input": "objectness_least_confidence", "strategy": "weights"}],
                      "filters": [{"column": "n_objects", "op": ">=", "value": 1}]},
        "output": {"path": str(tmp_path / "lake")}})
    summary = run_pipeline(config, progress=Progress(quiet=True))
    page = render(load_run(config, summary.run_id))
    for title in ("Objects per image", "Detections: scores and classes", "Selected images and their detections"):
        assert title in page
    boxed = re.findall(r"<img class='boxed' alt='([^']+)'", page)
    assert len(boxed) == 5
    # a detection run has no class predictions per image to draw
    assert "Predicted classes: selection vs pool</h2><p class='muted'>not available for this run</p>" in page


def test_boxes_are_drawn_in_their_class_colour():
    payload = png_bytes(np.full((40, 40, 3), 255, dtype=np.uint8))
    png = boxed_image(payload, [{"x0": 5.0, "y0": 5.0, "x1": 30.0, "y1": 35.0, "label": 1, "score": 0.5}],
                      ["car", "bike"])
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB"))
    scale = 192 // 40
    assert image.shape[:2] == (40 * scale, 40 * scale)
    assert tuple(image[20 * scale, 5 * scale]) == (0x2A, 0x9D, 0x8F)  # the left edge, class 1's colour
    assert tuple(image[2, 2]) == (255, 255, 255)
    assert boxed_image(b"not an image", [], None) is None


def test_a_run_without_detections_has_no_detection_sections():
    class Data:  # the report data of a classification run: no detections column
        features = pa.table({"id": ["a"], "n_objects": pa.array([None], pa.int64())})
        config = config_from_dict({"pool": {"path": "p"}, "selection": {"n_samples": 1}, "output": {"path": "o"}})

    assert detection_sections(Data()) == []  # type: ignore[arg-type]
