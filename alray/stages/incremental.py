"""Incremental scoring on Ray: which pool rows changed since the last run with the same model and
scoring settings, and the other rows' features and rejects carried over from that run, file by file.

A run records every pool row it saw in the ``pool_rows`` table: its id, a hash of its content and
the key of the pool file it came from (the file's path and version: size and time from the
table's log for Delta, the size for Iceberg, whose files are never rewritten, a stat otherwise).
The next run with the same *score key* (the score hash without the pool version, the checkpoint's
content, the pool's schema and the versions of the libraries that compute features) then:

1. keeps every pool file whose key the base run recorded: its rows are the same, and none of them
   is read (their ids, hashes and features come from the base run's files);
2. reads and hashes the rows of the other files (new files, rewritten ones, a new version's): a row
   whose id and hash the base run holds is carried over, any other is scored;
3. copies the base run's features and rejects files, each whole when it holds none of the rows
   that changed or left the pool, else filtered; Ray tasks do it where the files are, so no row
   passes through the driver.

The new run's features are the rows a full rescore would give: carried rows are copied bytes, and
a row's features depend on its content, the model and the seed alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from alray.config import ModelConfig
from alray.lake import Lake, filesystem_for, reshape_parquet
from alray.lake.filesystems import StorageOptions, path_like
from alray.lake.labels import read_whole
from alray.row_hashes import row_hashes
from alray.stages.pool_source import PoolSource, file_batches
from alray.tables import POOL_ROWS_SCHEMA, RUNS_SCHEMA, without_run_id

# Libraries whose versions can change a feature's bits: a run after an upgrade scores every row.
FEATURE_LIBRARIES = ("torch", "numpy", "pillow", "onnxruntime", "transformers")


@dataclass(frozen=True)
class Increment:
    """What a run must score and what it carries over from its base run."""

    to_score: PoolSource | None  # the pool files holding rows to score (None: no row to score)
    skip_ids: Any  # ids in those files that are carried over, not scored (a Ray object reference), or None
    carried_features: list[str] = field(default_factory=list)  # staged copies of the base run's features
    carried_rejects: list[str] = field(default_factory=list)
    n_reused: int = 0  # rows carried over (features and rejects)
    pool_rows: list[str] = field(default_factory=list)  # staged pool_rows files: every row of the pool
    base_run: str | None = None
    score_key: str = ""
    n_files: int = 0
    n_files_read: int = 0  # pool files whose rows were read to hash them
    n_to_score: int = 0  # rows to score


def score_key(basis: str, model: ModelConfig | None, source: PoolSource, embedding_dim: int | None) -> str:
    """The key two runs share when a pool row gets the same features in both.

    ``basis`` is the config's score hash without the pool version; to it come the checkpoint's
    content (a file rewritten in place is another model), the pool's columns and their types (a new
    column is in every row of the features), the embedding width of a pool without a model, and the
    versions of alray and the libraries that compute features.
    """
    from alray import __version__
    from alray.models.files import checkpoint_digest

    versions: dict[str, str | None] = {"alray": __version__}
    for name in FEATURE_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    data = {
        "basis": basis,
        "checkpoint": checkpoint_digest(model.checkpoint) if model is not None else None,
        "schema": [f"{f.name}:{f.type}" for f in source.schema],
        "embedding_dim": embedding_dim,
        "versions": versions,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


def find_base_run(lake: Lake, key: str, run_id: str) -> str | None:
    """The latest succeeded run (other than ``run_id``) whose scoring had ``key`` and recorded its pool rows."""
    runs = read_whole(lake, "runs", RUNS_SCHEMA)
    rows = [r for r in runs.to_pylist() if r["score_key"] == key and r["status"] == "succeeded"
            and r["run_id"] != run_id and "score" in (r["stages_completed"] or "").split(",")]
    for row in sorted(rows, key=lambda r: r["finished_at"] or r["started_at"], reverse=True):
        try:
            if lake.run_files("pool_rows", row["run_id"]):
                return str(row["run_id"])
        except Exception:  # no pool_rows table yet, or one a format cannot list: nothing to reuse
            return None
    return None


def file_keys(source: PoolSource) -> list[str]:
    """A key per pool file that changes when its rows may have: its path, version and partition values."""
    versions = source.file_versions
    if not versions:
        filesystem = source.filesystem or pafs.LocalFileSystem()
        infos = filesystem.get_file_info(source.files)
        versions = [f"{info.size}:{info.mtime_ns}" for info in infos]
    keys = []
    for i, (path, version) in enumerate(zip(source.files, versions, strict=True)):
        partition = json.dumps(source.partitions[i], sort_keys=True, default=str) if source.partitions else ""
        text = f"{source.format}\0{path}\0{version}\0{partition}"
        keys.append(hashlib.sha256(text.encode()).hexdigest()[:32])
    return keys


def plan_increment(source: PoolSource, lake: Lake, run_id: str, *, key: str, incremental: bool,
                   rows_per_batch: int) -> Increment:
    """Hash the rows of the pool files the base run did not see, decide what to score, stage the copies.

    ``key`` is :func:`score_key`; with ``incremental`` False (or no base run) every row is scored,
    and the pool's rows are still hashed and staged for ``pool_rows``, so that the next run can reuse
    this one. Runs Ray tasks; the driver handles file names, footers and counts.
    """
    import ray

    options = dict(lake.storage_options) if lake.storage_options else None
    run_id_column = run_id if lake.keeps_run_id_in_files() else None
    keys = file_keys(source)
    base_run = find_base_run(lake, key, run_id) if incremental else None
    kept_state: dict[str, str] = {}  # pool file key -> the base run's pool_rows file of its rows
    loose_state: list[str] = []  # the base run's pool_rows files of files gone or changed
    if base_run is not None:
        wanted = set(keys)
        files = lake.run_files("pool_rows", base_run)
        with ThreadPoolExecutor(max_workers=16) as pool:
            sources = list(pool.map(lambda f: _single_source(f, options), files))
        for file, source_key in zip(files, sources, strict=True):
            if source_key in wanted and source_key not in kept_state:
                kept_state[source_key] = file
            else:
                loose_state.append(file)
    fresh = [i for i, k in enumerate(keys) if k not in kept_state]
    kept = [i for i, k in enumerate(keys) if k in kept_state]
    state_folder = lake.staging(run_id, "pool-rows")
    loose = ray.remote(_read_state).remote(loose_state, options) if loose_state else None
    hash_task = ray.remote(_hash_file).options(num_returns=2)
    hashed: list[Any] = [hash_task.remote(source.subset([i]), keys[i], state_folder, loose, rows_per_batch,
                                          run_id_column, options) for i in fresh]
    counts = ray.get([h[0] for h in hashed])
    carried_refs = [h[1] for h, c in zip(hashed, counts, strict=True) if c["carried"]]
    copy_task = ray.remote(_carry_file)
    copies = [copy_task.remote(kept_state[keys[i]], state_folder, None, run_id_column, options) for i in kept]
    state_copies: list[tuple[str | None, int]] = ray.get(copies)
    pool_rows = [c["state"] for c in counts] + [path for path, _ in state_copies if path]
    to_score = [i for i, c in zip(fresh, counts, strict=True) if c["rows"] > c["carried"]]
    increment = Increment(
        to_score=source.subset(to_score) if to_score else None,
        skip_ids=ray.remote(_concat).remote(*carried_refs) if carried_refs else None,
        pool_rows=pool_rows, base_run=base_run, score_key=key, n_files=len(keys), n_files_read=len(fresh),
        n_to_score=sum(c["rows"] - c["carried"] for c in counts))
    if base_run is None:
        return increment
    # Rows of the base run that are neither in a kept file nor carried from a read one changed or left the pool.
    dropped = ray.remote(_dropped).remote(loose, *carried_refs) if loose is not None else None
    carried: dict[str, list[str]] = {}
    n_reused = 0
    for name in ("features", "rejects"):
        folder = lake.staging(run_id, f"{name}-carried")
        staged: list[tuple[str | None, int]] = ray.get([copy_task.remote(f, folder, dropped, run_id_column, options)
                                                        for f in lake.run_files(name, base_run)])
        carried[name] = [path for path, _ in staged if path]
        n_reused += sum(rows for _, rows in staged)
    return replace(increment, carried_features=carried["features"], carried_rejects=carried["rejects"],
                   n_reused=n_reused)


def pool_rows_schema(lake: Lake) -> pa.Schema:
    """The pool_rows table's schema as the lake's files hold it."""
    return without_run_id(POOL_ROWS_SCHEMA, lake.keeps_run_id_in_files())


def _single_source(path: str, storage_options: StorageOptions) -> str | None:
    """The pool file key a pool_rows file holds, when it holds the rows of one pool file only."""
    filesystem, inner = filesystem_for(path, storage_options)
    values = pc.unique(pq.read_table(inner, columns=["source"], filesystem=filesystem).column("source"))
    return str(values[0].as_py()) if len(values) == 1 else None


def _read_state(files: list[str], storage_options: StorageOptions) -> pa.Table:
    """The ids and row hashes of pool_rows files."""
    tables = []
    for path in files:
        filesystem, inner = filesystem_for(path, storage_options)
        tables.append(pq.read_table(inner, columns=["id", "row_hash"], filesystem=filesystem))
    return pa.concat_tables(tables).combine_chunks()


def _hash_file(source: PoolSource, key: str, folder: str, loose: pa.Table | None, rows_per_batch: int,
               run_id_column: str | None, storage_options: StorageOptions) -> tuple[dict[str, Any], pa.Array]:
    """Ray task: hash the rows of a one-file pool into a pool_rows file; return its path and counts, and
    the ids whose hash the base run's ``loose`` rows (id, row_hash) hold (carried over)."""
    filesystem, inner = filesystem_for(folder, storage_options)
    filesystem.create_dir(inner, recursive=True)
    target = f"{inner}/part-{uuid.uuid4().hex}.parquet"
    schema = without_run_id(POOL_ROWS_SCHEMA, run_id_column is not None)
    ids, hashes = [], []
    with pq.ParquetWriter(target, schema, filesystem=filesystem) as writer:
        for table in file_batches(source, 0, rows_per_batch):
            batch_ids = table.column("id").cast(pa.string()).combine_chunks()
            batch_hashes = row_hashes(table)
            columns = {"source": pa.repeat(pa.scalar(key), table.num_rows), "id": batch_ids, "row_hash": batch_hashes}
            if run_id_column is not None:
                columns["run_id"] = pa.repeat(pa.scalar(run_id_column), table.num_rows)
            writer.write_table(pa.table(columns).select(schema.names).cast(schema))
            ids.append(batch_ids)
            hashes.append(batch_hashes)
    all_ids = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
    carried = pa.array([], pa.string())
    if loose is not None and len(all_ids):
        position = pc.index_in(all_ids, value_set=loose.column("id"))
        found = pc.is_valid(position)
        earlier = loose.column("row_hash").take(pc.fill_null(position, 0))
        same = pc.and_(found, pc.equal(pa.concat_arrays(hashes), earlier.combine_chunks()))
        carried = all_ids.filter(pc.fill_null(same, False))
    counts = {"state": path_like(filesystem, target, folder), "rows": len(all_ids), "carried": len(carried)}
    return counts, carried


