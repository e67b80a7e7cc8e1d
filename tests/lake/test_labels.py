"""The labels table: an import adds only rows it lacks, in one commit; the latest label of an id wins."""

from __future__ import annotations

import datetime as dt

from deltalake import DeltaTable

from alray.lake import Lake
from alray.lake.labels import add_labels, current_labels, read_labels
from tests.lake.conftest import in_threads

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


def _row(item: str, label: str, annotation: int, hours: int = 0) -> dict:
    return {"id": item, "label": label, "source": f"label-studio:project/1/annotation/{annotation}",
            "round": "r1", "labeled_at": T0 + dt.timedelta(hours=hours)}


def test_the_same_rows_imported_twice_are_written_once(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    rows = [_row("a", "cat", 1), _row("b", "dog", 2), _row("b", "dog", 2)]  # a row repeated in one export
    first = add_labels(lake, rows, now=T0)
    assert first.n_new == 2 and first.import_id is not None and first.import_id.startswith("import-")
    version = DeltaTable(lake.table("labels")).version()
    again = add_labels(lake, rows, now=T0 + dt.timedelta(days=1))
    assert (again.import_id, again.n_new, again.n_known) == (None, 0, 3)
    assert DeltaTable(lake.table("labels")).version() == version  # no commit at all
    assert read_labels(lake).num_rows == 2


def test_a_changed_annotation_is_a_new_row_and_the_latest_wins(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    add_labels(lake, [_row("a", "cat", 1), _row("b", "dog", 2)], now=T0)
    add_labels(lake, [_row("a", "cat", 1), _row("b", "bird", 2, hours=3)], now=T0)  # b's annotation edited
    assert read_labels(lake).num_rows == 3
    assert {row["id"]: row["label"] for row in current_labels(read_labels(lake))} == {"a": "cat", "b": "bird"}


def test_concurrent_imports_of_one_export_keep_each_row_once(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    rows = [_row(f"id-{i}", "cat", i) for i in range(20)]
    others = [_row(f"other-{i}", "dog", 100 + i) for i in range(5)]
    in_threads(lambda batch: add_labels(lake, batch, now=T0), [(rows,)] * 4 + [(others,)])
    ids = read_labels(lake).column("id").to_pylist()
    assert sorted(ids) == sorted(row["id"] for row in rows + others)  # every row, none twice
