"""Delta tables keyed by run id: a rerun replaces its run, other runs stay, schemas merge."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from alray.errors import InputError
from alray.lake import check_pool_schema, read_ids, read_run, replace_run, table_files, table_schema


def _rows(run_id: str, ids: list[str], value: float) -> pa.Table:
    return pa.table({"run_id": [run_id] * len(ids), "id": ids, "score": [value] * len(ids)})


def test_rerun_replaces_only_its_own_rows(tmp_path):
    table = str(tmp_path / "ranking")
    replace_run(table, _rows("a", ["1", "2", "3"], 1.0), "a")
    replace_run(table, _rows("b", ["1", "2"], 2.0), "b")
    replace_run(table, _rows("a", ["9"], 3.0), "a")
    assert read_run(table, "a").column("id").to_pylist() == ["9"]
    assert sorted(read_run(table, "b").column("id").to_pylist()) == ["1", "2"]
    assert DeltaTable(table).to_pyarrow_dataset().count_rows() == 3


def test_new_columns_merge_into_the_schema(tmp_path):
    table = str(tmp_path / "features")
    replace_run(table, _rows("a", ["1"], 1.0), "a")
    replace_run(table, _rows("b", ["2"], 2.0).append_column("camera", pa.array(["c1"])), "b")
    merged = DeltaTable(table).to_pyarrow_dataset().to_table().sort_by("id")
    assert merged.column("camera").to_pylist() == [None, "c1"]


def test_streamed_input_is_written_whole(tmp_path):
    table = str(tmp_path / "t")
    data = _rows("s", [str(i) for i in range(10_000)], 0.5)
    replace_run(table, pa.RecordBatchReader.from_batches(data.schema, data.to_batches(max_chunksize=777)), "s")
    assert read_run(table, "s").num_rows == 10_000


def test_unsafe_run_id_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unsafe run id"):
        replace_run(str(tmp_path / "t"), _rows("x' OR '1'='1", ["1"], 1.0), "x' OR '1'='1")


def test_pool_schema_checks_name_the_table_and_column(tmp_path):
    with pytest.raises(InputError, match=r"pool p: missing required column 'id'"):
        check_pool_schema(pa.schema([("image", pa.binary())]), "p")
    with pytest.raises(InputError, match="missing a payload column"):
        check_pool_schema(pa.schema([("id", pa.string())]), "p")
    with pytest.raises(InputError, match="column 'id' must be a string"):
        check_pool_schema(pa.schema([("id", pa.int64()), ("image", pa.binary())]), "p")
    with pytest.raises(InputError, match="expected one payload column"):
        check_pool_schema(pa.schema([("id", pa.string()), ("image", pa.binary()), ("uri", pa.string())]), "p")
    with pytest.raises(InputError, match="'features' has an unexpected type"):
        check_pool_schema(pa.schema([("id", pa.string()), ("features", pa.string())]), "p")
    assert check_pool_schema(pa.schema([("id", pa.string()), ("features", pa.list_(pa.float32()))]), "p") == "features"


def test_parquet_and_delta_inputs(tmp_path):
    data = pa.table({"id": ["a", "b"], "image": pa.array([b"1", b"2"], pa.binary())})
    (tmp_path / "folder").mkdir()
    pq.write_table(data, tmp_path / "folder" / "part-0.parquet")
    assert table_schema(str(tmp_path / "folder"), "parquet").names == ["id", "image"]
    assert table_files(str(tmp_path / "folder" / "*.parquet"), "parquet") == [str(tmp_path / "folder/part-0.parquet")]
    assert read_ids(str(tmp_path / "folder"), "parquet", name="labeled.path").to_pylist() == ["a", "b"]
    from deltalake import write_deltalake

    write_deltalake(str(tmp_path / "delta"), data)
    write_deltalake(str(tmp_path / "delta"), data.slice(0, 1), mode="overwrite")
    assert len(table_files(str(tmp_path / "delta"), "delta", version=0)) == 1
    assert read_ids(str(tmp_path / "delta"), "delta", name="labeled.path").to_pylist() == ["a"]
    with pytest.raises(InputError, match="no Delta table there"):
        table_files(str(tmp_path / "folder"), "delta")
    with pytest.raises(InputError, match="no parquet file matches"):
        table_files(str(tmp_path / "none-*.parquet"), "parquet")
