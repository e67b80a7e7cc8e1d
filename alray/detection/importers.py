"""Detector predictions from files into a pool's ``detections`` column: COCO results JSON and YOLO txt.

- COCO results: a JSON list of ``{image_id, category_id, bbox: [x, y, w, h], score}`` (pixels,
  the box's top-left corner and size). ``image_id`` names a pool id (as a string), or, with a
  COCO dataset file (``images: [{id, file_name}]``), the image whose ``file_name`` is a pool id.
  The class id is the category's: with the dataset file's ``categories: [{id, name}]``, its name's
  position in ``detection.classes`` when the config names the classes, else its position among
  the categories in id order (COCO's 80 categories, ids 1 to 90 with gaps, become 0 to 79);
  without them, ``category_id`` as it is.
- YOLO: a folder of ``NAME.txt`` files, one line per object: ``class cx cy w h [conf]``, the box
  centre and size as shares of the image's width and height; ``NAME`` is a pool id without its
  extension (the file's path relative to the folder, for ids with folders). No ``conf``: score 1.

The output is the pool with a ``detections`` column (replaced when it had one) and the image
size in ``width`` and ``height`` (from those columns when the pool has them, else from the image
headers of its ``image`` or ``uri`` payloads, upright by their EXIF orientation as scoring
decodes them), written batch by batch as parquet. Scoring with a model checks that size against
the decoded image's and quarantines a row where they differ. An image with
no predictions gets an empty list (no objects); a prediction of an image not in the pool is an
error naming the file, the image id and the field.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from alray.detection.boxes import DETECTIONS_TYPE, LARGEST_CLASS_ID, DetectionError, finite_number
from alray.errors import InputError
from alray.lake import open_table, parquet_dataset
from alray.payloads import read_uri

FORMATS = ("coco", "yolo")
_CLASS_IDS = f"a class id from 0 to {LARGEST_CLASS_ID}"
# The EXIF tag of the image's orientation.
_EXIF_ORIENTATION = 0x0112


@dataclass
class Predictions:
    """Objects per image key, and where each key came from (for the error that names it)."""

    objects: dict[str, list[dict[str, Any]]]
    origin: dict[str, str]  # key -> "FILE: image_id 17 (predictions[3].image_id)"
    normalised: bool  # YOLO: boxes are shares of the image's size


def _number(value: object, where: str) -> float:
    try:
        return finite_number(value, where)
    except DetectionError as exc:
        raise InputError(str(exc)) from None


def _category_ids(data: dict[str, Any], images_file: str, class_names: list[str] | None) -> dict[int, int] | None:
    """A COCO dataset's category ids to alray's class ids: by name to ``class_names`` (``detection.classes``)
    when given, else the categories' positions in id order; None without a ``categories`` list."""
    categories = data.get("categories")
    if categories is None:
        return None
    if not isinstance(categories, list):
        raise InputError(f"{images_file}: categories: expected a list of {{id, name}}")
    named: dict[int, str] = {}
    for k, category in enumerate(categories):
        if (not isinstance(category, dict) or isinstance(category.get("id"), bool)
                or not isinstance(category.get("id"), int) or not isinstance(category.get("name"), str)):
            raise InputError(f"{images_file}: categories[{k}]: expected an integer id and a name")
        named[category["id"]] = category["name"]
    if class_names is None:
        return {category: index for index, category in enumerate(sorted(named))}
    unknown = [name for name in named.values() if name not in class_names]
    if unknown:
        raise InputError(f"{images_file}: categories: {unknown[0]!r} is not one of detection.classes {class_names}")
    return {category: class_names.index(name) for category, name in named.items()}


