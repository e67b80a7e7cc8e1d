"""The labels table: an import adds only rows it lacks, in one commit; the latest label of an id wins."""

from __future__ import annotations

import datetime as dt

import pytest
from deltalake import DeltaTable

from alray.lake import IcebergCatalog, Lake
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


@pytest.mark.parametrize("fmt", ["delta", "iceberg"])
def test_overlapping_exports_imported_at_once_keep_each_row_once(tmp_path, fmt):
    """A project's export at 10, 12, 14 and 16 labels, each imported by two threads at once: the rows they
    share are new to each import's snapshot, but only one import may write them."""
    catalog = IcebergCatalog(uri=f"sqlite:///{tmp_path / 'catalog.db'}") if fmt == "iceberg" else None
    lake = Lake(str(tmp_path / "lake"), fmt, catalog=catalog)
    rows = [_row(f"id-{i:02d}", "cat", i) for i in range(16)]
    batches = [rows[:n] for n in (10, 12, 14, 16)] * 2
    in_threads(lambda batch: add_labels(lake, batch, now=T0), [(batch,) for batch in batches])
    ids = read_labels(lake).column("id").to_pylist()
    assert sorted(ids) == [row["id"] for row in rows]  # every row, none twice
