"""Incremental scoring on real Ray and real Delta tables: only new or changed rows are scored, the
others carried over, and the features are those a full rescore gives."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

from alray.config import Config, config_from_dict
from alray.demo import png_bytes
from alray.errors import InputError
from alray.lake import Lake
from alray.pipeline import RunSummary, run_pipeline
from alray.progress import Progress
from alray.report import print_summary
from alray.tables import RUNS_SCHEMA


@pytest.fixture(scope="module")
def digits(demo_files):
    """The demo subset's rows (300 digits, blank, blurred and corrupt images) and its checkpoint."""
    return pq.read_table(demo_files.pool), demo_files.checkpoint


def _config(pool: Path, lake: Path, checkpoint: str, *, fmt: str = "parquet", **score) -> Config:
    return config_from_dict({
        "run": {"seed": 0},
        "pool": {"path": str(pool), "format": fmt},
        "model": {"checkpoint": checkpoint},
        "score": {"mc_samples": 5, "batch_size": 64, "num_actors": 1, "max_bad_fraction": 0.2, **score},
        "selection": {"n_samples": 5},
        "output": {"path": str(lake)},
    })


def _score(config: Config, run_id: str, **run) -> tuple[RunSummary, str]:
    config = config.model_copy(update={"run": config.run.model_copy(update={"run_id": run_id, **run})})
    stream = io.StringIO()
    summary = run_pipeline(config, progress=Progress(stream), stages=("score",))
    return summary, stream.getvalue()


def _rows(lake: Path, name: str, run_id: str) -> pa.Table:
    table = Lake(str(lake)).read_run(name, run_id)
    return table.drop_columns(["run_id"]).sort_by("id")


def _runs_row(lake: Path, run_id: str) -> dict:
    return Lake(str(lake)).read_run("runs", run_id).to_pylist()[0]