def _concat(*arrays: pa.Array) -> pa.Array:
    return pa.concat_arrays(list(arrays))


def _dropped(loose: pa.Table, *carried: pa.Array) -> pa.Array:
    """Ids of the base run's loose rows that no read file carried over: changed, or gone from the pool."""
    ids = loose.column("id").combine_chunks()
    if not carried:
        return ids
    return ids.filter(pc.invert(pc.is_in(ids, value_set=pa.concat_arrays(list(carried)))))


def _carry_file(path: str, folder: str, dropped: pa.Array | None, run_id_column: str | None,
                storage_options: StorageOptions) -> tuple[str | None, int]:
    """Ray task: a base run's file staged for this run, without the ``dropped`` ids' rows; its path and rows.

    Copied whole (a hard link on a local disk, a server-side copy on an object store) when it holds
    no dropped id and no run_id column to rewrite; else rewritten batch by batch. None when no row is left.
    """
    filesystem, inner = filesystem_for(path, storage_options)
    drop = dropped is not None and len(dropped) > 0 and pc.any(pc.is_in(
        pq.read_table(inner, columns=["id"], filesystem=filesystem).column("id"), value_set=dropped)).as_py()
    if run_id_column is None and not drop:
        target_fs, target_folder = filesystem_for(folder, storage_options)
        target_fs.create_dir(target_folder, recursive=True)
        target = f"{target_folder}/part-{uuid.uuid4().hex}.parquet"
        _copy(target_fs, inner, target)
        return path_like(target_fs, target, folder), pq.read_metadata(target, filesystem=target_fs).num_rows
    names = pq.read_schema(inner, filesystem=filesystem).names
    columns: dict[str, str | pa.Scalar] = {name: name for name in names}
    if run_id_column is not None:
        columns["run_id"] = pa.scalar(run_id_column, pa.string())
    keep = ~pads.field("id").isin(dropped) if drop else None
    staged = reshape_parquet(path, folder, columns=columns, filter=keep, storage_options=storage_options)
    if staged is None:
        return None, 0
    target_fs, target = filesystem_for(staged, storage_options)
    return staged, pq.read_metadata(target, filesystem=target_fs).num_rows


def _copy(filesystem: pafs.FileSystem, source: str, target: str) -> None:
    if isinstance(filesystem, pafs.LocalFileSystem):
        try:  # lake files are never rewritten in place: a second name for the same bytes is a copy
            os.link(source, target)
            return
        except OSError:
            pass
    filesystem.copy_file(source, target)
