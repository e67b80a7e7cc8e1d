"""The round_items table: a round's ids move selected -> sent -> labeled or expired, each move repeatable,
none lost to a concurrent writer of the same round."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from alray.lake import Lake
from alray.lake.rounds import (
    expire_items,
    mark_labeled,
    mark_sent,
    out_for_labeling,
    read_items,
    record_selection,
)
from tests.lake.conftest import in_threads

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


def _ranking(lake: Lake, run_id: str, picks: list[str], rest: list[str] = ()) -> None:  # type: ignore[assignment]
    ids = [*picks, *rest]
    lake.replace_run("ranking", pa.table({"run_id": [run_id] * len(ids), "id": ids,
                                          "rank": list(range(1, len(ids) + 1)),
                                          "selected": [i < len(picks) for i in range(len(ids))]}), run_id)


def _states(lake: Lake, run_id: str) -> dict[str, str]:
    return {row["id"]: row["state"] for row in read_items(lake).to_pylist() if row["run_id"] == run_id}


@pytest.fixture(params=["delta", "parquet", "iceberg"])
def lake(request, tmp_path):
    return Lake(str(tmp_path / "lake"), request.param,
                catalog=None if request.param != "iceberg" else _catalog(tmp_path))


def _catalog(tmp_path):
    from alray.lake import IcebergCatalog

    return IcebergCatalog(uri=f"sqlite:///{tmp_path / 'catalog.db'}")


def test_a_round_moves_through_its_states(lake):
    _ranking(lake, "r1", ["a", "b", "c"], ["d"])
    assert record_selection(lake, "r1", at=T0) == 3
    assert _states(lake, "r1") == {"a": "selected", "b": "selected", "c": "selected"}
    assert mark_sent(lake, "r1", ["a", "b", "c"], destination="label-studio:x", at=T0) == 3
    labels = [{"id": "a", "label": "cat", "round": "r1", "labeled_at": T0 + DAY},
              {"id": "b", "label": "dog", "round": None, "labeled_at": T0 + DAY}]  # round found by id
    assert mark_labeled(lake, labels) == 2
    assert out_for_labeling(lake, now=T0 + DAY, after=7 * DAY).to_pylist() == ["c"]
    assert out_for_labeling(lake, now=T0 + 8 * DAY, after=7 * DAY).to_pylist() == []  # c is past its time
    assert expire_items(lake, now=T0 + 8 * DAY, after=7 * DAY) == 1
    rows = {row["id"]: row for row in read_items(lake).to_pylist()}
    assert {i: r["state"] for i, r in rows.items()} == {"a": "labeled", "b": "labeled", "c": "expired"}
    assert rows["a"]["label"] == "cat" and rows["b"]["label"] == "dog"
    assert rows["c"]["expired_at"] == T0 + 7 * DAY  # when it expired, not when that was noticed
    assert rows["a"]["destination"] == "label-studio:x" and rows["a"]["rank"] == 1
    # a label that comes late still lands; an expired id sent again is out again
    assert mark_sent(lake, "r1", ["c"], destination="cvat:y", at=T0 + 9 * DAY) == 1
    assert out_for_labeling(lake, now=T0 + 9 * DAY, after=7 * DAY).to_pylist() == ["c"]


def test_every_move_repeated_changes_nothing(lake):
    _ranking(lake, "r1", ["a", "b"])
    record_selection(lake, "r1", at=T0)
    mark_sent(lake, "r1", ["a", "b"], destination="d", at=T0)
    labels = [{"id": "a", "label": "cat", "round": "r1", "labeled_at": T0 + DAY}]
    mark_labeled(lake, labels)
    before = read_items(lake)
    assert record_selection(lake, "r1", at=T0 + DAY) == 0
    assert mark_sent(lake, "r1", ["a", "b"], destination="elsewhere", at=T0 + DAY) == 0
    assert mark_labeled(lake, labels) == 0
    assert expire_items(lake, now=T0 + DAY, after=7 * DAY) == 0
    assert read_items(lake).equals(before)


def test_a_rerun_of_a_round_keeps_what_was_sent(lake):
    _ranking(lake, "r1", ["a", "b", "c"])
    record_selection(lake, "r1", at=T0)
    mark_sent(lake, "r1", ["a"], destination="d", at=T0)
    _ranking(lake, "r1", ["b", "x"])  # the rerun picks b and x
    record_selection(lake, "r1", at=T0 + DAY)
    assert _states(lake, "r1") == {"a": "sent", "b": "selected", "x": "selected"}


def test_nothing_is_written_when_nothing_changes(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    _ranking(lake, "r1", ["a"])
    record_selection(lake, "r1", at=T0)
    version = DeltaTable(lake.table("round_items")).version()
    record_selection(lake, "r1", at=T0)
    mark_labeled(lake, [{"id": "zz", "label": "x", "round": None, "labeled_at": T0}])  # in no round
    assert DeltaTable(lake.table("round_items")).version() == version


@pytest.mark.parametrize("fmt", ["delta", "iceberg"])
def test_concurrent_moves_of_one_round_lose_none(tmp_path, fmt):
    """Eight threads each send one id of the same round at once: a read-modify-write that lost its
    race is redone, so every id ends sent."""
    lake = Lake(str(tmp_path / "lake"), fmt, catalog=_catalog(tmp_path) if fmt == "iceberg" else None)
    ids = [f"id-{i}" for i in range(8)]
    _ranking(lake, "r1", ids)
    record_selection(lake, "r1", at=T0)
    in_threads(lambda item: mark_sent(lake, "r1", [item], destination=f"d-{item}", at=T0), [(i,) for i in ids])
    rows = read_items(lake).to_pylist()
    assert sorted(row["id"] for row in rows) == ids  # no row twice
    assert {row["id"]: (row["state"], row["destination"]) for row in rows} == {i: ("sent", f"d-{i}") for i in ids}


def test_a_label_settles_its_id_in_every_round_that_waits_for_it(lake):
    """An id picked by three rounds: sent by r1 and r3, still only selected by r2. Its label, which names r1,
    moves it to labeled in all three; r4, where it had expired, keeps that."""
    for run_id in ("r1", "r2", "r3", "r4"):
        _ranking(lake, run_id, ["a", f"only-{run_id}"])
        record_selection(lake, run_id, at=T0)
    for run_id in ("r1", "r3", "r4"):
        mark_sent(lake, run_id, ["a"], destination="d", at=T0)
    expire_items(lake, now=T0 + 8 * DAY, after=7 * DAY)
    for run_id in ("r1", "r3"):
        mark_sent(lake, run_id, ["a"], destination="d", at=T0 + 8 * DAY)  # sent again: sent, r4's stays expired
    assert mark_labeled(lake, [{"id": "a", "label": "cat", "round": "r1", "labeled_at": T0 + 9 * DAY}]) == 3
    rows = {(row["run_id"], row["id"]): row for row in read_items(lake).to_pylist()}
    assert {r: rows[(r, "a")]["state"] for r in ("r1", "r2", "r3", "r4")} == {
        "r1": "labeled", "r2": "labeled", "r3": "labeled", "r4": "expired"}
    assert rows[("r2", "a")]["label"] == "cat" and rows[("r2", "only-r2")]["state"] == "selected"
