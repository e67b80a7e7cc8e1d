"""Iceberg through pyiceberg and an embedded sqlite SQL catalog: pools read, output tables written."""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alray.config import PoolConfig
from alray.errors import InputError
from alray.lake import IcebergCatalog, Lake, previously_selected_ids, refuse_delete_files
from alray.stages.pool_source import open_pool

pytest.importorskip("pyiceberg")


def _catalog(tmp_path):
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("pools", uri=f"sqlite:///{tmp_path}/pools.db", warehouse=f"file://{tmp_path}/warehouse")
    catalog.create_namespace_if_not_exists("raw")
    return catalog


def _pool_config(tmp_path, name: str, **extra) -> PoolConfig:
    catalog = {"uri": f"sqlite:///{tmp_path}/pools.db", "name": "pools"}
    return PoolConfig(path=name, format="iceberg", catalog=catalog, **extra)


def test_iceberg_pool_resolves_to_its_snapshot_files(tmp_path):
    catalog = _catalog(tmp_path)
    data = pa.table({"id": ["a", "b", "c"], "features": [[1.0], [2.0], [3.0]], "camera": ["x", "y", "x"]})
    table = catalog.create_table("raw.pool", schema=data.schema)
    table.append(data.slice(0, 2))
    first = table.current_snapshot().snapshot_id
    table.append(data.slice(2))
    latest = open_pool(_pool_config(tmp_path, "raw.pool"))
    assert latest.payload == "features" and len(latest.files) == 2
    # what Ray's read_parquet gets (read_pool hands it exactly these files)
    assert sorted(pq.read_table(latest.files[0]).column("id").to_pylist()
                  + pq.read_table(latest.files[1]).column("id").to_pylist()) == ["a", "b", "c"]
    pinned = open_pool(_pool_config(tmp_path, "raw.pool", version=first))
    assert pq.read_table(pinned.files[0]).column("id").to_pylist() == ["a", "b"]


def test_iceberg_pool_errors_name_the_table_and_column(tmp_path):
    catalog = _catalog(tmp_path)
    catalog.create_table("raw.noid", schema=pa.schema([("key", pa.string()), ("uri", pa.string())]))
    with pytest.raises(InputError, match=r"pool raw.noid: missing required column 'id'"):
        open_pool(_pool_config(tmp_path, "raw.noid"))
    with pytest.raises(InputError, match=r"raw.nothere: no Iceberg table"):
        open_pool(_pool_config(tmp_path, "raw.nothere"))
    renamed = catalog.create_table("raw.renamed", schema=pa.schema([("id", pa.string()), ("path", pa.string())]))
    renamed.append(pa.table({"id": ["a"], "path": ["a.png"]}))
    with renamed.update_schema() as update:
        update.rename_column("path", "uri")
    with pytest.raises(InputError, match=r"column 'uri' was renamed from 'path'"):
        open_pool(_pool_config(tmp_path, "raw.renamed"))
    with pytest.raises(ValueError, match=r"needs catalog\.uri"):
        PoolConfig(path="raw.pool", format="iceberg")


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
