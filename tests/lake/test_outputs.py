"""The output lake: the same run-partitioned tables, whatever the format, through the backend it names."""

from __future__ import annotations

from typing import get_args

import pytest

from alray.config import OutputConfig
from alray.errors import InputError
from alray.lake import BACKENDS, IcebergCatalog, Lake, parquet_dataset
from tests.lake.conftest import run_rows, staged_file

FORMATS = ("delta", "parquet", "iceberg")


def _lake(tmp_path, fmt: str) -> Lake:
    catalog = IcebergCatalog(uri=f"sqlite:///{tmp_path}/catalog.db") if fmt == "iceberg" else None
    return Lake(str(tmp_path / "lake"), fmt, catalog=catalog)


def _rows_of(lake: Lake, run_id: str) -> list[dict]:
    return sorted(lake.read_run("ranking", run_id).select(["run_id", "id", "score"]).to_pylist(),
                  key=lambda row: row["id"])


def _worker_file(lake: Lake, folder, run_id: str, ids: list[str], value: float) -> str:
    """A parquet file as the stages write it: with the run_id column only where the format keeps it."""
    extra = {"run_id": [run_id] * len(ids)} if lake.keeps_run_id_in_files() else {}
    return staged_file(folder, ids, value, **extra)


def test_every_output_format_of_the_config_has_a_backend():
    assert set(BACKENDS) == set(FORMATS) == set(get_args(OutputConfig.model_fields["format"].annotation))


def test_an_unknown_format_is_refused_when_the_lake_is_made(tmp_path):
    with pytest.raises(ValueError, match="format: expected one of"):
        Lake(str(tmp_path / "lake"), "orc")  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reads_the_picks_of_a_run_without_the_rest(tmp_path, fmt):
    """``only`` keeps the rows where a boolean column is true, of one run or of every run: how the picks
    of a 10M-row ranking are read without holding its 10M rows."""
    import pyarrow as pa

    from alray.lake import previously_selected_ids
    from alray.lake.selections import run_picks

    lake = _lake(tmp_path, fmt)
    assert lake.read_run("ranking", "a", only="selected").num_rows == 0  # no table yet
    for run_id, ids, picks in (("a", ["1", "2", "3", "4"], [False, True, False, True]),
                               ("b", ["1", "5"], [True, False])):
        lake.replace_run("ranking", pa.table({"run_id": [run_id] * len(ids), "id": ids,
                                              "rank": [4 - i for i in range(len(ids))], "selected": picks}), run_id)
    picked = lake.read_run("ranking", "a", columns=["id"], only="selected")
    assert picked.schema.names == ["id"] and sorted(picked.column("id").to_pylist()) == ["2", "4"]
    assert sorted(lake.read_table("ranking", columns=["run_id", "id"], only="selected").to_pylist(),
                  key=lambda r: (r["run_id"], r["id"])) == [
        {"run_id": "a", "id": "2"}, {"run_id": "a", "id": "4"}, {"run_id": "b", "id": "1"}]
    assert run_picks(lake, "ranking", "a", ["id", "rank"]) == [{"id": "4", "rank": 1}, {"id": "2", "rank": 3}]
    for run_id in ("a", "b"):
        lake.replace_run("runs", pa.table({"run_id": [run_id], "status": ["succeeded"]}), run_id, partition=False)
    assert sorted(previously_selected_ids(lake, "b").to_pylist()) == ["2", "4"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_replaces_commits_reads_and_deletes_runs_alike(tmp_path, fmt):
    lake = _lake(tmp_path, fmt)
    assert lake.read_run("ranking", "a").num_rows == 0  # no table yet
    with pytest.raises(InputError, match="not found"):
        lake.read_table("ranking")
    lake.delete_run("ranking", "a")  # nothing to delete, not even the table

    lake.replace_run("ranking", run_rows("a", ["1", "2", "3"], 1.0), "a")
    lake.replace_run("ranking", run_rows("b", ["1", "2"], 2.0), "b")
    # a rerun replaces its run whole (from a stream too) and leaves the other run alone
    lake.replace_run("ranking", run_rows("a", ["9"], 3.0).to_reader(), "a")
    assert _rows_of(lake, "a") == [{"run_id": "a", "id": "9", "score": 3.0}]
    assert [row["id"] for row in _rows_of(lake, "b")] == ["1", "2"]
    assert lake.read_table("ranking").num_rows == 3

    # files that workers wrote become run b's rows in one commit, twice over without duplicates
    for attempt in range(2):
        files = [_worker_file(lake, tmp_path / f"staging-{attempt}", "b", ["4", "5"], 4.0),
                 _worker_file(lake, tmp_path / f"staging-{attempt}", "b", ["6"], 4.0)]
        assert lake.commit_files("ranking", files, "b") == 3
        assert [row["id"] for row in _rows_of(lake, "b")] == ["4", "5", "6"]
        assert lake.read_table("ranking").num_rows == 4
    assert {row["run_id"] for row in _rows_of(lake, "b")} == {"b"}

    # run_files hands the run's files to engines without a reader for the format
    files = lake.run_files("ranking", "b")
    assert files and all("run_id=b" in f for f in files)
    read = parquet_dataset(files).to_table()
    assert sorted(read.column("id").to_pylist()) == ["4", "5", "6"]
    assert ("run_id" in read.schema.names) == lake.keeps_run_id_in_files()

    lake.delete_run("ranking", "a")
    assert lake.read_run("ranking", "a").num_rows == 0
    assert [row["id"] for row in _rows_of(lake, "b")] == ["4", "5", "6"]
    lake.delete_run("ranking", "a")  # deleting again changes nothing
    assert lake.read_table("ranking").num_rows == 3


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_refuses_an_unsafe_run_id(tmp_path, fmt):
    lake = _lake(tmp_path, fmt)
    with pytest.raises(ValueError, match="unsafe run id"):
        lake.replace_run("ranking", run_rows("x' OR '1'='1", ["1"], 1.0), "x' OR '1'='1")
