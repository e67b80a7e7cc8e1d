"""A selection as files that CVAT imports: COCO 1.0 JSON and CVAT for images 1.1 XML, beside the images.

Both describe the images (file name, width, height) and the classes. A classification has no
COCO annotation type, so the COCO file's annotations stay empty (each image carries alray's rank,
score and prediction under ``alray``, which COCO readers ignore); CVAT's XML holds the prediction
as an image tag (``source="auto"``), which CVAT shows as a pre-annotation.
"""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
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


def write_coco(path: Path, images: list[ExportedImage], classes: list[str], *, run_id: str) -> None:
    """COCO 1.0 (instances) JSON: images, categories (1..C), no annotations."""
    document: dict[str, Any] = {
        "info": {"description": f"alray selection of run {run_id}", "version": "1.0",
                 "date_created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")},
        "licenses": [],
        "images": [{"id": n, "file_name": image.file_name, "width": image.info.width, "height": image.info.height,
                    "alray": {"id": image.id, "round": run_id, "rank": image.rank, "score": image.score,
                              "prediction": image.prediction, "confidence": image.confidence}}
                   for n, image in enumerate(images, start=1)],
        "annotations": [],
        "categories": [{"id": n, "name": name, "supercategory": ""} for n, name in enumerate(classes, start=1)],
    }
    path.write_text(json.dumps(document, indent=1))


def write_cvat(path: Path, images: list[ExportedImage], classes: list[str], *, run_id: str) -> None:
    """CVAT for images 1.1 XML: the task's tag labels, and per image its predicted class as a tag."""
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
        ET.SubElement(label, "type").text = "tag"
        ET.SubElement(label, "attributes")
    for n, image in enumerate(images):
        element = ET.SubElement(root, "image", id=str(n), name=image.file_name, width=str(image.info.width),
                                height=str(image.info.height))
        if image.prediction is not None:
            ET.SubElement(element, "tag", label=image.prediction, source="auto")
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
