"""A detection run's objects: the per-image column the scorer emits, the objects table it becomes,
and the image ranking derived from the ranking of the objects.

Each scored image carries its objects in the staged column :data:`OBJECTS_COLUMN` (a list of
structs); committing the scoring splits it off into the ``objects`` table, one row per object
(:data:`alray.tables.OBJECTS_SCHEMA`), whose ``id`` is ``IMAGE_ID#INDEX``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from alray.lake.filesystems import filesystem_for
from alray.lake.streams import write_part_file
from alray.tables import OBJECTS_SCHEMA, RANKING_SCHEMA, without_run_id

#: The staged per-image column of objects (never a column of the features table).
OBJECTS_COLUMN = "_objects"
#: What joins an image id and an object's index into the object's id.
OBJECT_ID_SEPARATOR = "#"
#: The per-object fields of :data:`OBJECTS_COLUMN`: the objects table's columns but the ids.
OBJECT_STRUCT = pa.struct([f for f in OBJECTS_SCHEMA if f.name not in ("run_id", "id", "image_id")])
OBJECTS_TYPE = pa.list_(OBJECT_STRUCT)
#: The filtered-out reason of an image without objects in an object-level selection.
NO_OBJECTS_REASON = "no objects"


def object_ids(image_ids: list[str], indices: list[int]) -> list[str]:
    """The objects' ids, ``IMAGE_ID#INDEX``."""
    return [f"{i}{OBJECT_ID_SEPARATOR}{k}" for i, k in zip(image_ids, indices, strict=True)]


def explode_objects(table: pa.Table, *, run_id: str | None) -> pa.Table:
    """One row per object of the images of ``table`` (``id`` and :data:`OBJECTS_COLUMN`), in
    :data:`~alray.tables.OBJECTS_SCHEMA` (without ``run_id`` when ``run_id`` is None)."""
    column = table.column(OBJECTS_COLUMN).combine_chunks()
    parents = pc.list_parent_indices(column)
    flat = pc.list_flatten(column)
    image_ids = pc.take(table.column("id"), parents)
    indices = flat.field("object_index") if len(flat) else pa.array([], pa.int32())
    columns: dict[str, pa.Array] = {
        "id": pa.array(object_ids([str(i) for i in image_ids.to_pylist()], indices.to_pylist()), pa.string()),
        "image_id": image_ids.combine_chunks() if isinstance(image_ids, pa.ChunkedArray) else image_ids,
    }
    for field in OBJECT_STRUCT:
        columns[field.name] = flat.field(field.name) if len(flat) else pa.array([], field.type)
    schema = without_run_id(OBJECTS_SCHEMA, run_id is not None)
    if run_id is not None:
        columns["run_id"] = pa.array([run_id] * len(flat), pa.string())
    return pa.Table.from_arrays([columns[f.name].cast(f.type) for f in schema], schema=schema)


def explode_staged_file(source: str, folder: str, *, keep_run_id: bool,
                        storage_options: dict[str, str] | None = None) -> str | None:
    """Write the objects of the good rows of one staged scoring file to a new parquet file in ``folder``;
    its path, or None when the file holds no object. Runs where the file is, batch by batch."""
    filesystem, inner = filesystem_for(source, storage_options)
    parquet = pq.ParquetFile(inner, filesystem=filesystem)
    names = ["id", OBJECTS_COLUMN, *(["run_id"] if keep_run_id else [])]

    def objects() -> Iterator[pa.Table]:
        for batch in parquet.iter_batches(columns=names, batch_size=4096):
            table = pa.Table.from_batches([batch])
            table = table.filter(pc.is_valid(table.column(OBJECTS_COLUMN)))
            run_id = str(table.column("run_id")[0]) if keep_run_id and table.num_rows else None
            yield explode_objects(table, run_id=run_id)

    return write_part_file(objects(), folder, storage_options=storage_options)


def image_ranking(object_ranking: pa.Table) -> pa.Table:
    """The ranking of the images derived from the ranking of their objects (``id``, ``image_id``, ``rank``,
    ``selected``, ``score``, ...): the ranking table's columns but the constants (``run_id``,
    ``strategy``, ``created_at``).

    An image takes the row of its best-ranked object (its ``score``, ``weight``, ``diversity``
    and ``parts``); it is selected when any of its objects is; the images are ranked by their
    best object's rank, so the selected images come first and ``score`` stays non-increasing.
    """
    ranks = object_ranking.column("rank").to_numpy()
    image_ids = object_ranking.column("image_id").to_pylist()
    picked = object_ranking.column("selected").to_pylist()
    first: dict[str, int] = {}
    selected: dict[str, bool] = {}
    for row in np.argsort(ranks, kind="stable").tolist():
        image = image_ids[row]
        first.setdefault(image, row)
        selected[image] = selected.get(image, False) or bool(picked[row])
    rows = list(first.values())  # in order of the best rank
    best = object_ranking.take(pa.array(rows, pa.int64()))
    names = [f.name for f in RANKING_SCHEMA if f.name not in ("run_id", "strategy", "created_at")]
    columns = {name: best.column(name) for name in names if name not in ("id", "rank", "selected")}
    columns["id"] = best.column("image_id")
    columns["rank"] = pa.chunked_array([pa.array(np.arange(1, len(rows) + 1), pa.int64())])
    columns["selected"] = pa.chunked_array([pa.array([selected[image_ids[r]] for r in rows], pa.bool_())])
    return pa.table({name: columns[name] for name in names})