def _same_bits(a: pa.Table, b: pa.Table) -> None:
    """Equal tables, floats compared by their bits (NaN included)."""
    assert a.column_names == b.column_names
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        left, right = a.column(name).combine_chunks(), b.column(name).combine_chunks()
        assert left.type == right.type, name
        if pa.types.is_list(left.type) and pa.types.is_floating(left.type.value_type):
            assert pc.list_value_length(left).equals(pc.list_value_length(right)), name
            left, right = left.flatten(), right.flatten()
        if pa.types.is_floating(left.type):
            assert left.is_valid().equals(right.is_valid()), name
            bits = {4: np.uint32, 8: np.uint64}[left.type.bit_width // 8]
            lhs = pc.fill_null(left, 0).to_numpy().view(bits)
            rhs = pc.fill_null(right, 0).to_numpy().view(bits)
            assert np.array_equal(lhs, rhs), name
        else:
            assert left.equals(right), name


def _scramble_payload(path: Path, column: str) -> None:
    """Overwrite the bytes of ``column`` in a parquet file, keeping its size and time: any read of it fails."""
    status = path.stat()
    metadata = pq.read_metadata(path)
    index = metadata.schema.to_arrow_schema().get_field_index(column)
    with open(path, "r+b") as handle:
        for group in range(metadata.num_row_groups):
            chunk = metadata.row_group(group).column(index)
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
            handle.seek(start)
            handle.write(b"\xff" * chunk.total_compressed_size)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


def test_a_grown_pool_scores_only_the_new_rows_and_matches_a_full_rescore(ray_session, digits, tmp_path):
    table, checkpoint = digits
    n_old = round(table.num_rows / 1.05)
    pool, clean = tmp_path / "pool", tmp_path / "clean"
    for folder in (pool, clean):
        folder.mkdir()
        pq.write_table(table.slice(0, n_old // 2), folder / "part-0.parquet")
        pq.write_table(table.slice(n_old // 2, n_old - n_old // 2), folder / "part-1.parquet")
    first, _ = _score(_config(pool, tmp_path / "lake", checkpoint), "first")
    assert first.counts["scored"] == n_old and first.counts["reused"] == 0
    # The pool grows by 5%; the old files' images are scrambled where they lie, size and time kept: a
    # run that decoded an old row would reject it or fail.
    for folder in (pool, clean):
        pq.write_table(table.slice(n_old), folder / "part-2.parquet")
    for name in ("part-0.parquet", "part-1.parquet"):
        _scramble_payload(pool / name, "image")
    second, log = _score(_config(pool, tmp_path / "lake", checkpoint), "second")
    n_new = table.num_rows - n_old
    assert n_new == round(0.05 * n_old)
    assert (second.counts["scored"], second.counts["reused"], second.counts["pool"]) == (n_new, n_old, table.num_rows)
    assert second.reused_from == "first"
    assert "1 of 3 pool files new or changed" in log
    row = _runs_row(tmp_path / "lake", "second")
    assert (row["n_scored"], row["n_reused"], row["reused_from"]) == (n_new, n_old, "first")
    assert row["score_key"] == first.score_key == second.score_key
    full, _ = _score(_config(clean, tmp_path / "full", checkpoint), "full", incremental=False)
    assert full.counts["scored"] == table.num_rows and full.reused_from is None
    _same_bits(_rows(tmp_path / "lake", "features", "second"), _rows(tmp_path / "full", "features", "full"))
    rejects = _rows(tmp_path / "lake", "rejects", "second")
    assert rejects.equals(_rows(tmp_path / "full", "rejects", "full"))
    assert rejects.num_rows > 0 and all(i.startswith("corrupt-") for i in rejects.column("id").to_pylist())


def _png(index: int) -> bytes:
    from sklearn.datasets import load_digits

    return png_bytes((load_digits().images[index] * 16).clip(0, 255).astype(np.uint8))


def _image_folder(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"img-{i:03d}.png").write_bytes(_png(i))


def test_a_changed_image_is_rescored_and_a_deleted_one_disappears(ray_session, digits, tmp_path):
    _, checkpoint = digits
    folder, lake = tmp_path / "images", tmp_path / "lake"
    _image_folder(folder, 40)
    config = _config(folder, lake, checkpoint, fmt="images")
    _score(config, "first")
    before = _rows(lake, "features", "first")
    changed, deleted = folder / "img-003.png", folder / "img-007.png"
    changed.write_bytes((folder / "img-010.png").read_bytes())  # another digit, new size or time
    deleted.unlink()
    # An unchanged image made unreadable where it lies (same size and time): it must not be decoded again.
    kept = folder / "img-020.png"
    status = kept.stat()
    kept.write_bytes(b"\0" * status.st_size)
    os.utime(kept, ns=(status.st_atime_ns, status.st_mtime_ns))
    second, _ = _score(config, "second")
    assert (second.counts["scored"], second.counts["reused"], second.counts["pool"]) == (1, 38, 39)
    after = _rows(lake, "features", "second")
    assert "img-007.png" not in after.column("id").to_pylist()
    assert _rows(lake, "rejects", "second").num_rows == 0
    old = {r["id"]: r for r in before.to_pylist()}
    new = {r["id"]: r for r in after.to_pylist()}
    assert new["img-003.png"]["embedding"] != old["img-003.png"]["embedding"]
    assert new["img-003.png"]["embedding"] == old["img-010.png"]["embedding"]
    assert new["img-020.png"] == old["img-020.png"]
    # the same rows and values as a full rescore of the folder as it is now (the unreadable image restored)
    kept.write_bytes(_png(20))
    os.utime(kept, ns=(status.st_atime_ns, status.st_mtime_ns))
    full, _ = _score(config, "full", incremental=False)
    assert full.counts["scored"] == 39
    _same_bits(after, _rows(lake, "features", "full"))


def test_a_model_or_scoring_change_rescores_every_row_and_resources_do_not(ray_session, digits, tmp_path):
    table, checkpoint = digits
    pool, lake = tmp_path / "pool", tmp_path / "lake"
    pool.mkdir()
    pq.write_table(table.slice(0, 60), pool / "part-0.parquet")
    model = tmp_path / "model.pt"
    shutil.copy(checkpoint, model)
    config = _config(pool, lake, str(model))
    _score(config, "first")
    # more actors and another batch size change no feature: every row is reused
    spread, _ = _score(_config(pool, lake, str(model), num_actors=2, cpus_per_actor=0.5, batch_size=16), "spread")
    assert (spread.counts["scored"], spread.counts["reused"]) == (0, 60)
    _same_bits(_rows(lake, "features", "spread"), _rows(lake, "features", "first"))
    # another scoring setting: every row is scored again
    other, _ = _score(_config(pool, lake, str(model), mc_samples=3), "mc3")
    assert (other.counts["scored"], other.counts["reused"]) == (60, 0)
    # the checkpoint rewritten in place (same path, other weights): every row is scored again
    import torch

    from alray.models import load_checkpoint, save_checkpoint

    network = load_checkpoint(model)
    with torch.no_grad():
        next(network.parameters()).mul_(0.5)
    save_checkpoint(network, model)
    retrained, _ = _score(config, "retrained")
    assert (retrained.counts["scored"], retrained.counts["reused"]) == (60, 0)
    assert retrained.score_key != spread.score_key
    changed = pc.not_equal(_rows(lake, "features", "retrained").column("entropy"),
                           _rows(lake, "features", "first").column("entropy"))
    assert pc.any(changed).as_py()


def test_a_delta_pool_reads_only_the_files_a_new_version_added(ray_session, digits, tmp_path):
    table, checkpoint = digits
    pool, clean, lake = tmp_path / "pool", tmp_path / "clean", tmp_path / "lake"
    rows = table.slice(0, 80)
    for target in (pool, clean):
        write_deltalake(str(target), rows.slice(0, 40))
        write_deltalake(str(target), rows.slice(40, 30), mode="append")
    config = _config(pool, lake, checkpoint, fmt="delta")
    _score(config.model_copy(update={"pool": config.pool.model_copy(update={"version": 1})}), "v1")
    old_files = list(pool.glob("*.parquet"))
    for target in (pool, clean):
        write_deltalake(str(target), rows.slice(70, 10), mode="append")
    # The log gives each file's size and time: the old files, scrambled where they lie, are not read.
    for part in old_files:
        _scramble_payload(part, "image")
    second, log = _score(config, "v2")
    assert (second.counts["scored"], second.counts["reused"]) == (10, 70)
    assert "1 of 3 pool files new or changed" in log
    _score(_config(clean, tmp_path / "full", checkpoint, fmt="delta"), "full")
    _same_bits(_rows(lake, "features", "v2"), _rows(tmp_path / "full", "features", "full"))


@pytest.mark.parametrize("lake_format", ["delta", "parquet", "iceberg"])
def test_rewritten_files_carry_their_unchanged_rows_in_every_lake_format(ray_session, digits, tmp_path, lake_format):
    table, checkpoint = digits
    rows = table.slice(0, 40)
    pool, lake = tmp_path / "pool", tmp_path / "lake"
    pool.mkdir()
    pq.write_table(rows.slice(0, 20), pool / "part-a.parquet")
    pq.write_table(rows.slice(20, 20), pool / "part-b.parquet")
    config = _config(pool, lake, checkpoint)
    config = config.model_copy(update={"output": config.output.model_copy(update={"format": lake_format})})
    _score(config, "first")
    # part-b rewritten: its first two rows deleted, its third with new metadata; part-c adds four rows
    rewritten = rows.slice(22, 18)
    cameras = rewritten.column("camera_id").to_pylist()
    cameras[0] = "cam-moved"
    rewritten = rewritten.set_column(rewritten.column_names.index("camera_id"), "camera_id", pa.array(cameras))
    (pool / "part-b.parquet").unlink()
    pq.write_table(rewritten, pool / "part-b2.parquet")
    pq.write_table(table.slice(40, 4), pool / "part-c.parquet")
    second, log = _score(config, "second")
    assert (second.counts["scored"], second.counts["reused"], second.counts["pool"]) == (5, 37, 42)
    assert "2 of 3 pool files new or changed" in log
    lake_ = Lake.from_output(config.output)
    after = lake_.read_run("features", "second").drop_columns(["run_id"]).sort_by("id")
    before = lake_.read_run("features", "first").drop_columns(["run_id"]).sort_by("id")
    deleted = set(rows.slice(20, 2).column("id").to_pylist())
    moved = rewritten.column("id")[0].as_py()
    assert not deleted & set(after.column("id").to_pylist())
    assert lake_.read_run("rejects", "second").num_rows == 0
    kept = pc.invert(pc.is_in(before.column("id"), pa.array([*deleted, moved])))
    old_ids = before.filter(kept).column("id")
    _same_bits(after.filter(pc.is_in(after.column("id"), old_ids)), before.filter(kept))
    row = after.filter(pc.equal(after.column("id"), moved)).to_pylist()[0]
    assert row["camera_id"] == "cam-moved"
    assert lake_.read_run("pool_rows", "second").num_rows == 42


def test_incremental_off_scores_every_row_and_the_next_run_reuses_it(ray_session, digits, tmp_path):
    table, checkpoint = digits
    pool, lake = tmp_path / "pool", tmp_path / "lake"
    pool.mkdir()
    pq.write_table(table.slice(0, 30), pool / "part-0.parquet")
    config = _config(pool, lake, checkpoint)
    _score(config, "first")
    off, log = _score(config, "off", incremental=False)
    assert (off.counts["scored"], off.counts["reused"], off.reused_from) == (30, 0, None)
    assert "against run" not in log and "carried over" not in log
    on, _ = _score(config, "on")
    assert (on.counts["scored"], on.counts["reused"], on.reused_from) == (0, 30, "off")
    summary = io.StringIO()
    print_summary(on, file=summary)
    assert "incremental: 0 rows scored, 30 carried over from run off" in summary.getvalue()


def test_a_select_only_run_keeps_the_scoring_record_and_a_failed_run_leaves_no_pool_rows(ray_session, digits,
                                                                                           tmp_path):
    table, checkpoint = digits
    pool, lake = tmp_path / "pool", tmp_path / "lake"
    pool.mkdir()
    pq.write_table(table.slice(0, 30), pool / "part-0.parquet")
    config = _config(pool, lake, checkpoint)
    config = config.model_copy(update={"selection": config.selection.model_copy(update={"engine": "local"})})
    scored, _ = _score(config, "split")
    run = config.model_copy(update={"run": config.run.model_copy(update={"run_id": "split"})})
    run_pipeline(run, progress=Progress(io.StringIO()), stages=("select",))
    row = _runs_row(lake, "split")
    assert (row["status"], row["n_scored"], row["score_key"]) == ("succeeded", 30, scored.score_key)
    later, _ = _score(config, "later")
    assert (later.counts["reused"], later.reused_from) == (30, "split")
    # every row of the demo's corrupt images rejected beyond the allowed fraction: the run fails, leaving nothing
    pq.write_table(table.filter(pc.starts_with(table.column("id"), "corrupt-")), pool / "part-1.parquet")
    strict = _config(pool, lake, checkpoint, max_bad_fraction=0.01)
    with pytest.raises(InputError):
        _score(strict, "strict")
    for name in ("features", "rejects", "pool_rows"):
        assert Lake(str(lake)).read_run(name, "strict").num_rows == 0


def test_a_lake_whose_runs_table_predates_the_new_columns_still_reads(ray_session, digits, tmp_path):
    table, checkpoint = digits
    pool, lake = tmp_path / "pool", tmp_path / "lake"
    pool.mkdir()
    pq.write_table(table.slice(0, 20), pool / "part-0.parquet")
    old_schema = pa.schema([f for f in RUNS_SCHEMA if f.name not in ("n_scored", "n_reused", "reused_from",
                                                                      "score_key")])
    old = pa.Table.from_pylist([{"run_id": "old", "status": "succeeded", "stages_completed": "score,select"}],
                               schema=old_schema)
    Lake(str(lake)).replace_run("runs", old, "old", partition=False)
    first, _ = _score(_config(pool, lake, checkpoint), "first")
    assert (first.counts["scored"], first.reused_from) == (20, None)
    runs = {r["run_id"]: r for r in Lake(str(lake)).read_table("runs").to_pylist()}
    assert runs["old"]["n_scored"] is None and runs["first"]["n_scored"] == 20


def test_a_listing_of_uris_scores_its_new_and_changed_rows(ray_session, digits, tmp_path):
    _, checkpoint = digits
    folder, lake = tmp_path / "images", tmp_path / "lake"
    _image_folder(folder, 30)
    listing = tmp_path / "listing.csv"
    rows = [f"{i:03d},{folder / f'img-{i:03d}.png'},cam-{i % 3}" for i in range(30)]
    listing.write_text("id,uri,camera\n" + "\n".join(rows[:25]) + "\n")
    config = _config(listing, lake, checkpoint, fmt="csv")
    _score(config, "first")
    rows[3] = rows[3].replace("cam-0", "cam-9")  # a row's metadata changed
    listing.write_text("id,uri,camera\n" + "\n".join(rows) + "\n")  # and five rows added
    second, log = _score(config, "second")
    assert (second.counts["scored"], second.counts["reused"]) == (6, 24)
    assert "1 of 1 pool files new or changed" in log
    after = {r["id"]: r for r in _rows(lake, "features", "second").to_pylist()}
    before = {r["id"]: r for r in _rows(lake, "features", "first").to_pylist()}
    assert after["003"]["camera"] == "cam-9" and after["003"]["embedding"] == before["003"]["embedding"]
    assert all(after[i] == before[i] for i in before if i != "003")


def test_an_iceberg_pool_reads_only_the_files_of_later_snapshots(ray_session, digits, tmp_path):
    pytest.importorskip("pyiceberg")
    from pyiceberg.catalog.sql import SqlCatalog

    table, checkpoint = digits
    rows = table.slice(0, 50).drop_columns(["captured_at"])
    catalog = SqlCatalog("pools", uri=f"sqlite:///{tmp_path}/pools.db", warehouse=f"file://{tmp_path}/warehouse")
    catalog.create_namespace_if_not_exists("raw")
    pool = catalog.create_table("raw.pool", schema=rows.schema)
    pool.append(rows.slice(0, 40))
    first_snapshot = pool.current_snapshot().snapshot_id
    old_files = list((tmp_path / "warehouse").rglob("*.parquet"))
    pool.append(rows.slice(40))
    config = config_from_dict({
        "run": {"seed": 0},
        "pool": {"path": "raw.pool", "format": "iceberg",
                 "catalog": {"uri": f"sqlite:///{tmp_path}/pools.db", "name": "pools"}},
        "model": {"checkpoint": checkpoint}, "score": {"mc_samples": 5, "batch_size": 64, "num_actors": 1},
        "selection": {"n_samples": 5}, "output": {"path": str(tmp_path / "lake")},
    })
    _score(config.model_copy(update={"pool": config.pool.model_copy(update={"version": first_snapshot})}), "first")
    for part in old_files:  # Iceberg never rewrites a file: an old one is not read again
        _scramble_payload(part, "image")
    second, log = _score(config, "second")
    assert (second.counts["scored"], second.counts["reused"]) == (10, 40)
    assert "1 of 2 pool files new or changed" in log


def test_a_pool_without_a_model_scores_its_new_rows_from_their_own_columns(ray_session, tmp_path):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(60, 8)).astype(np.float32)
    logits = rng.normal(size=(60, 3))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    table = pa.table({"id": [f"v{i:02d}" for i in range(60)], "embedding": list(embeddings), "probs": list(probs)})
    pool, lake = tmp_path / "pool", tmp_path / "lake"
    pool.mkdir()
    pq.write_table(table.slice(0, 50), pool / "part-0.parquet")
    config = config_from_dict({"run": {"seed": 0}, "pool": {"path": str(pool)}, "selection": {"n_samples": 5},
                               "output": {"path": str(lake)}})
    _score(config, "first")
    pq.write_table(table.slice(50), pool / "part-1.parquet")
    second, _ = _score(config, "second")
    assert (second.counts["scored"], second.counts["reused"]) == (10, 50)
    _score(config, "full", incremental=False)
    _same_bits(_rows(lake, "features", "second"), _rows(lake, "features", "full"))


def test_a_detection_run_scores_every_row(ray_session, detection_files, tmp_path):
    # its box_instability still moves in the last bits with an image's batch, so carried rows would not be
    # a rescore's: a detection run is never incremental (yet)
    table = pa.concat_tables([pq.read_table(f) for f in sorted(Path(detection_files.pool).glob("*.parquet"))])
    pool = tmp_path / "pool"
    pool.mkdir()
    pq.write_table(table, pool / "part-0.parquet")
    config = config_from_dict({
        "task": "detection", "detection": {"classes": ["circle", "square", "triangle"], "level": "objects",
                                           "score_threshold": 0.1, "samples": "hflip"},
        "run": {"seed": 0}, "pool": {"path": str(pool)}, "model": {"checkpoint": detection_files.checkpoint},
        "score": {"batch_size": 32, "max_bad_fraction": 0.2}, "selection": {"n_samples": 5},
        "output": {"path": str(tmp_path / "lake")}})
    _score(config, "first")
    second, log = _score(config, "second")
    assert (second.counts["scored"], second.counts["reused"], second.reused_from) == (table.num_rows, 0, None)
    assert "objects" in log and _rows(tmp_path / "lake", "objects", "second").num_rows > 0
