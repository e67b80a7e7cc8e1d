"""Input tables: pool schema checks, parquet paths and Delta versions resolved to files."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alray.errors import InputError
from alray.lake import check_pool_schema, open_table, read_ids, table_files


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
    schema, files = open_table(str(tmp_path / "folder"), "parquet", folders=False)
    assert schema.names == ["id", "image"] and files == [str(tmp_path / "folder/part-0.parquet")]
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
