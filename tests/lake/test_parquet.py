"""Plain parquet tables: a run is one hive folder, swapped in whole."""

from __future__ import annotations

import os

import pyarrow.parquet as pq

from alray.lake import parquet_commit_files, parquet_read_run, parquet_replace_run
from tests.lake.conftest import run_rows, staged_file


def test_plain_parquet_tables_replace_a_run_folder(tmp_path):
    table = str(tmp_path / "ranking")
    parquet_replace_run(table, run_rows("a", ["1", "2"], 1.0), "a")
    parquet_commit_files(table, [staged_file(tmp_path / "s", ["3"], 2.0)], "b")
    parquet_replace_run(table, run_rows("a", ["9"], 3.0), "a")
    assert parquet_read_run(table, "a").column("id").to_pylist() == ["9"]
    assert parquet_read_run(table, "b").column("id").to_pylist() == ["3"]
    assert sorted(os.listdir(table)) == ["run_id=a", "run_id=b"]
    # any hive-aware reader sees the partition column
    assert pq.read_table(table).num_rows == 2
