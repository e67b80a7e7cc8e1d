"""Object stores for real: an S3-compatible server (moto) on loopback, the same code paths as disk."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from alray.config import PoolConfig
from alray.lake import (
    Lake,
    commit_files,
    previously_selected_ids,
    read_run,
    replace_run,
    run_files,
    s3_filesystem,
)
from alray.report import print_run, print_runs
from alray.stages.pool_source import open_pool


def _pool() -> pa.Table:
    return pa.table({"id": [f"s{i}" for i in range(6)], "features": [[float(i), 1.0] for i in range(6)],
                     "camera": ["a", "b"] * 3})


def test_parquet_delta_and_csv_pools_on_s3_resolve_to_files_and_a_filesystem(s3):
    fs = s3_filesystem(s3)
    pq.write_table(_pool().slice(0, 3), "lake/pools/p/part-0.parquet", filesystem=fs)
    pq.write_table(_pool().slice(3), "lake/pools/p/part-1.parquet", filesystem=fs)
    source = open_pool(PoolConfig(path="s3://lake/pools/p", format="parquet", storage_options=s3))
    assert source.payload == "features"
    assert source.files == ["lake/pools/p/part-0.parquet", "lake/pools/p/part-1.parquet"]
    # what Ray's read_parquet gets: these paths and this file system
    assert pads.dataset(source.files, filesystem=source.filesystem).count_rows() == 6

    write_deltalake("s3://lake/pools/d", _pool(), storage_options=s3)
    delta = open_pool(PoolConfig(path="s3://lake/pools/d", format="delta", storage_options=s3))
    assert pads.dataset(delta.files, filesystem=delta.filesystem).count_rows() == 6

    with fs.open_output_stream("lake/pools/list.csv") as out:
        out.write(b"id,uri,camera\n1,s3://lake/img/1.png,a\n2,s3://lake/img/2.png,b\n")
    listing = open_pool(PoolConfig(path="s3://lake/pools/list.csv", format="csv", storage_options=s3))
    assert listing.payload == "uri" and listing.schema.field("id").type == pa.string()
    assert listing.files == ["lake/pools/list.csv"]


def test_delta_replace_commit_and_read_on_s3(s3):
    table = "s3://lake/out/ranking"
    replace_run(table, pa.table({"run_id": ["a"] * 2, "id": ["1", "2"], "score": [1.0, 2.0]}), "a",
                storage_options=s3)
    replace_run(table, pa.table({"run_id": ["b"], "id": ["3"], "score": [3.0]}), "b", storage_options=s3)
    replace_run(table, pa.table({"run_id": ["a"], "id": ["9"], "score": [9.0]}), "a", storage_options=s3)
    assert read_run(table, "a", storage_options=s3).column("id").to_pylist() == ["9"]

    # a worker's files on the object store become run b in one commit: a server-side move
    fs = s3_filesystem(s3)
    pq.write_table(pa.table({"id": ["4", "5"], "score": [4.0, 5.0]}), "lake/_staging/b/part-0.parquet", filesystem=fs)
    assert commit_files(table, ["s3://lake/_staging/b/part-0.parquet"], "b", storage_options=s3) == 2
    assert sorted(read_run(table, "b", storage_options=s3).column("id").to_pylist()) == ["4", "5"]
    assert fs.get_file_info("lake/_staging/b/part-0.parquet").type == pa.fs.FileType.NotFound
    files = run_files(table, "b", storage_options=s3)
    assert len(files) == 1 and files[0].startswith("s3://lake/out/ranking/run_id=b/")
    assert DeltaTable(table, storage_options=s3).to_pyarrow_dataset().count_rows() == 3


def test_runs_table_and_exclusions_on_s3(s3, capsys):
    lake = Lake("s3://lake/lake2", storage_options=s3)
    for run_id, status in (("r1", "succeeded"), ("r2", "running")):
        lake.replace_run("ranking", pa.table({"run_id": [run_id] * 2, "id": [f"{run_id}-x", f"{run_id}-y"],
                                              "selected": [True, False]}), run_id)
        lake.replace_run("runs", _runs_row(run_id, status), run_id, partition=False)
    assert previously_selected_ids(lake, "r2").to_pylist() == ["r1-x"]
    print_runs(lake)
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == ["RUN_ID", "r2", "r1"]  # a header, then newest first
    print_run(lake, "r1")
    assert '"status": "succeeded"' in capsys.readouterr().out


def _runs_row(run_id: str, status: str) -> pa.Table:
    import datetime as dt

    from alray.tables import RUNS_SCHEMA

    started = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=int(run_id[1:]))
    row = {name: None for name in RUNS_SCHEMA.names}
    row.update(run_id=run_id, status=status, started_at=started, n_selected=1)
    return pa.Table.from_pylist([row], schema=RUNS_SCHEMA)


@pytest.mark.slow
def test_the_whole_pipeline_with_pool_and_lake_on_s3(s3, ray_session, spark, demo_files, tmp_path):
    """Score on Ray and select on Spark with the pool, the labeled set and the lake all on S3."""
    from alray.pipeline import run_pipeline
    from alray.progress import Progress
    from tests.conftest import demo_config

    fs = s3_filesystem(s3)
    pool = pq.read_table(demo_files.pool)
    pq.write_table(pool.slice(0, 200), "lake/e2e/pool/part-0.parquet", filesystem=fs)
    pq.write_table(pool.slice(200), "lake/e2e/pool/part-1.parquet", filesystem=fs)
    pq.write_table(pq.read_table(demo_files.labeled), "lake/e2e/labeled/part-0.parquet", filesystem=fs)
    config = demo_config(demo_files, tmp_path)
    config.run.run_id = "on-s3"
    config.pool.path, config.pool.storage_options = "s3://lake/e2e/pool", s3
    config.labeled.path = "s3://lake/e2e/labeled"  # read with the pool's storage options
    config.output.path, config.output.storage_options = "s3://lake/e2e/lake", s3
    summary = run_pipeline(config, progress=Progress(quiet=True))
    assert summary.status == "succeeded"
    lake = Lake("s3://lake/e2e/lake", storage_options=s3)
    ranking = lake.read_run("ranking", "on-s3", columns=["id", "rank", "selected"])
    rejects = lake.read_run("rejects", "on-s3", columns=["id"])
    counts = summary.counts
    assert ranking.num_rows == counts["candidates"] and counts["selected"] == 30
    assert sorted(ranking.column("rank").to_pylist()) == list(range(1, ranking.num_rows + 1))
    assert ranking.num_rows + rejects.num_rows + counts["filtered"] == pool.num_rows
    labeled = pq.read_table(demo_files.labeled).column("id")
    assert summary.filtered_by_reason["labeled"] == pc.sum(pc.is_in(pool.column("id"), labeled)).as_py()
    assert not fs.get_file_info(pa.fs.FileSelector("lake/e2e/lake/_staging", recursive=True,
                                                   allow_not_found=True))


@pytest.mark.slow
def test_incremental_scoring_with_pool_and_lake_on_s3(s3, ray_session, demo_files, tmp_path):
    """A second run on S3 scores only the new rows and copies the rest (server-side, or rewritten)."""
    from alray.pipeline import run_pipeline
    from alray.progress import Progress
    from tests.conftest import demo_config

    fs = s3_filesystem(s3)
    pool = pq.read_table(demo_files.pool)
    pq.write_table(pool.slice(0, 60), "lake/incr/pool/part-0.parquet", filesystem=fs)
    pq.write_table(pool.slice(60, 40), "lake/incr/pool/part-1.parquet", filesystem=fs)
    config = demo_config(demo_files, tmp_path)
    config.labeled.path = None
    config.pool.path, config.pool.storage_options = "s3://lake/incr/pool", s3
    config.output.path, config.output.storage_options = "s3://lake/incr/lake", s3
    config.run.run_id = "first"
    run_pipeline(config, progress=Progress(quiet=True), stages=("score",))
    pq.write_table(pool.slice(65, 35), "lake/incr/pool/part-1.parquet", filesystem=fs)  # five rows deleted
    pq.write_table(pool.slice(100, 10), "lake/incr/pool/part-2.parquet", filesystem=fs)
    config.run.run_id = "second"
    second = run_pipeline(config, progress=Progress(quiet=True), stages=("score",))
    assert (second.counts["scored"], second.counts["reused"], second.reused_from) == (10, 95, "first")
    lake = Lake("s3://lake/incr/lake", storage_options=s3)
    before = lake.read_run("features", "first").drop_columns(["run_id"]).sort_by("id")
    after = lake.read_run("features", "second").drop_columns(["run_id"]).sort_by("id")
    kept = before.filter(pc.invert(pc.is_in(before.column("id"), pool.slice(60, 5).column("id"))))
    assert after.filter(pc.is_in(after.column("id"), kept.column("id"))).equals(kept)
    assert after.num_rows + lake.read_run("rejects", "second").num_rows == 105
    assert lake.read_run("pool_rows", "second").num_rows == 105
    assert not fs.get_file_info(pa.fs.FileSelector("lake/incr/lake/_staging", recursive=True,
                                                   allow_not_found=True))


def test_similarity_query_table_on_s3(s3):
    from alray.config import StrategyConfig
    from alray.selection.batches import read_query_embeddings

    pq.write_table(pa.table({"embedding": [[1.0, 2.0], [3.0, 4.0]]}), "lake/queries/part-0.parquet",
                   filesystem=s3_filesystem(s3))
    entry = StrategyConfig(input="embeddings", strategy="similarity",
                           query={"path": "s3://lake/queries", "storage_options": s3})
    found = read_query_embeddings(entry.query, features=lambda ids: pa.table({"embedding": []}))
    assert found.tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.slow
def test_a_prefix_of_image_files_on_s3_is_a_pool(s3, ray_session, spark, demo_files, tmp_path):
    """format images on an S3 prefix: listed with the pool's storage options, each file read from S3."""
    from alray.pipeline import run_pipeline
    from alray.progress import Progress
    from tests.conftest import demo_config

    fs = s3_filesystem(s3)
    pool = pq.read_table(demo_files.pool, columns=["id", "image"]).slice(0, 60).to_pylist()
    names = []
    for i, row in enumerate(pool):
        name = f"shard-{i % 2}/{row['id']}.png"
        with fs.open_output_stream(f"lake/photos/{name}") as out:
            out.write(row["image"])
        names.append(name)
    with fs.open_output_stream("lake/photos/shard-0/broken.png") as out:
        out.write(b"\x89PNG not an image")
    config = demo_config(demo_files, tmp_path / "lake", n_samples=10, filters=[])
    config.run.run_id = "photos-on-s3"
    config.labeled.path = None
    config.pool.path, config.pool.format, config.pool.storage_options = "s3://lake/photos", "images", s3
    summary = run_pipeline(config, progress=Progress(quiet=True))
    assert summary.status == "succeeded", summary.error
    lake = Lake(str(tmp_path / "lake"))
    ranking = lake.read_run("ranking", "photos-on-s3", columns=["id"]).column("id").to_pylist()
    rejects = lake.read_run("rejects", "photos-on-s3").to_pylist()
    assert [r["id"] for r in rejects] == ["shard-0/broken.png"]
    assert sorted(ranking) == sorted(names) and summary.counts["selected"] == 10


def test_the_engine_log_of_a_run_on_s3_is_copied_to_the_lake(s3):
    import contextlib
    import io
    import os

    from alray.engine_log import capture, log_run_to
    from alray.lake import filesystem_for

    path = "s3://lake/lake-logs/logs/r-s3.log"
    with contextlib.redirect_stderr(io.StringIO()), capture():
        assert log_run_to(path, s3) == path
        os.write(2, b"26/12/05 WARN SparkContext: a JVM line on the way to s3\n")
    filesystem, inner = filesystem_for(path, s3)
    with filesystem.open_input_stream(inner) as stream:
        text = stream.read().decode()
    assert text.startswith("==== alray: ") and "a JVM line on the way to s3" in text
