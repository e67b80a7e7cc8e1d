"""The labels table: labels imported from labeling tools, each import one commit, no row ever twice.

A label row is known by its id, source (the annotation it came from), label and time. An import
writes only the rows the table does not hold yet, as one partition named by a digest of those
rows (``import-<digest>``), and commits it only if nobody wrote the table since it read it:
importing the same export again writes nothing, and two imports at once (of the same export, or
of a project's export at 10 labels and at 12) write each row once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from alray.lake.outputs import Lake
from alray.lake.small_tables import read_whole, shaped
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
    lacks, in one commit; a row seen twice in ``rows`` counts once.

    What is new is worked out from the whole table, and the commit lands only if nobody wrote the
    table since that read (:meth:`Lake.guarded_add`); otherwise it is worked out again, so two
    imports of overlapping exports at once write each shared row once.
    """
    written = LabelsWrite(None, 0, len(rows))

    def add(table: pa.Table) -> tuple[str, pa.Table] | None:
        nonlocal written
        known = {_key(row) for row in shaped(table, LABELS_SCHEMA).to_pylist()}
        fresh: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows:
            key = _key(row)
            if key not in known:
                fresh.setdefault(key, row)
        if not fresh:
            written = LabelsWrite(None, 0, len(rows))
            return None
        order = sorted(fresh, key=lambda k: json.dumps(k, default=str))
        import_id = f"import-{hashlib.sha256(json.dumps(order, default=str).encode()).hexdigest()[:16]}"
        new = pa.Table.from_pylist([{**{k: fresh[key].get(k) for k in LABEL_KEY}, "run_id": import_id,
                                     "imported_at": now} for key in order], schema=LABELS_SCHEMA)
        written = LabelsWrite(import_id, len(order), len(rows) - len(order))
        return import_id, new

    lake.guarded_add("labels", add, schema=LABELS_SCHEMA)
    return written
