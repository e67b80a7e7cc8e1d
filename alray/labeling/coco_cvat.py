"""A selection as files that CVAT imports: COCO 1.0 JSON and CVAT for images 1.1 XML, beside the images.

Both describe the images (file name, width, height) and the classes. A classification has no
COCO annotation type, so the COCO file's annotations stay empty (each image carries alray's rank,
score and prediction under ``alray``, which COCO readers ignore); CVAT's XML holds the prediction
as an image tag (``source="auto"``), which CVAT shows as a pre-annotation. A detection run's boxes
become COCO ``bbox`` annotations (x, y, width, height in pixels, with the detector's ``score``)
and CVAT ``box`` shapes (``source="auto"``) of rectangle labels.
"""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alray.labeling.images import ImageInfo


@dataclass(frozen=True)
class ExportedImage:
    """An image written for an export: the item's id, its file name under ``images/`` and its size."""

    id: str
    file_name: str
    info: ImageInfo
    rank: int
    score: float | None
    prediction: str | None
    confidence: float | None
    boxes: list[dict[str, Any]] = field(default_factory=list)  # label (class name), x0, y0, x1, y1, score
    objects: list[dict[str, Any]] | None = None  # a crop-selection run's picked objects: id, rank, score


def write_coco(path: Path, images: list[ExportedImage], classes: list[str], *, run_id: str,
               boxes: bool = False) -> None:
    """COCO 1.0 (instances) JSON: images, categories (1..C), and with ``boxes`` each image's boxes as
    annotations (else none)."""
    category = {name: n for n, name in enumerate(classes, start=1)}
    annotations: list[dict[str, Any]] = []
    for n, image in enumerate(images, start=1):
        for box in image.boxes if boxes else []:
            width, height = box["x1"] - box["x0"], box["y1"] - box["y0"]
            annotations.append({"id": len(annotations) + 1, "image_id": n, "category_id": category[box["label"]],
                                "bbox": [round(box["x0"], 2), round(box["y0"], 2), round(width, 2), round(height, 2)],
                                "area": round(width * height, 2), "iscrowd": 0, "segmentation": [],
                                "score": box.get("score")})
    document: dict[str, Any] = {
        "info": {"description": f"alray selection of run {run_id}", "version": "1.0",
                 "date_created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")},
        "licenses": [],
        "images": [{"id": n, "file_name": image.file_name, "width": image.info.width, "height": image.info.height,
                    "alray": {"id": image.id, "round": run_id, "rank": image.rank, "score": image.score,
                              "prediction": image.prediction, "confidence": image.confidence,
                              **({"objects": image.objects} if image.objects else {})}}
                   for n, image in enumerate(images, start=1)],
        "annotations": annotations,
        "categories": [{"id": n, "name": name, "supercategory": ""} for name, n in category.items()],
    }
    path.write_text(json.dumps(document, indent=1))


def write_cvat(path: Path, images: list[ExportedImage], classes: list[str], *, run_id: str,
               boxes: bool = False) -> None:
    """CVAT for images 1.1 XML: the task's labels (tags, or rectangles with ``boxes``), and per image its
    predicted class as a tag or its boxes as box shapes."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "name").text = f"alray {run_id}"
    ET.SubElement(task, "size").text = str(len(images))
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for name in classes:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "type").text = "rectangle" if boxes else "tag"
        ET.SubElement(label, "attributes")
    for n, image in enumerate(images):
        element = ET.SubElement(root, "image", id=str(n), name=image.file_name, width=str(image.info.width),
                                height=str(image.info.height))
        if boxes:
            for box in image.boxes:
                corners = {name: f"{box[key]:.2f}" for name, key in (("xtl", "x0"), ("ytl", "y0"), ("xbr", "x1"),
                                                                       ("ybr", "y1"))}
                ET.SubElement(element, "box", {"label": box["label"], "source": "auto", "occluded": "0",
                                               "z_order": "0", **corners})
        elif image.prediction is not None:
            ET.SubElement(element, "tag", label=image.prediction, source="auto")
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