def read_coco(path: str, *, images_file: str | None = None, class_names: list[str] | None = None) -> Predictions:
    """COCO results JSON; with ``images_file`` (a COCO dataset JSON), image ids become its ``file_name``s and
    category ids its ``categories``' class ids (see the module docstring)."""
    names: dict[str, str] | None = None
    category_ids: dict[int, int] | None = None
    if images_file is not None:
        data = _json(images_file)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise InputError(f"{images_file}: expected a COCO dataset with an 'images' list")
        names = {}
        for k, image in enumerate(data["images"]):
            if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
                raise InputError(f"{images_file}: images[{k}]: expected id and file_name")
            names[str(image["id"])] = image["file_name"]
        category_ids = _category_ids(data, images_file, class_names)
    data = _json(path)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of COCO results (image_id, category_id, bbox, score)")
    objects: dict[str, list[dict[str, Any]]] = {}
    origin: dict[str, str] = {}
    for k, entry in enumerate(data):
        where = f"{path}: predictions[{k}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected an object with image_id, category_id, bbox, score")
        for key in ("image_id", "category_id", "bbox"):
            if key not in entry:
                raise InputError(f"{where}.{key}: missing")
        image_id = str(entry["image_id"])
        if names is not None:
            if image_id not in names:
                raise InputError(f"{where}.image_id: image_id {image_id} is not in {images_file}")
            key = names[image_id]
        else:
            key = image_id
        box = entry["bbox"]
        if not isinstance(box, list) or len(box) != 4:
            raise InputError(f"{where}.bbox: expected [x, y, width, height], got {box!r}")
        x, y, w, h = (_number(v, f"{where}.bbox") for v in box)
        label = entry["category_id"]
        if isinstance(label, bool) or not isinstance(label, int):
            raise InputError(f"{where}.category_id: expected an integer, got {label!r}")
        if category_ids is not None:
            if label not in category_ids:
                raise InputError(f"{where}.category_id: {label} is not a category of {images_file}")
            label = category_ids[label]
        elif not 0 <= label <= LARGEST_CLASS_ID:
            raise InputError(f"{where}.category_id: expected {_CLASS_IDS}, got {label}")
        score = _number(entry.get("score", 1.0), f"{where}.score")
        objects.setdefault(key, []).append({"x0": x, "y0": y, "x1": x + w, "y1": y + h, "label": label,
                                            "score": score, "probs": None})
        origin.setdefault(key, f"{path}: image_id {entry['image_id']} (predictions[{k}].image_id)")
    return Predictions(objects, origin, normalised=False)


def read_yolo(folder: str) -> Predictions:
    """A folder of YOLO txt files (see the module docstring); keys are the files' relative paths without .txt."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{folder}: expected a folder of YOLO .txt files")
    objects: dict[str, list[dict[str, Any]]] = {}
    origin: dict[str, str] = {}
    for file in sorted(root.rglob("*.txt")):
        key = file.relative_to(root).with_suffix("").as_posix()
        rows = objects.setdefault(key, [])
        origin[key] = f"{file}: image id {key} (the file name)"
        try:
            text = file.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{file}: not UTF-8 text; expected YOLO lines 'class cx cy w h [conf]'") from None
        except OSError as exc:
            raise InputError(f"{file}: cannot read ({exc.strerror or exc})") from None
        for number, line in enumerate(text.splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            where = f"{file}: line {number}"
            if len(parts) not in (5, 6):
                raise InputError(f"{where}: expected 'class cx cy w h [conf]', got {line.strip()!r}")
            try:
                label = int(parts[0])
                cx, cy, w, h, *conf = (float(v) for v in parts[1:])
            except ValueError:
                raise InputError(f"{where}: expected 'class cx cy w h [conf]' numbers, got {line.strip()!r}") from None
            if not all(math.isfinite(v) for v in (cx, cy, w, h, *conf)):
                raise InputError(f"{where}: non-finite value")
            if not 0 <= label <= LARGEST_CLASS_ID:
                raise InputError(f"{where}: class {label}: expected {_CLASS_IDS}")
            rows.append({"cx": cx, "cy": cy, "w": w, "h": h, "label": label, "score": conf[0] if conf else 1.0})
    return Predictions(objects, origin, normalised=True)


def _json(path: str) -> Any:
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:80]})") from None


def pool_key(identifier: str, predictions: Predictions) -> str:
    """The prediction key of a pool id: the id itself for COCO, the id without its extension for YOLO."""
    if not predictions.normalised:
        return identifier
    stem, extension = os.path.splitext(identifier)
    return stem if extension else identifier


def image_size(row: dict[str, Any], payload: str | None, where: str) -> tuple[float, float]:
    """An image's (width, height): its ``width`` and ``height`` values, else its payload's header."""
    if row.get("width") is not None and row.get("height") is not None:
        return _number(row["width"], f"{where}: width"), _number(row["height"], f"{where}: height")
    if payload is None:
        raise InputError(f"{where}: the pool has no width and height columns and no image or uri payload to read "
                         "the image size from")
    data = row.get(payload)
    try:
        if payload == "uri" and data is not None:
            data = read_uri(str(data))
        with Image.open(io.BytesIO(data or b"")) as image:
            width, height = image.size
            # upright, as scoring decodes it: EXIF orientations 5 to 8 turn the image by 90 degrees
            if image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
            return float(width), float(height)
    except (UnidentifiedImageError, OSError, ValueError, TypeError):  # PayloadError is a ValueError
        return math.nan, math.nan  # an unreadable image (or uri): scoring rejects it with its reason


def pixel_objects(objects: list[dict[str, Any]], size: tuple[float, float], normalised: bool) -> list[dict[str, Any]]:
    """Objects as :data:`~alray.detection.boxes.DETECTION_STRUCT` values in pixels."""
    if not normalised:
        return objects
    width, height = size
    return [{"x0": (o["cx"] - o["w"] / 2) * width, "y0": (o["cy"] - o["h"] / 2) * height,
             "x1": (o["cx"] + o["w"] / 2) * width, "y1": (o["cy"] + o["h"] / 2) * height,
             "label": o["label"], "score": o["score"], "probs": None} for o in objects]


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote: the output, the pool rows, the images with objects and the objects."""

    path: str
    n_images: int
    n_with_objects: int
    n_objects: int


