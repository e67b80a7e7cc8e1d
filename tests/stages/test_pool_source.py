"""Pools opened and checked before Ray starts: listings, parquet and Delta pools, Iceberg snapshots."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alray.config import PoolConfig
from alray.errors import InputError
from alray.stages.pool_source import open_pool


def _listings(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "a.csv").write_text("id,uri,camera\n001,img/1.png,c1\n002,img/2.png,c2\n")
    (tmp_path / "csv" / "b.csv").write_text("id,uri,camera\n003,img/3.png,c1\n")
    (tmp_path / "pool.jsonl").write_text('{"id": "j1", "uri": "img/1.png", "exposure": 0.5}\n'
                                         '{"id": "j2", "uri": "img/2.png", "exposure": 0.7}\n')
    return tmp_path / "csv", tmp_path / "pool.jsonl"


def test_listings_are_checked_up_front_naming_the_file_and_column(tmp_path):
    from alray.config import PoolConfig
    from alray.stages.pool_source import open_pool

    csv_folder, jsonl = _listings(tmp_path)
    source = open_pool(PoolConfig(path=str(csv_folder), format="csv"))
    assert source.payload == "uri" and source.schema.field("id").type == pa.string()  # "001" stays "001"
    assert [os.path.basename(f) for f in source.files] == ["a.csv", "b.csv"]
    assert open_pool(PoolConfig(path=str(jsonl), format="jsonl")).schema.names == ["id", "uri", "exposure"]
    (tmp_path / "noid.csv").write_text("key,uri\n1,a.png\n")
    with pytest.raises(InputError, match=r"noid\.csv: missing required column 'id'"):
        open_pool(PoolConfig(path=str(tmp_path / "noid.csv"), format="csv"))
    (tmp_path / "nopayload.jsonl").write_text('{"id": "1", "path": "a.png"}\n')
    with pytest.raises(InputError, match=r"nopayload\.jsonl: missing a payload column"):
        open_pool(PoolConfig(path=str(tmp_path / "nopayload.jsonl"), format="jsonl"))
    (tmp_path / "numbers.jsonl").write_text('{"id": 1, "uri": "a.png"}\n')
    with pytest.raises(InputError, match=r"numbers\.jsonl: column 'id' must be a string"):
        open_pool(PoolConfig(path=str(tmp_path / "numbers.jsonl"), format="jsonl"))
    with pytest.raises(InputError, match=r"listing not found"):
        open_pool(PoolConfig(path=str(tmp_path / "none.csv"), format="csv"))


def test_listings_are_read_by_ray_with_string_ids(tmp_path, ray_session):
    from alray.config import PoolConfig
    from alray.stages.pool_source import open_pool, read_pool

    csv_folder, jsonl = _listings(tmp_path)
    rows = read_pool(open_pool(PoolConfig(path=str(csv_folder), format="csv")), rows_per_block=2).take_all()
    assert sorted((r["id"], r["camera"]) for r in rows) == [("001", "c1"), ("002", "c2"), ("003", "c1")]
    rows = read_pool(open_pool(PoolConfig(path=str(jsonl), format="jsonl")), rows_per_block=2).take_all()
    assert sorted((r["id"], r["exposure"]) for r in rows) == [("j1", 0.5), ("j2", 0.7)]


def _blocks(dataset) -> list[pa.Table]:
    return [pa.Table.from_pandas(b, preserve_index=False) if not isinstance(b, pa.Table) else b
            for b in dataset.iter_batches(batch_size=None, batch_format="pyarrow")]


def test_parquet_pool_is_read_in_blocks_of_the_batch_size_not_whole_files(tmp_path, ray_session):
    from alray.config import PoolConfig
    from alray.stages.pool_source import open_pool, read_pool

    pool = tmp_path / "pool"
    pool.mkdir()
    for part, start in enumerate((0, 700)):
        ids = [f"r{i:04d}" for i in range(start, start + 700)]
        pq.write_table(pa.table({"id": ids, "features": [[float(i), 1.0] for i in range(700)]}),
                       pool / f"part-{part}.parquet", row_group_size=500)
    blocks = _blocks(read_pool(open_pool(PoolConfig(path=str(pool))), rows_per_block=64))
    assert max(b.num_rows for b in blocks) == 64 and len(blocks) >= 2 * 700 // 64
    ids = [i for b in blocks for i in b.column("id").to_pylist()]
    assert sorted(ids) == [f"r{i:04d}" for i in range(1400)]  # each row once


def test_delta_pool_keeps_partition_values_and_fills_columns_added_later(tmp_path, ray_session):
    from deltalake import write_deltalake

    from alray.config import PoolConfig
    from alray.stages.pool_source import open_pool, read_pool

    table = str(tmp_path / "pool")
    write_deltalake(table, pa.table({"id": ["a", "b", "c"], "features": [[1.0], [2.0], [3.0]],
                                     "camera": ["cam 1", "cam-2", "cam-2"]}), partition_by=["camera"])
    write_deltalake(table, pa.table({"id": ["d"], "features": [[4.0]], "camera": ["cam 1"], "exposure": [0.5]}),
                    mode="append", schema_mode="merge")
    source = open_pool(PoolConfig(path=table, format="delta"))
    rows = pa.concat_tables(_blocks(read_pool(source, rows_per_block=2))).to_pylist()
    by_id = {r["id"]: (r["camera"], r["exposure"]) for r in rows}
    assert by_id == {"a": ("cam 1", None), "b": ("cam-2", None), "c": ("cam-2", None), "d": ("cam 1", 0.5)}


def test_blocks_hold_about_a_mib_of_small_rows_and_one_batch_of_large_ones(tmp_path):
    from alray.config import PoolConfig
    from alray.stages.pool_source import TARGET_BLOCK_BYTES, block_rows_for, open_pool

    small, large = tmp_path / "small.parquet", tmp_path / "large.parquet"
    pq.write_table(pa.table({"id": [f"{i}" for i in range(20_000)], "features": [[0.5] * 16] * 20_000}), small)
    pq.write_table(pa.table({"id": ["a", "b"], "image": [b"x" * 100_000, b"y" * 100_000]}), large)
    rows = block_rows_for(open_pool(PoolConfig(path=str(small))), 256)
    assert rows % 256 == 0 and rows > 256
    row_bytes = pq.ParquetFile(small).metadata.row_group(0).total_byte_size / 20_000
    assert TARGET_BLOCK_BYTES / 2 <= rows * row_bytes <= TARGET_BLOCK_BYTES
    assert block_rows_for(open_pool(PoolConfig(path=str(large))), 256) == 256


# --- Iceberg pools ---------------------------------------------------------------------------

def _catalog(tmp_path):
    pytest.importorskip("pyiceberg")
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


def test_a_folder_of_images_is_listed_with_relative_ids_and_file_metadata(tmp_path):
    from alray.image_samples import encode, image_of_mode

    root = tmp_path / "bucket"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    (root / "a" / "one.jpg").write_bytes(encode(image_of_mode("RGB", width=16, height=12), "JPEG"))
    (root / "b" / "two.PNG").write_bytes(encode(image_of_mode("L", width=9, height=9), "PNG"))
    (root / "b" / "deep" / "three.webp").write_bytes(encode(image_of_mode("RGB", width=8, height=8), "WEBP"))
    (root / "b" / "notes.txt").write_text("not an image")
    pq.write_table(pa.table({"id": ["a/one.jpg", "b/deep/three.webp"], "camera": ["c1", "c2"]}),
                   str(tmp_path / "meta.parquet"))
    source = open_pool(PoolConfig(path=str(root), format="images", metadata_path=str(tmp_path / "meta.parquet")),
                       staging=str(tmp_path / "staging"))
    assert source.payload == "uri" and source.schema.names == ["id", "uri", "file_size", "modified_at", "camera"]
    rows = pa.concat_tables([pq.read_table(f) for f in source.files]).to_pylist()
    assert [r["id"] for r in rows] == ["a/one.jpg", "b/deep/three.webp", "b/two.PNG"]
    assert [r["camera"] for r in rows] == ["c1", "c2", None]
    assert rows[0]["uri"] == str(root / "a" / "one.jpg")
    assert rows[0]["file_size"] == (root / "a" / "one.jpg").stat().st_size and rows[0]["modified_at"] is not None
    only_b = open_pool(PoolConfig(path=str(root / "b" / "*.PNG"), format="images"))
    assert pq.read_table(only_b.files[0]).column("id").to_pylist() == ["two.PNG"]
    with pytest.raises(InputError, match=r"pool .*a: no image files \(\.jpg"):
        (root / "a" / "one.jpg").rename(root / "a" / "one.bin")
        open_pool(PoolConfig(path=str(root / "a"), format="images"))
    with pytest.raises(InputError, match=r"pool .*nowhere: folder not found"):
        open_pool(PoolConfig(path=str(tmp_path / "nowhere"), format="images"))
