"""Delta tables keyed by run id: a rerun replaces its run, other runs stay, schemas merge."""

from __future__ import annotations

import os
import threading

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from alray.errors import InputError
from alray.lake import (
    Lake,
    check_pool_schema,
    commit_files,
    open_table,
    parquet_commit_files,
    parquet_read_run,
    parquet_replace_run,
    previously_selected_ids,
    read_ids,
    read_run,
    replace_run,
    reshape_parquet,
    run_files,
    table_files,
)


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


# --- committing files written elsewhere ------------------------------------------------------

def _staged(folder, ids: list[str], value: float, **extra) -> str:
    """A parquet file as a worker writes it: table rows without the run_id partition column."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{len(list(folder.iterdir()))}.parquet"
    pq.write_table(pa.table({"id": ids, "score": [value] * len(ids), **extra}), path)
    return str(path)


def test_commit_files_replaces_a_run_in_one_commit_without_reading_rows(tmp_path):
    table = str(tmp_path / "ranking")
    assert commit_files(table, [_staged(tmp_path / "s1", ["1", "2"], 1.0), _staged(tmp_path / "s1", ["3"], 1.0)],
                        "a") == 3
    commit_files(table, [_staged(tmp_path / "s2", ["4"], 2.0)], "b")
    version = DeltaTable(table).version()
    before = read_run(table, "b")
    # A rerun replaces run a whole, in exactly one new table version, and leaves run b alone.
    assert commit_files(table, [_staged(tmp_path / "s3", ["9"], 3.0)], "a") == 1
    assert DeltaTable(table).version() == version + 1
    assert read_run(table, "a").column("id").to_pylist() == ["9"]
    assert read_run(table, "b").equals(before)
    # the staged files moved into the table; run_files hands them to engines without a Delta reader
    assert not list((tmp_path / "s3").iterdir())
    assert all("run_id=a" in f for f in run_files(table, "a"))
    history = DeltaTable(table).history(1)[0]
    assert history["operation"] == "WRITE" and history["alray.run_id"] == "a"


def test_rerun_with_identical_files_gives_identical_rows(tmp_path):
    table = str(tmp_path / "features")
    for attempt in range(2):
        commit_files(table, [_staged(tmp_path / f"s{attempt}", ["1", "2", "3"], 0.5)], "a")
    rows = DeltaTable(table).to_pyarrow_dataset().to_table().sort_by("id")
    assert rows.num_rows == 3
    assert rows.column("id").to_pylist() == ["1", "2", "3"]


def test_a_retried_commit_that_already_landed_is_a_no_op(tmp_path):
    table = str(tmp_path / "t")
    commit_files(table, [_staged(tmp_path / "s1", ["1"], 1.0)], "a", app_id="job-7", txn_version=42)
    version = DeltaTable(table).version()
    # the same transaction again (a driver retrying after a lost answer) changes nothing
    commit_files(table, [_staged(tmp_path / "s2", ["1"], 1.0)], "a", app_id="job-7", txn_version=42)
    assert DeltaTable(table).version() == version
    assert DeltaTable(table).transaction_version("job-7") == 42
    assert read_run(table, "a").num_rows == 1


def test_empty_commit_clears_the_run_and_keeps_the_schema(tmp_path):
    table = str(tmp_path / "rejects")
    schema = pa.schema([("id", pa.string()), ("reason", pa.string())])
    commit_files(table, [], "a", schema=schema)
    assert DeltaTable(table).schema().to_arrow().names == ["run_id", "id", "reason"]
    (tmp_path / "s").mkdir()
    staged = tmp_path / "s" / "r.parquet"
    pq.write_table(pa.table({"id": ["x"], "reason": ["corrupt"]}), staged)
    commit_files(table, [str(staged)], "b", schema=schema)
    commit_files(table, [], "b", schema=schema)
    assert read_run(table, "b").num_rows == 0


def test_commit_files_merges_new_columns_and_refuses_changed_types(tmp_path):
    table = str(tmp_path / "features")
    commit_files(table, [_staged(tmp_path / "s1", ["1"], 1.0)], "a")
    commit_files(table, [_staged(tmp_path / "s2", ["2"], 2.0, camera=["c1"])], "b")
    merged = DeltaTable(table).to_pyarrow_dataset().to_table().sort_by("id")
    assert merged.column("camera").to_pylist() == [None, "c1"]
    bad = tmp_path / "s3"
    bad.mkdir()
    pq.write_table(pa.table({"id": ["3"], "score": ["high"]}), bad / "p.parquet")
    with pytest.raises(InputError, match=r"column 'score' is double in the table but string"):
        commit_files(table, [str(bad / "p.parquet")], "c")


def test_staged_files_with_a_run_id_column_are_refused(tmp_path):
    (tmp_path / "s").mkdir()
    pq.write_table(pa.table({"run_id": ["a"], "id": ["1"]}), tmp_path / "s" / "p.parquet")
    with pytest.raises(InputError, match="holds a run_id column"):
        commit_files(str(tmp_path / "t"), [str(tmp_path / "s" / "p.parquet")], "a")


@pytest.mark.parametrize("how", ["commit_files", "replace_run"])
def test_two_runs_writing_at_the_same_time_both_land(tmp_path, how):
    table = str(tmp_path / "ranking")
    commit_files(table, [_staged(tmp_path / "seed", ["0"], 0.0)], "seed")
    errors: list[BaseException] = []

    def write(run_id: str) -> None:
        try:
            for attempt in range(4):
                ids = [f"{run_id}-{i}" for i in range(50 + attempt)]
                if how == "commit_files":
                    commit_files(table, [_staged(tmp_path / f"{run_id}-{attempt}", ids, 1.0)], run_id)
                else:
                    replace_run(table, _rows(run_id, ids, 1.0), run_id)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(run_id,)) for run_id in ("r1", "r2", "r3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for run_id in ("r1", "r2", "r3"):
        assert read_run(table, run_id).num_rows == 53  # the last of each run's four writes, once
    assert read_run(table, "seed").num_rows == 1


def test_plain_parquet_tables_replace_a_run_folder(tmp_path):
    table = str(tmp_path / "ranking")
    parquet_replace_run(table, _rows("a", ["1", "2"], 1.0), "a")
    parquet_commit_files(table, [_staged(tmp_path / "s", ["3"], 2.0)], "b")
    parquet_replace_run(table, _rows("a", ["9"], 3.0), "a")
    assert parquet_read_run(table, "a").column("id").to_pylist() == ["9"]
    assert parquet_read_run(table, "b").column("id").to_pylist() == ["3"]
    assert sorted(os.listdir(table)) == ["run_id=a", "run_id=b"]
    # any hive-aware reader sees the partition column
    assert pq.read_table(table).num_rows == 2


def test_previously_selected_ids_come_from_other_succeeded_runs(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    assert previously_selected_ids(lake, "r3").to_pylist() == []
    for run_id, ids, status in (("r1", ["a", "b"], "succeeded"), ("r2", ["b", "c"], "succeeded"),
                                ("r0", ["z"], "failed"), ("r3", ["d"], "running")):
        ranking = pa.table({"run_id": [run_id] * (len(ids) + 1), "id": [*ids, f"not-picked-{run_id}"],
                            "selected": [True] * len(ids) + [False]})
        lake.replace_run("ranking", ranking, run_id)
        lake.replace_run("runs", pa.table({"run_id": [run_id], "status": [status]}), run_id, partition=False)
    assert sorted(previously_selected_ids(lake, "r3").to_pylist()) == ["a", "b", "c"]
    # a rerun of r2 does not exclude its own earlier picks
    assert sorted(previously_selected_ids(lake, "r2").to_pylist()) == ["a", "b"]


def test_reshape_parquet_filters_renames_and_adds_constants(tmp_path):
    source = tmp_path / "scored.parquet"
    pq.write_table(pa.table({"run_id": ["r"] * 3, "id": ["1", "2", "3"], "why": [None, "corrupt", None]}), source)
    out = reshape_parquet(str(source), str(tmp_path / "out"), filter=pads.field("why").is_valid(),
                          columns={"id": "id", "stage": pa.scalar("score"), "reason": "why"})
    assert out is not None
    assert pq.read_table(out).to_pylist() == [{"id": "2", "stage": "score", "reason": "corrupt"}]
    assert reshape_parquet(str(source), str(tmp_path / "none"), filter=pads.field("id") == "x",
                           columns={"id": "id"}) is None


# --- pool listings -----------------------------------------------------------------------------

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
