"""Iceberg output tables through pyiceberg and an embedded sqlite SQL catalog."""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alray.errors import InputError
from alray.lake import IcebergCatalog, Lake, previously_selected_ids, refuse_delete_files

pytest.importorskip("pyiceberg")


def test_tables_with_delete_files_are_refused():
    # pyiceberg writes copy-on-write only, so merge-on-read delete files come from other engines
    tasks = [SimpleNamespace(delete_files=set()), SimpleNamespace(delete_files={"pos-delete.parquet"})]
    with pytest.raises(InputError, match=r"pool raw\.p: Iceberg tables with delete files"):
        refuse_delete_files(tasks, "pool raw.p")
    refuse_delete_files(tasks[:1], "pool raw.p")


def _lake(tmp_path) -> Lake:
    root = str(tmp_path / "lake")
    return Lake(root, "iceberg", catalog=IcebergCatalog(uri=f"sqlite:///{tmp_path}/lake.db"))


def test_iceberg_output_replaces_runs_merges_columns_and_commits_files(tmp_path):
    lake = _lake(tmp_path)
    rows = pa.table({"run_id": ["a", "a"], "id": ["1", "2"], "selected": [True, False]})
    lake.replace_run("ranking", rows, "a")
    lake.replace_run("ranking", pa.table({"run_id": ["b"], "id": ["3"], "selected": [True]}), "b")
    lake.replace_run("ranking", pa.table({"run_id": ["a"], "id": ["9"], "selected": [True],
                                          "camera": ["c1"]}).to_reader(), "a")
    assert lake.read_run("ranking", "a").to_pylist() == [{"run_id": "a", "id": "9", "selected": True,
                                                          "camera": "c1"}]
    assert lake.read_run("ranking", "b").column("camera").to_pylist() == [None]
    # worker files (with their run_id column: Iceberg keeps partition values in the files) in one commit
    staging = tmp_path / "staging"
    staging.mkdir()
    pq.write_table(pa.table({"run_id": ["b", "b"], "id": ["4", "5"], "selected": [False, True]}),
                   staging / "p.parquet")
    assert lake.commit_files("ranking", [str(staging / "p.parquet")], "b") == 2
    assert sorted(lake.read_run("ranking", "b").column("id").to_pylist()) == ["4", "5"]
    assert all("run_id=b" in f for f in lake.run_files("ranking", "b"))
    assert lake.read_table("ranking").num_rows == 3
    assert previously_selected_ids(lake, "c").to_pylist() in (["9", "5"], ["5", "9"])


def test_iceberg_table_is_an_ordinary_iceberg_table(tmp_path):
    from pyiceberg.catalog.sql import SqlCatalog

    lake = _lake(tmp_path)
    lake.replace_run("runs", pa.table({"run_id": ["r1"], "status": ["succeeded"]}), "r1")
    catalog = SqlCatalog("default", uri=f"sqlite:///{tmp_path}/lake.db")
    table = catalog.load_table("alray.runs")
    assert table.location().endswith("lake/runs")
    assert [f.name for f in table.spec().fields] == ["run_id"]
    assert table.scan().to_arrow().column("status").to_pylist() == ["succeeded"]
