"""A run's picks as labeling tools take them: rank, score, the model's prediction and scores, the payload."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from alray.config import Config, PoolConfig
from alray.errors import InputError
from alray.lake import Lake, filesystem_for
from alray.lake.selections import run_picks
from alray.payloads import PayloadError, read_uri
from alray.run_records import recorded_config, run_row
from alray.tables import DETECTION_SCORES, UNCERTAINTY_SCORES

# The scores a task carries: a classification run's, or a detection run's.
SCORES = (*UNCERTAINTY_SCORES, *(s for s in DETECTION_SCORES if s not in UNCERTAINTY_SCORES))


@dataclass
class Item:
    """One selected id: where it ranks, what the model said, and its payload (image bytes, a URI or a text)."""

    id: str
    rank: int
    score: float | None
    pred: int | None = None
    probs: list[float] | None = None
    scores: dict[str, float] = field(default_factory=dict)
    image: bytes | None = None
    uri: str | None = None
    text: str | None = None
    detections: list[dict[str, Any]] | None = None  # a detection run's boxes (the features' detections column)
    objects: list[dict[str, Any]] | None = None  # a crop-selection run's picked objects of the image: id, rank, score
    width: int | None = None   # the image's size in pixels, once read (detection exports need it)
    height: int | None = None

    def confidence(self) -> float | None:
        """The predicted class's probability."""
        if self.pred is None or not self.probs or self.pred >= len(self.probs):
            return None
        return float(self.probs[self.pred])

    def boxes(self, classes: list[str]) -> list[dict[str, Any]]:
        """The detector's boxes clipped to the image (``width``, ``height`` known): ``label`` (the class name),
        ``x0, y0, x1, y1`` (pixels), ``score``; boxes of a class without a name, or nothing left once clipped,
        are left out."""
        assert self.width and self.height, "the image's size is read first"
        boxes = []
        for box in self.detections or []:
            if box["label"] is None or not 0 <= box["label"] < len(classes):
                continue
            x0, y0 = max(0.0, float(box["x0"])), max(0.0, float(box["y0"]))
            x1, y1 = min(float(self.width), float(box["x1"])), min(float(self.height), float(box["y1"]))
            if x1 > x0 and y1 > y0:
                boxes.append({"label": classes[box["label"]], "x0": x0, "y0": y0, "x1": x1, "y1": y1,
                              "score": box.get("score")})
        return boxes

    def image_bytes(self, storage_options: dict[str, str] | None) -> bytes:
        """The image's encoded bytes: held, or read from its URI."""
        if self.image is not None:
            return self.image
        if self.uri is None:
            raise InputError(f"id {self.id!r}: the pool row has no image")
        try:
            return read_uri(self.uri, storage_options=storage_options)
        except PayloadError as exc:
            raise InputError(f"id {self.id!r}: {exc}") from None


@dataclass
class Selection:
    """A succeeded run's picks in rank order, the config it recorded and the class names of its model."""

    run_id: str
    items: list[Item]
    config: Config  # as the run recorded it (alray.run_records.recorded_config)
    classes: list[str]
    payload: str  # image, uri or text

    @property
    def pool(self) -> PoolConfig:
        """The pool the run read."""
        return self.config.pool


def run_config(lake: Lake, run_id: str, config: Config) -> Config:
    """The config a succeeded run recorded, with ``config``'s credentials and lake; InputError for a run that
    is not there or did not succeed."""
    run = run_row(lake, run_id)
    if run["status"] != "succeeded":
        raise InputError(f"run {run_id!r}: its status is {run['status']}; only a succeeded run's selection "
                         "can be exported")
    recorded, _note = recorded_config(run, config)  # an older record: the config given
    return recorded


def load_selection(lake: Lake, run_id: str, config: Config) -> Selection:
    """The picks of ``run_id`` with their features and payloads (read only for those ids)."""
    recorded = run_config(lake, run_id, config)
    picks = run_picks(lake, "ranking", run_id, ["id", "rank", "score"])
    if not picks:
        raise InputError(f"run {run_id!r}: selected nothing; there is nothing to export")
    ids = [row["id"] for row in picks]
    features = _feature_rows(lake, run_id, ids)
    objects = _picked_objects(lake, run_id, recorded)
    items = []
    for row in picks:
        found = features.get(row["id"], {})
        items.append(Item(id=row["id"], rank=int(row["rank"]), score=row["score"], pred=found.get("pred"),
                          probs=found.get("probs"),
                          scores={k: float(found[k]) for k in SCORES if found.get(k) is not None},
                          detections=found.get("detections"), objects=objects.get(row["id"])))
    payload = _attach_payloads(recorded.pool, items)
    width = max([len(item.probs) for item in items if item.probs]
                + [box["label"] + 1 for item in items for box in item.detections or [] if box["label"] is not None]
                + [0])
    named = config.labeled.classes or (recorded.detection.classes if recorded.task == "detection" else None) \
        or recorded.labeled.classes
    classes = list(named or [str(c) for c in range(width)])
    if width and len(classes) < width:
        raise InputError(f"labeled.classes: {len(classes)} names for a model of {width} classes")
    return Selection(run_id, items, recorded, classes, payload)


def _picked_objects(lake: Lake, run_id: str, recorded: Config) -> dict[str, list[dict[str, Any]]]:
    """A crop-selection run's (``detection.level: objects``) picked objects per image, from its object_ranking:
    the object's id (``IMAGE#K``, K its index in the image's detections), rank and score, in rank order."""
    if recorded.task != "detection" or recorded.detection.level != "objects":
        return {}
    objects: dict[str, list[dict[str, Any]]] = {}
    for row in run_picks(lake, "object_ranking", run_id, ["id", "image_id", "rank", "score"]):
        objects.setdefault(row["image_id"], []).append({"id": row["id"], "rank": int(row["rank"]),
                                                        "score": row["score"]})
    return objects


def _feature_rows(lake: Lake, run_id: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    files = lake.run_files("features", run_id)
    if not files:
        return {}
    filesystem = filesystem_for(files[0], lake.storage_options)[0]
    dataset = pads.dataset([filesystem_for(f, lake.storage_options)[1] for f in files], filesystem=filesystem,
                           format="parquet")
    wanted = [c for c in ("id", "pred", "probs", "detections", *SCORES) if c in dataset.schema.names]
    table = dataset.to_table(columns=wanted, filter=pc.field("id").isin(pa.array(ids, pa.string())))
    return {row["id"]: row for row in table.to_pylist()}


def _attach_payloads(pool: PoolConfig, items: list[Item]) -> str:
    """Fill each item's image, URI or text from the pool (the report's reader); return which of the three
    the pool holds."""
    from alray.stages.pool_source import PAYLOAD_COLUMNS, read_payloads

    payloads = read_payloads(pool, [item.id for item in items])
    if payloads.column not in PAYLOAD_COLUMNS:
        raise InputError(f"pool {pool.path}: its payload is {payloads.column!r}; a labeling tool needs an image, "
                         "a uri or a text column")
    for item in items:
        setattr(item, payloads.column, payloads.values.get(item.id))
    return payloads.column