def _batches(pool_path: str, pool_format: str, storage_options: dict[str, str] | None) -> Iterator[pa.Table]:
    schema, files = open_table(pool_path, pool_format, storage_options=storage_options)
    if "id" not in schema.names:
        raise InputError(f"pool {pool_path}: missing required column 'id'")
    for batch in parquet_dataset(files, storage_options=storage_options).to_batches(batch_size=1024):
        yield pa.Table.from_batches([batch])


def import_predictions(predictions: Predictions, *, pool_path: str, pool_format: str, out: str,
                       storage_options: dict[str, str] | None = None) -> ImportResult:
    """Write the pool at ``pool_path`` with the ``detections`` of ``predictions`` (and the image size) to the
    parquet file ``out``; InputError names the file, image id and field of a prediction of no pool image."""
    target = Path(out)
    if target.suffix != ".parquet":
        target = target / "part-00000.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    writer: pq.ParquetWriter | None = None
    seen: set[str] = set()
    n_images = n_with = n_objects = 0
    try:
        for table in _batches(pool_path, pool_format, storage_options):
            payload = next((c for c in ("image", "uri") if c in table.column_names), None)
            rows = table.select([c for c in ("id", "width", "height", payload) if c and c in table.column_names])
            values, widths, heights = [], [], []
            for row in rows.to_pylist():
                identifier = str(row["id"])
                key = pool_key(identifier, predictions)
                size = image_size(row, payload, f"pool {pool_path}: id {identifier}")
                found = predictions.objects.get(key, [])
                if key in predictions.objects:
                    seen.add(key)
                values.append(pixel_objects(found, size, predictions.normalised))
                widths.append(size[0] if math.isfinite(size[0]) else None)
                heights.append(size[1] if math.isfinite(size[1]) else None)
                n_with += bool(found)
                n_objects += len(found)
            n_images += table.num_rows
            table = table.drop_columns([c for c in ("detections", "width", "height") if c in table.column_names])
            table = (table.append_column("detections", pa.array(values, DETECTIONS_TYPE))
                     .append_column("width", pa.array(widths, pa.float64()))
                     .append_column("height", pa.array(heights, pa.float64())))
            if writer is None:
                writer = pq.ParquetWriter(str(partial), table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()
            writer = None
        unknown = sorted(set(predictions.objects) - seen)
        if unknown:
            raise InputError(f"{predictions.origin[unknown[0]]}: not in the pool {pool_path}"
                             + (f" (and {len(unknown) - 1} more images)" if len(unknown) > 1 else ""))
        if n_images == 0:
            raise InputError(f"pool {pool_path}: the pool is empty")
        os.replace(partial, target)
    finally:
        if writer is not None:
            writer.close()
        if partial.exists():
            partial.unlink()
    return ImportResult(str(target), n_images, n_with, n_objects)
