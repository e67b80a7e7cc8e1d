"""A run's picks as labeling tools take them: rank, score, the model's prediction and scores, the payload."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from alray.config import Config, PoolConfig, config_from_dict
from alray.errors import AlrayError, InputError
from alray.lake import Lake, filesystem_for
from alray.lake.filesystems import join_path
from alray.payloads import PayloadError, read_uri
from alray.tables import UNCERTAINTY_SCORES


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

    def confidence(self) -> float | None:
        """The predicted class's probability."""
        if self.pred is None or not self.probs or self.pred >= len(self.probs):
            return None
        return float(self.probs[self.pred])

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
    """A succeeded run's picks in rank order, its pool and the class names of its model."""

    run_id: str
    items: list[Item]
    pool: PoolConfig
    classes: list[str]
    payload: str  # image, uri or text


def run_pool(lake: Lake, run_id: str, config: Config) -> PoolConfig:
    """The pool the run read (as its runs row recorded it), with ``config``'s credentials (never recorded)."""
    try:
        runs = lake.read_table("runs", columns=["run_id", "status", "config"])
    except InputError:
        raise InputError(f"runs table {lake.table('runs')}: not found; run alray run first") from None
    rows = runs.filter(pc.equal(runs.column("run_id"), run_id)).to_pylist()
    if not rows:
        raise InputError(f"run {run_id!r}: not in the runs table under {lake.root}")
    if rows[0]["status"] != "succeeded":
        raise InputError(f"run {run_id!r}: its status is {rows[0]['status']}; only a succeeded run's selection "
                         "can be exported")
    try:
        recorded = config_from_dict(json.loads(rows[0]["config"])).pool
    except (AlrayError, TypeError, ValueError):  # a config an older version recorded: the one given
        return config.pool
    return recorded.model_copy(update={"storage_options": config.pool.storage_options})


def load_selection(lake: Lake, run_id: str, config: Config) -> Selection:
    """The picks of ``run_id`` with their features and payloads (read only for those ids)."""
    pool = run_pool(lake, run_id, config)
    ranking = lake.read_run("ranking", run_id, columns=["id", "rank", "selected", "score"])
    picks = sorted((row for row in ranking.to_pylist() if row["selected"]), key=lambda row: row["rank"])
    if not picks:
        raise InputError(f"run {run_id!r}: selected nothing; there is nothing to export")
    ids = [row["id"] for row in picks]
    features = _feature_rows(lake, run_id, ids)
    items = []
    for row in picks:
        found = features.get(row["id"], {})
        items.append(Item(id=row["id"], rank=int(row["rank"]), score=row["score"], pred=found.get("pred"),
                          probs=found.get("probs"),
                          scores={k: float(found[k]) for k in UNCERTAINTY_SCORES if found.get(k) is not None}))
    payload = _attach_payloads(pool, items)
    width = max((len(item.probs) for item in items if item.probs), default=0)
    classes = list(config.labeled.classes or [str(c) for c in range(width)])
    if width and len(classes) < width:
        raise InputError(f"labeled.classes: {len(classes)} names for a model of {width} classes")
    return Selection(run_id, items, pool, classes, payload)


def _feature_rows(lake: Lake, run_id: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    files = lake.run_files("features", run_id)
    if not files:
        return {}
    filesystem = filesystem_for(files[0], lake.storage_options)[0]
    dataset = pads.dataset([filesystem_for(f, lake.storage_options)[1] for f in files], filesystem=filesystem,
                           format="parquet")
    wanted = [c for c in ("id", "pred", "probs", *UNCERTAINTY_SCORES) if c in dataset.schema.names]
    table = dataset.to_table(columns=wanted, filter=pc.field("id").isin(pa.array(ids, pa.string())))
    return {row["id"]: row for row in table.to_pylist()}


def _attach_payloads(pool: PoolConfig, items: list[Item]) -> str:
    """Fill each item's image, URI or text from the pool; return which of the three the pool holds."""
    if pool.format == "images":
        for item in items:
            item.uri = join_path(pool.path, item.id)
        return "uri"
    from alray.stages.pool_source import open_pool, read_rows

    source = open_pool(pool)
    if source.payload not in ("image", "uri", "text"):
        raise InputError(f"pool {pool.path}: its payload is {source.payload!r}; a labeling tool needs an image, "
                         "a uri or a text column")
    rows = read_rows(source, [item.id for item in items], ["id", source.payload]).to_pylist()
    found = {row["id"]: row[source.payload] for row in rows}
    for item in items:
        setattr(item, source.payload, found.get(item.id))
    return source.payload
