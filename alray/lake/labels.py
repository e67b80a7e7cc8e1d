"""The labels table: labels imported from labeling tools, each import one commit, no row ever twice.

A label row is known by its id, source (the annotation it came from), label and time. An import
writes only the rows the table does not hold yet, as one partition named by a digest of those
rows (``import-<digest>``): importing the same export again writes nothing, and two processes
importing the same rows at once write the same partition, so it holds them once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from alray.lake.outputs import Lake
from alray.lake.small_tables import read_whole
from alray.tables import LABELS_SCHEMA

# What tells one label row from another; the partition and import time are the table's own.
LABEL_KEY = ("id", "label", "source", "round", "labeled_at")


@dataclass(frozen=True)
class LabelsWrite:
    """What an import added: its partition (None when it added nothing) and row counts."""

    import_id: str | None
    n_new: int
    n_known: int


def read_labels(lake: Lake) -> pa.Table:
    """Every row of the labels table (LABELS_SCHEMA); empty when the table does not exist yet."""
    return read_whole(lake, "labels", LABELS_SCHEMA)


def current_labels(rows: pa.Table) -> list[dict[str, Any]]:
    """One row per id: its latest label (by ``labeled_at``, ties by source then label), sorted by id."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows.to_pylist():
        held = latest.get(row["id"])
        if held is None or _order(row) > _order(held):
            latest[row["id"]] = row
    return [latest[i] for i in sorted(latest)]


def _order(row: dict[str, Any]) -> tuple[Any, ...]:
    stamp = row["labeled_at"] or dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return stamp, row["source"] or "", row["label"] or ""


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    stamp = row["labeled_at"]
    return tuple(stamp.isoformat() if k == "labeled_at" and stamp is not None else row[k] for k in LABEL_KEY)


def add_labels(lake: Lake, rows: list[dict[str, Any]], *, now: dt.datetime) -> LabelsWrite:
    """Append the label ``rows`` (``id``, ``label``, ``source``, ``round``, ``labeled_at``) that the table
    lacks, in one commit; a row seen twice in ``rows`` counts once."""
    known = {_key(row) for row in read_labels(lake).to_pylist()}
    fresh: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = _key(row)
        if key not in known:
            fresh.setdefault(key, row)
    if not fresh:
        return LabelsWrite(None, 0, len(rows))
    ordered = [fresh[k] for k in sorted(fresh, key=lambda k: json.dumps(k, default=str))]
    digest = hashlib.sha256(json.dumps(sorted(fresh, key=lambda k: json.dumps(k, default=str)),
                                       default=str).encode()).hexdigest()[:16]
    import_id = f"import-{digest}"
    table = pa.Table.from_pylist([{**{k: row.get(k) for k in LABEL_KEY}, "run_id": import_id, "imported_at": now}
                                  for row in ordered], schema=LABELS_SCHEMA)
    lake.replace_run("labels", table, import_id)
    return LabelsWrite(import_id, len(ordered), len(rows) - len(ordered))
