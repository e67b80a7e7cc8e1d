"""Other engines read alray's tables: Polars reads the Delta ranking table and sees the same rows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from alray.lake import Lake, commit_files, parquet_replace_run, replace_run

pl = pytest.importorskip("polars")


def _column(field: pa.Field, n: int, rng: np.random.Generator, run_id: str) -> pa.Array:
    if field.name == "run_id":
        return pa.array([run_id] * n, field.type)
    if field.name == "id":
        return pa.array([f"{run_id}-{i:04d}" for i in range(n)], field.type)
    kind = field.type
    if pa.types.is_integer(kind):
        return pa.array(np.arange(1, n + 1), kind)
    if pa.types.is_floating(kind):
        return pa.array(rng.random(n), kind)
    if pa.types.is_boolean(kind):
        return pa.array(np.arange(n) < n // 3, kind)
    if pa.types.is_timestamp(kind):
        return pa.array([dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)] * n, kind)
    if pa.types.is_string(kind):
        return pa.array(["uncertainty_weighted_diversity(bald^1)"] * n, kind)
    return pa.nulls(n, kind)


def _ranking(run_id: str, n: int, seed: int) -> pa.Table:
    from alray.tables import RANKING_SCHEMA

    rng = np.random.default_rng(seed)
    return pa.Table.from_arrays([_column(f, n, rng, run_id) for f in RANKING_SCHEMA], schema=RANKING_SCHEMA)


def _same_rows(polars_frame, arrow: pa.Table) -> None:
    ours = arrow.sort_by([("run_id", "ascending"), ("id", "ascending")])
    theirs = polars_frame.sort(["run_id", "id"]).to_arrow()
    assert set(theirs.column_names) == set(ours.column_names)
    for name in ours.column_names:
        assert theirs.column(name).to_pylist() == ours.column(name).to_pylist(), name


def test_polars_reads_the_delta_ranking_table_committed_from_worker_files(tmp_path):
    table = str(tmp_path / "ranking")
    expected = []
    for run_id, n, seed in (("r1", 200, 0), ("r2", 150, 1), ("r1", 120, 2)):  # r1 rerun replaces r1
        rows = _ranking(run_id, n, seed)
        staged = tmp_path / f"staging-{run_id}-{seed}"
        staged.mkdir()
        pq.write_table(rows.drop_columns(["run_id"]).slice(0, n // 2), staged / "part-0.parquet")
        pq.write_table(rows.drop_columns(["run_id"]).slice(n // 2), staged / "part-1.parquet")
        commit_files(table, [str(p) for p in sorted(staged.iterdir())], run_id)
        expected = [e for e in expected if e.column("run_id")[0].as_py() != run_id] + [rows]
    want = pa.concat_tables(expected)
    frame = pl.read_delta(table)
    assert frame.height == 270
    _same_rows(frame, want)
    assert DeltaTable(table).protocol().min_reader_version == 1  # readable by every Delta reader
    # a predicate on the partition column, pushed down by Polars
    assert pl.scan_delta(table).filter(pl.col("run_id") == "r2").collect().height == 150


def test_polars_reads_tables_written_by_replace_run_and_plain_parquet(tmp_path):
    rows = pa.concat_tables([_ranking("a", 30, 0), _ranking("b", 20, 1)])
    for run_id in ("a", "b"):
        part = rows.filter(pa.compute.equal(rows.column("run_id"), run_id))
        replace_run(str(tmp_path / "delta"), part, run_id)
        parquet_replace_run(str(tmp_path / "plain"), part, run_id)
    _same_rows(pl.read_delta(str(tmp_path / "delta")), rows)
    plain = pl.read_parquet(f"{tmp_path}/plain/**/*.parquet", hive_partitioning=True)
    assert plain.height == 50 and sorted(plain["run_id"].unique().to_list()) == ["a", "b"]


def test_polars_reads_the_iceberg_ranking_table(tmp_path, monkeypatch):
    pytest.importorskip("pyiceberg")
    monkeypatch.setenv("POLARS_ICEBERG_PLANNER", "pyiceberg")
    from alray.lake import IcebergCatalog

    lake = Lake(str(tmp_path / "lake"), "iceberg", catalog=IcebergCatalog(uri=f"sqlite:///{tmp_path}/c.db"))
    lake.replace_run("ranking", _ranking("a", 40, 0), "a")
    from pyiceberg.catalog.sql import SqlCatalog

    iceberg = SqlCatalog("default", uri=f"sqlite:///{tmp_path}/c.db").load_table("alray.ranking")
    assert pl.scan_iceberg(iceberg).collect().height == 40
