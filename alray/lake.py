"""Lake tables: read pools and labeled sets, and replace one run's rows of a table atomically.

Every output table is partitioned by ``run_id`` and one run is replaced as a whole: Delta (the
default) through delta-rs, Iceberg through pyiceberg, or plain parquet folders. Large tables are
written where the data is: engines write parquet files, and :func:`commit_files` commits those
files in one transaction, so the driver handles file names and footers, never the rows.
Object-store URIs (``s3://...``) take the same code path with storage options in delta-rs form
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ...); anything not given is found by the
libraries' own credential chains.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import random
import shutil
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    RemoveAction,
    Transaction,
    create_table_with_add_actions,
)

from alray.config import RUN_ID_PATTERN
from alray.errors import InputError

TABLE_NAMES = ("features", "ranking", "rejects", "runs")
PAYLOAD_COLUMNS = ("image", "uri", "features", "text")
TableFormat = Literal["delta", "iceberg", "parquet"]
StorageOptions = Mapping[str, str] | None

# Concurrent runs commit to the same table log; a lost race is retried after a jittered backoff.
COMMIT_ATTEMPTS = 8
_BACKOFF_S = 0.05


@dataclass(frozen=True)
class IcebergCatalog:
    """Where Iceberg tables are registered: a SQL catalog (sqlite by default) or a REST catalog."""

    type: Literal["sql", "rest"] = "sql"
    uri: str = ""
    name: str = "default"
    warehouse: str | None = None
    namespace: str = "alray"
    properties: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Lake:
    """The output lake: one table per name under ``root``, each partitioned by run_id."""

    root: str
    format: TableFormat = "delta"
    storage_options: Mapping[str, str] | None = field(default=None, hash=False, compare=False)
    catalog: IcebergCatalog | None = None

    @classmethod
    def from_output(cls, output: Any) -> Lake:
        """The lake an ``OutputConfig`` describes."""
        catalog = None
        if output.format == "iceberg":
            given = output.catalog
            uri = given.uri if given is not None and given.uri else _embedded_catalog_uri(output.path)
            catalog = IcebergCatalog(
                type=given.type if given is not None else "sql", uri=uri,
                name=given.name if given is not None else "default",
                warehouse=given.warehouse if given is not None else None,
                namespace=given.namespace if given is not None else "alray",
                properties=dict(given.properties) if given is not None else {},
            )
        return cls(output.path, output.format, dict(output.storage_options) or None, catalog)

    def table(self, name: str) -> str:
        """Path of table ``name`` (features, ranking, rejects, runs)."""
        if name not in TABLE_NAMES:
            raise ValueError(f"name: expected one of {TABLE_NAMES}, got {name!r}")
        return _join(self.root, name)

    def staging(self, run_id: str, name: str) -> str:
        """A fresh folder where workers write a run's parquet files before they are committed.

        Absolute for a local lake: Ray workers and Spark tasks may run in another directory.
        """
        root = self.root if "://" in self.root else os.path.abspath(self.root)
        return _join(root, "_staging", run_id, f"{name}-{uuid.uuid4().hex[:8]}")

    def clear_staging(self, run_id: str) -> None:
        """Remove a run's staging files once committed."""
        delete_dir(_join(self.root, "_staging", run_id), storage_options=self.storage_options)

    # The methods below dispatch on the lake's format; the module functions they call are Delta's.

    def replace_run(self, name: str, data: pa.Table | pa.RecordBatchReader, run_id: str, *,
                    partition: bool = True) -> None:
        """Replace ``run_id``'s rows of table ``name`` with ``data`` (a table or a stream) in one commit."""
        if self.format == "iceberg":
            iceberg_replace_run(self._iceberg(name), data, run_id)
        elif self.format == "parquet":
            parquet_replace_run(self.table(name), data, run_id, storage_options=self.storage_options)
        else:
            replace_run(self.table(name), data, run_id, partition=partition, storage_options=self.storage_options)

    def commit_files(self, name: str, files: list[str], run_id: str, *, schema: pa.Schema | None = None) -> int:
        """Make parquet ``files`` (written by workers) the rows of ``run_id`` in table ``name``; return rows."""
        if self.format == "iceberg":
            return iceberg_commit_files(self._iceberg(name), files, run_id, schema=schema,
                                        storage_options=self.storage_options)
        if self.format == "parquet":
            return parquet_commit_files(self.table(name), files, run_id, storage_options=self.storage_options)
        return commit_files(self.table(name), files, run_id, schema=schema, storage_options=self.storage_options)

    def delete_run(self, name: str, run_id: str) -> None:
        """Remove ``run_id``'s rows of table ``name`` in one commit; nothing happens when it has none."""
        if self.format == "iceberg":
            iceberg_delete_run(self._iceberg(name), run_id)
        elif self.format == "parquet":
            delete_dir(_join(self.table(name), f"run_id={_checked_run_id(run_id)}"),
                       storage_options=self.storage_options)
        else:
            delete_run(self.table(name), run_id, storage_options=self.storage_options)

    def keeps_run_id_in_files(self) -> bool:
        """Whether committed files carry the ``run_id`` column (Iceberg) or take it from their path."""
        return self.format == "iceberg"

    def read_run(self, name: str, run_id: str, columns: list[str] | None = None) -> pa.Table:
        """The rows of one run of table ``name`` (an empty table when the table does not exist)."""
        if self.format == "iceberg":
            return iceberg_read_run(self._iceberg(name), run_id, columns)
        if self.format == "parquet":
            return parquet_read_run(self.table(name), run_id, columns, storage_options=self.storage_options)
        return read_run(self.table(name), run_id, columns, storage_options=self.storage_options)

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """Every row of table ``name`` (for small tables such as runs); InputError when it does not exist."""
        if self.format == "iceberg":
            return iceberg_read_run(self._iceberg(name), None, columns, missing_ok=False)
        if self.format == "parquet":
            return parquet_read_run(self.table(name), None, columns, storage_options=self.storage_options,
                                    missing_ok=False)
        try:
            table = _delta(self.table(name), self.storage_options)
        except TableNotFoundError:
            raise InputError(f"{name} table {self.table(name)}: not found") from None
        return table.to_pyarrow_dataset().to_table(columns=columns)

    def run_files(self, name: str, run_id: str) -> list[str]:
        """Parquet files holding one run's rows, for engines without a reader for the table format."""
        if self.format == "iceberg":
            return iceberg_run_files(self._iceberg(name), run_id)
        if self.format == "parquet":
            return parquet_run_files(self.table(name), run_id, storage_options=self.storage_options)
        return run_files(self.table(name), run_id, storage_options=self.storage_options)

    def filesystem(self) -> pafs.FileSystem:
        """A pyarrow file system for the lake's files (what run_files returns lives there)."""
        return filesystem_for(self.root, self.storage_options)[0]

    def _iceberg(self, name: str) -> IcebergTarget:
        if self.catalog is None:
            raise ValueError("an Iceberg lake needs a catalog")
        return IcebergTarget(self.catalog, name, self.table(name), self.storage_options)


def _embedded_catalog_uri(root: str) -> str:
    if "://" in root and not root.startswith("file://"):
        raise InputError(f"output.catalog.uri: an Iceberg lake at {root} needs a catalog uri "
                         "(the embedded sqlite catalog lives on a local disk)")
    local = urlparse(root).path if root.startswith("file://") else os.path.abspath(root)
    ensure_dir(local)
    return f"sqlite:///{os.path.join(local, '_catalog.db')}"


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts]) if "://" in root else os.path.join(root, *parts)


def _checked_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.match(run_id):
        raise ValueError(f"run_id: unsafe run id {run_id!r}")
    return run_id


def _run_predicate(run_id: str) -> str:
    # The run id is validated to a safe alphabet, so quoting it in the predicate cannot break out.
    return f"run_id = '{_checked_run_id(run_id)}'"


# --- file systems --------------------------------------------------------------------------

_S3_KEYS = {
    "aws_access_key_id": "access_key", "access_key_id": "access_key",
    "aws_secret_access_key": "secret_key", "secret_access_key": "secret_key",
    "aws_session_token": "session_token", "session_token": "session_token",
    "aws_region": "region", "region": "region", "aws_default_region": "region",
    "aws_endpoint_url": "endpoint_override", "aws_endpoint": "endpoint_override", "endpoint_url": "endpoint_override",
    "endpoint": "endpoint_override",
}


def s3_filesystem(storage_options: StorageOptions) -> pafs.S3FileSystem:
    """A pyarrow S3 file system from delta-rs style storage options (others come from the AWS chain)."""
    kwargs: dict[str, Any] = {}
    for key, value in (storage_options or {}).items():
        target = _S3_KEYS.get(key.lower())
        if target:
            kwargs[target] = value
    endpoint = kwargs.get("endpoint_override")
    if endpoint and "://" in endpoint:
        parsed = urlparse(endpoint)
        kwargs["scheme"], kwargs["endpoint_override"] = parsed.scheme, parsed.netloc
    return pafs.S3FileSystem(**kwargs)


def filesystem_for(path: str, storage_options: StorageOptions = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow file system and the path inside it: local paths, ``s3://`` with options, other URIs."""
    if "://" not in path:
        return pafs.LocalFileSystem(), os.path.abspath(path)
    scheme = urlparse(path).scheme
    if scheme in ("s3", "s3a"):
        return s3_filesystem(storage_options), path.split("://", 1)[1]
    filesystem, inner = pafs.FileSystem.from_uri(path)
    return filesystem, inner


def _uri(filesystem: pafs.FileSystem, inner: str, like: str) -> str:
    # Give back paths in the form the caller used: URIs stay URIs, local paths stay local.
    if isinstance(filesystem, pafs.LocalFileSystem) and "://" not in like:
        return inner
    return f"{urlparse(like).scheme}://{inner}"


def delete_dir(path: str, *, storage_options: StorageOptions = None) -> None:
    """Remove a folder and everything under it; nothing happens when it does not exist."""
    if "://" not in path:
        shutil.rmtree(path, ignore_errors=True)
        return
    filesystem, inner = filesystem_for(path, storage_options)
    if filesystem.get_file_info(inner).type != pafs.FileType.NotFound:
        filesystem.delete_dir(inner)


def list_parquet(folder: str, *, storage_options: StorageOptions = None) -> list[str]:
    """The parquet files under a folder, sorted (engines' marker files such as _SUCCESS are skipped)."""
    filesystem, inner = filesystem_for(folder, storage_options)
    infos = filesystem.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    return sorted(_uri(filesystem, info.path, folder) for info in infos
                  if info.type == pafs.FileType.File and info.path.endswith(".parquet")
                  and not os.path.basename(info.path).startswith(("_", ".")))


# --- Delta ---------------------------------------------------------------------------------

def _delta(path: str, storage_options: StorageOptions, version: int | None = None) -> DeltaTable:
    return DeltaTable(path, version=version, storage_options=dict(storage_options) if storage_options else None)


def _is_conflict(exc: Exception) -> bool:
    text = str(exc).lower()
    return isinstance(exc, CommitFailedError) or "conflict" in text or "already exists" in text


def _backoff(attempt: int) -> None:
    time.sleep(_BACKOFF_S * (2 ** attempt) * (0.5 + random.random()))


def replace_run(
    table_path: str, data: pa.Table | pa.RecordBatchReader, run_id: str, *, partition: bool = True,
    storage_options: StorageOptions = None,
) -> None:
    """Replace the rows of ``run_id`` in a Delta table with ``data`` in one commit.

    Readers see the old rows or the new ones, never a mix; other runs' rows are untouched, and
    new columns merge into the table schema. ``data`` may be a stream, so a large run does not
    need to fit in memory. A commit that loses a race with another run is retried (a stream once
    consumed cannot be written again, so delta-rs retries its commit; a table is rewritten).
    """
    predicate = _run_predicate(run_id)
    options = dict(storage_options) if storage_options else None
    attempts = COMMIT_ATTEMPTS if isinstance(data, pa.Table) else 1
    for attempt in range(attempts):
        try:
            write_deltalake(
                table_path, data, mode="overwrite", predicate=predicate,
                partition_by=["run_id"] if partition else None, schema_mode="merge", storage_options=options,
                commit_properties=CommitProperties(max_commit_retries=50),
            )
            return
        except (CommitFailedError, DeltaError) as exc:
            if attempt + 1 >= attempts or not _is_conflict(exc):
                raise
            _backoff(attempt)


def delete_run(table_path: str, run_id: str, *, storage_options: StorageOptions = None) -> None:
    """Remove the rows of ``run_id`` from a Delta table in one commit (none when it has no such rows)."""
    predicate = _run_predicate(run_id)
    try:
        table = _delta(table_path, storage_options)
    except TableNotFoundError:
        return
    if not table.file_uris(file_pruning_predicate=predicate):
        return
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            table.delete(predicate, commit_properties=CommitProperties(max_commit_retries=50))
            return
        except (CommitFailedError, DeltaError) as exc:
            if attempt + 1 >= COMMIT_ATTEMPTS or not _is_conflict(exc):
                raise
            _backoff(attempt)
            table = _delta(table_path, storage_options)


def read_run(table_path: str, run_id: str, columns: list[str] | None = None, *,
             storage_options: StorageOptions = None) -> pa.Table:
    """The rows of one run of a Delta table (empty table when the table does not exist)."""
    try:
        table = _delta(table_path, storage_options)
    except TableNotFoundError:
        return pa.table({})
    dataset = table.to_pyarrow_dataset()
    return dataset.to_table(columns=columns, filter=pads.field("run_id") == run_id)


def run_files(table_path: str, run_id: str, *, storage_options: StorageOptions = None) -> list[str]:
    """Parquet files holding one run's rows of a Delta table, for engines without a Delta reader.

    Those files do not hold the partition column ``run_id`` itself.
    """
    table = _delta(table_path, storage_options)
    return list(table.file_uris(file_pruning_predicate=_run_predicate(run_id)))


def _merged_schema(current: pa.Schema | None, incoming: pa.Schema, where: str) -> pa.Schema:
    """``current`` with ``incoming``'s new columns appended; a column whose type changed is an error."""
    if current is None:
        return incoming
    fields = list(current)
    for f in incoming:
        if f.name not in current.names:
            fields.append(f.with_nullable(True))
        elif not _same_type(current.field(f.name).type, f.type):
            raise InputError(f"{where}: column {f.name!r} is {current.field(f.name).type} in the table "
                             f"but {f.type} in the new rows")
    return pa.schema(fields)


def _same_type(a: pa.DataType, b: pa.DataType) -> bool:
    # delta-rs reports strings and lists as their large or view forms; those are the same column.
    def norm(t: pa.DataType) -> Any:
        if pa.types.is_large_string(t) or pa.types.is_string_view(t) or pa.types.is_string(t):
            return "string"
        if pa.types.is_large_binary(t) or pa.types.is_binary_view(t) or pa.types.is_binary(t):
            return "binary"
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) \
                or pa.types.is_large_list_view(t) or pa.types.is_fixed_size_list(t):
            return ("list", norm(t.value_type))
        if pa.types.is_timestamp(t):
            return ("timestamp", t.tz is not None)
        return t
    return bool(norm(a) == norm(b))


def _stats(metadata: pq.FileMetaData) -> str:
    """Delta file statistics (row count, null counts, min/max of simple columns) from a parquet footer."""
    schema = metadata.schema.to_arrow_schema()
    simple = {name for name in schema.names
              if pa.types.is_integer(schema.field(name).type) or pa.types.is_floating(schema.field(name).type)
              or pa.types.is_string(schema.field(name).type) or pa.types.is_large_string(schema.field(name).type)}
    columns = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    nulls: dict[str, int] = {}
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    for name in schema.names:
        index = columns.get(name)
        if index is None:
            continue
        total, lows, highs, complete = 0, [], [], True
        for group in range(metadata.num_row_groups):
            column_stats = metadata.row_group(group).column(index).statistics
            if column_stats is None or not column_stats.has_null_count:
                complete = False
                break
            total += column_stats.null_count
            if column_stats.has_min_max:
                lows.append(column_stats.min)
                highs.append(column_stats.max)
        if not complete:
            continue
        nulls[name] = total
        if name in simple and lows and len(lows) == metadata.num_row_groups:
            low, high = min(lows), max(highs)
            if not isinstance(low, str) or (len(low) <= 64 and len(high) <= 64):
                mins[name], maxs[name] = low, high
    return json.dumps({"numRecords": metadata.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls})


@dataclass(frozen=True)
class _Staged:
    path: str           # relative to the table root
    size: int
    metadata: pq.FileMetaData


def _move_into(files: list[str], table_path: str, subdir: str, storage_options: StorageOptions,
               token: str) -> tuple[pafs.FileSystem, str, list[_Staged]]:
    """Move files into ``table_path/subdir`` (a rename on disk, a server-side copy on object stores)."""
    filesystem, root = filesystem_for(table_path, storage_options)
    filesystem.create_dir(f"{root}/{subdir}", recursive=True)
    staged = []
    for i, source in enumerate(files):
        source_fs, source_path = filesystem_for(source, storage_options)
        relative = f"{subdir}/part-{token}-{i:05d}.parquet"
        target = f"{root}/{relative}"
        if source_path != target:
            if type(source_fs) is not type(filesystem):
                raise InputError(f"{source}: staged files must be on the same storage as {table_path}")
            filesystem.move(source_path, target)
        with filesystem.open_input_file(target) as handle:
            size = handle.size()
            metadata = pq.ParquetFile(handle).metadata
        staged.append(_Staged(relative, size, metadata))
    return filesystem, root, staged


def commit_files(table_path: str, files: list[str], run_id: str, *, schema: pa.Schema | None = None,
                 storage_options: StorageOptions = None, app_id: str | None = None,
                 txn_version: int | None = None) -> int:
    """Make parquet ``files`` the rows of ``run_id`` in a Delta table, in one transaction; return the rows.

    The files (written by Ray workers or Spark tasks, without the ``run_id`` column: the table
    is partitioned by it) move into the table's ``run_id=...`` folder, and one commit removes
    the run's old files and adds these. Nothing but footers is read. Readers see the old run or
    the new one. ``schema`` (without run_id) gives the table its columns when ``files`` is
    empty; new columns of the files merge into the table schema. The commit carries an
    application transaction ``(app_id, txn_version)``, so a retry of a commit that did land is a
    no-op; a commit that lost a race with another run is retried with backoff.
    """
    _run_predicate(run_id)
    token = uuid.uuid4().hex[:12]
    app_id = app_id or f"alray:{run_id}"
    txn_version = txn_version if txn_version is not None else time.time_ns() // 1000
    _, _, staged = _move_into(files, table_path, f"run_id={run_id}", storage_options, token)
    incoming = schema
    for item in staged:
        file_schema = item.metadata.schema.to_arrow_schema()
        if "run_id" in file_schema.names:
            raise InputError(f"{table_path}: staged file {item.path} holds a run_id column; drop it "
                             "(the table takes run_id from the partition)")
        incoming = _merged_schema(incoming, file_schema, f"table {table_path}")
    if incoming is None:
        raise ValueError("commit_files: give a schema when there are no files")
    incoming = pa.schema([pa.field("run_id", pa.string()), *incoming])
    now_ms = int(time.time() * 1000)
    adds = [AddAction(item.path, item.size, {"run_id": run_id}, now_ms, True, _stats(item.metadata))
            for item in staged]
    actions: list[AddAction | RemoveAction] = list(adds)
    properties = CommitProperties(app_transactions=[Transaction(app_id, txn_version, now_ms)],
                                  custom_metadata={"alray.run_id": run_id}, max_commit_retries=50)
    options = dict(storage_options) if storage_options else None
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            try:
                table = _delta(table_path, storage_options)
            except TableNotFoundError:
                create_table_with_add_actions(table_path, _delta_schema(incoming), adds, mode="error",
                                              partition_by=["run_id"], storage_options=options,
                                              commit_properties=properties)
                return _rows(staged)
            if table.transaction_version(app_id) == txn_version:
                return _rows(staged)  # an earlier attempt landed before its answer was lost
            if "run_id" not in table.metadata().partition_columns:
                raise InputError(f"{table_path}: not partitioned by run_id; cannot commit files to it")
            current = pa.schema(table.schema().to_arrow())
            merged = _merged_schema(current, incoming, f"table {table_path}")
            table.create_write_transaction(actions, "overwrite", merged, partition_by=["run_id"],
                                           partition_filters=[("run_id", "=", run_id)],
                                           commit_properties=properties)
            return _rows(staged)
        except (CommitFailedError, DeltaError) as exc:
            if attempt + 1 >= COMMIT_ATTEMPTS or not _is_conflict(exc):
                raise
            _backoff(attempt)
    raise AssertionError("unreachable")


def _rows(staged: list[_Staged]) -> int:
    return sum(item.metadata.num_rows for item in staged)


def _delta_schema(schema: pa.Schema) -> Any:
    from deltalake import Schema

    return Schema.from_arrow(schema)


# --- plain parquet folders -------------------------------------------------------------------

def _parquet_swap(table_path: str, fill: Any, run_id: str, storage_options: StorageOptions) -> None:
    """Fill a fresh hidden folder, then swap it in for ``run_id=...``.

    Plain parquet has no log: readers may see the run missing for the instant between the two
    renames (on object stores, for the copy), never half of it. Choose Delta or Iceberg when
    readers must never see that.
    """
    _run_predicate(run_id)
    filesystem, root = filesystem_for(table_path, storage_options)
    fresh = f"{root}/_tmp-{run_id}-{uuid.uuid4().hex[:8]}"
    filesystem.create_dir(fresh, recursive=True)
    fill(filesystem, fresh)
    final, old = f"{root}/run_id={run_id}", f"{root}/_old-{run_id}-{uuid.uuid4().hex[:8]}"
    replaced = filesystem.get_file_info(final).type != pafs.FileType.NotFound
    if replaced:
        filesystem.move(final, old)
    filesystem.move(fresh, final)
    if replaced:
        filesystem.delete_dir(old)


def parquet_replace_run(table_path: str, data: pa.Table | pa.RecordBatchReader, run_id: str, *,
                        storage_options: StorageOptions = None) -> None:
    """Replace ``run_id``'s folder of a plain hive-partitioned parquet table with ``data``."""

    def fill(filesystem: pafs.FileSystem, folder: str) -> None:
        reader = data.to_reader() if isinstance(data, pa.Table) else data
        schema = pa.schema([f for f in reader.schema if f.name != "run_id"])
        with pq.ParquetWriter(f"{folder}/part-00000.parquet", schema, filesystem=filesystem) as writer:
            for batch in iter_batches(reader):
                writer.write_batch(batch.select(schema.names))

    _parquet_swap(table_path, fill, run_id, storage_options)


def parquet_commit_files(table_path: str, files: list[str], run_id: str, *,
                         storage_options: StorageOptions = None) -> int:
    """Make parquet ``files`` the ``run_id=...`` folder of a plain parquet table; return the rows."""
    rows = 0

    def fill(filesystem: pafs.FileSystem, folder: str) -> None:
        nonlocal rows
        for i, source in enumerate(files):
            target = f"{folder}/part-{i:05d}.parquet"
            filesystem.move(filesystem_for(source, storage_options)[1], target)
            rows += pq.read_metadata(target, filesystem=filesystem).num_rows

    _parquet_swap(table_path, fill, run_id, storage_options)
    return rows


def _hive_dataset(table_path: str, storage_options: StorageOptions) -> pads.Dataset | None:
    filesystem, root = filesystem_for(table_path, storage_options)
    if filesystem.get_file_info(root).type == pafs.FileType.NotFound:
        return None
    return pads.dataset(root, filesystem=filesystem, format="parquet",
                        partitioning=pads.partitioning(pa.schema([("run_id", pa.string())]), flavor="hive"),
                        exclude_invalid_files=False, ignore_prefixes=["_", "."])


def parquet_read_run(table_path: str, run_id: str | None, columns: list[str] | None = None, *,
                     storage_options: StorageOptions = None, missing_ok: bool = True) -> pa.Table:
    """The rows of one run (every row when ``run_id`` is None) of a plain parquet table."""
    dataset = _hive_dataset(table_path, storage_options)
    if dataset is None:
        if missing_ok:
            return pa.table({})
        raise InputError(f"table {table_path}: not found")
    return dataset.to_table(columns=columns, filter=None if run_id is None else pads.field("run_id") == run_id)


def parquet_run_files(table_path: str, run_id: str, *, storage_options: StorageOptions = None) -> list[str]:
    """The files of one run of a plain parquet table."""
    _run_predicate(run_id)
    return list_parquet(_join(table_path, f"run_id={run_id}"), storage_options=storage_options)


# --- Iceberg --------------------------------------------------------------------------------

def iceberg_properties(catalog: IcebergCatalog, storage_options: StorageOptions) -> dict[str, str]:
    """pyiceberg catalog properties: the catalog's own, plus S3 settings from delta-rs style options."""
    properties = {"uri": catalog.uri, **dict(catalog.properties)}
    if catalog.type == "rest":
        properties["type"] = "rest"
    if catalog.warehouse:
        properties["warehouse"] = catalog.warehouse
    names = {"access_key": "s3.access-key-id", "secret_key": "s3.secret-access-key",
             "session_token": "s3.session-token", "region": "s3.region", "endpoint_override": "s3.endpoint"}
    for key, value in (storage_options or {}).items():
        target = _S3_KEYS.get(key.lower())
        if target:
            properties.setdefault(names[target], value)
    return properties


def open_catalog(catalog: IcebergCatalog, storage_options: StorageOptions = None) -> Any:
    """A pyiceberg catalog: SQL (sqlite file by default) or REST."""
    properties = iceberg_properties(catalog, storage_options)
    if catalog.type == "sql":
        from pyiceberg.catalog.sql import SqlCatalog

        return SqlCatalog(catalog.name, **properties)
    from pyiceberg.catalog import load_catalog

    return load_catalog(catalog.name, **properties)


@dataclass(frozen=True)
class IcebergTarget:
    """One Iceberg output table: its catalog, name and location."""

    catalog: IcebergCatalog
    name: str
    location: str
    storage_options: Mapping[str, str] | None = field(default=None, hash=False, compare=False)

    @property
    def identifier(self) -> str:
        """``namespace.name``."""
        return f"{self.catalog.namespace}.{self.name}"

    def load(self, schema: pa.Schema | None = None) -> Any:
        """The table, created partitioned by run_id (when ``schema`` is given) if it does not exist."""
        from pyiceberg.exceptions import NoSuchTableError

        catalog = open_catalog(self.catalog, self.storage_options)
        try:
            return catalog.load_table(self.identifier)
        except NoSuchTableError:
            if schema is None:
                return None
        from pyiceberg.exceptions import TableAlreadyExistsError

        catalog.create_namespace_if_not_exists(self.catalog.namespace)
        try:
            table = catalog.create_table(self.identifier, schema=schema, location=self.location)
            with table.update_spec() as spec:
                spec.add_identity("run_id")
        except TableAlreadyExistsError:  # another run created it first
            pass
        return catalog.load_table(self.identifier)


def _iceberg_commit(target: IcebergTarget, schema: pa.Schema, write: Any) -> None:
    """Merge ``schema`` into the table, then run ``write(transaction)`` as one commit, retried on conflict."""
    from pyiceberg.exceptions import CommitFailedException

    for attempt in range(COMMIT_ATTEMPTS):
        table = target.load(schema)
        try:
            with table.update_schema() as update:
                update.union_by_name(schema)
            table = target.load()
            with warnings.catch_warnings():
                # A run's first write has nothing to delete; pyiceberg warns about that.
                warnings.filterwarnings("ignore", message="Delete operation did not match any records")
                with table.transaction() as transaction:
                    write(transaction)
            return
        except CommitFailedException:
            if attempt + 1 >= COMMIT_ATTEMPTS:
                raise
            _backoff(attempt)


def iceberg_replace_run(target: IcebergTarget, data: pa.Table | pa.RecordBatchReader, run_id: str) -> None:
    """Replace ``run_id``'s rows of an Iceberg table with ``data`` in one snapshot commit, batch by batch."""
    _run_predicate(run_id)
    reader = data.to_reader() if isinstance(data, pa.Table) else data
    chunks: list[pa.RecordBatch] = []  # a stream can be read once; a retried commit reuses what was read

    def write(transaction: Any) -> None:
        transaction.delete(_iceberg_run_filter(run_id))
        for batch in chunks:
            transaction.append(pa.Table.from_batches([batch]))
        for batch in iter_batches(reader):
            chunks.append(batch)
            transaction.append(pa.Table.from_batches([batch]))

    _iceberg_commit(target, reader.schema, write)


def iceberg_commit_files(target: IcebergTarget, files: list[str], run_id: str, *, schema: pa.Schema | None = None,
                         storage_options: StorageOptions = None) -> int:
    """Register parquet ``files`` (with their run_id column) as ``run_id``'s rows of an Iceberg table."""
    _run_predicate(run_id)
    token = uuid.uuid4().hex[:12]
    _, root, staged = _move_into(files, target.location, f"data/run_id={run_id}", storage_options, token)
    incoming = schema
    for item in staged:
        incoming = _merged_schema(incoming, item.metadata.schema.to_arrow_schema(), f"table {target.identifier}")
    if incoming is None:
        raise ValueError("commit_files: give a schema when there are no files")
    if "run_id" not in incoming.names:
        raise InputError(f"table {target.identifier}: staged files need their run_id column for Iceberg")
    paths = [_uri(filesystem_for(target.location, storage_options)[0], f"{root}/{item.path}", target.location)
             for item in staged]

    def write(transaction: Any) -> None:
        transaction.delete(_iceberg_run_filter(run_id))
        if paths:
            transaction.add_files(paths)

    _iceberg_commit(target, incoming, write)
    return _rows(staged)


def iceberg_delete_run(target: IcebergTarget, run_id: str) -> None:
    """Remove the rows of ``run_id`` from an Iceberg table in one snapshot (none when it does not exist)."""
    table = target.load()
    if table is None:
        return
    run_filter = _iceberg_run_filter(run_id)
    _iceberg_commit(target, table.schema().as_arrow(), lambda transaction: transaction.delete(run_filter))


def iceberg_read_run(target: IcebergTarget, run_id: str | None, columns: list[str] | None = None, *,
                     missing_ok: bool = True) -> pa.Table:
    """The rows of one run (every row when ``run_id`` is None) of an Iceberg table."""
    from pyiceberg.expressions import AlwaysTrue

    table = target.load()
    if table is None:
        if missing_ok:
            return pa.table({})
        raise InputError(f"table {target.identifier}: not found in the catalog")
    row_filter: Any = AlwaysTrue() if run_id is None else _iceberg_run_filter(run_id)
    return table.scan(row_filter=row_filter, selected_fields=tuple(columns) if columns else ("*",)).to_arrow()


def iceberg_run_files(target: IcebergTarget, run_id: str) -> list[str]:
    """The data files of one run of an Iceberg table (they hold the run_id column)."""
    table = target.load()
    if table is None:
        return []
    tasks = list(table.scan(row_filter=_iceberg_run_filter(run_id)).plan_files())
    refuse_delete_files(tasks, target.identifier)
    return [task.file.file_path for task in tasks]


def _iceberg_run_filter(run_id: str) -> str:
    # pyiceberg parses this row filter; the run id alphabet is safe to quote.
    return _run_predicate(run_id).replace(" = ", " == ")


def refuse_delete_files(tasks: Iterable[Any], name: str) -> None:
    """Plain parquet readers would resurrect rows that Iceberg delete files remove: refuse those tables."""
    if any(task.delete_files for task in tasks):
        raise InputError(f"{name}: Iceberg tables with delete files (merge-on-read deletes) are not supported; "
                         "compact the table first")


# --- exclusions ------------------------------------------------------------------------------

def previously_selected_ids(lake: Lake, run_id: str) -> pa.Array:
    """Distinct ids selected by the other succeeded runs of the lake's ranking table.

    A run that has not succeeded (running, failed) does not count, nor does ``run_id`` itself,
    so a rerun sees the same exclusions as the first try. Empty when the table does not exist.
    """
    import pyarrow.compute as pc

    ranking = _read_all(lake, "ranking", ["run_id", "id", "selected"])
    if ranking.num_rows == 0:
        return pa.array([], pa.string())
    ranking = ranking.filter(pc.and_(pc.equal(ranking.column("selected"), True),
                                     pc.not_equal(ranking.column("run_id"), run_id)))
    runs = _read_all(lake, "runs", ["run_id", "status"])
    if runs.num_rows:
        succeeded = runs.filter(pc.equal(runs.column("status"), "succeeded")).column("run_id")
        ranking = ranking.filter(pc.is_in(ranking.column("run_id"), value_set=succeeded.combine_chunks()))
    return pc.unique(ranking.column("id").combine_chunks().cast(pa.string()))


def _read_all(lake: Lake, name: str, columns: list[str]) -> pa.Table:
    try:
        return lake.read_table(name, columns=columns)
    except InputError:
        return pa.table({})


# --- streams ---------------------------------------------------------------------------------

def reader_from_batches(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> pa.RecordBatchReader:
    """A RecordBatchReader over batches, so a transformed stream can be written to a table."""
    return pa.RecordBatchReader.from_batches(schema, iter(batches))


def reshape_parquet(source: str, folder: str, *, columns: Mapping[str, str | pa.Scalar],
                    filter: pads.Expression | None = None, storage_options: StorageOptions = None) -> str | None:
    """Write the rows of one parquet file that pass ``filter`` to a new file in ``folder``; return its path.

    ``columns`` maps each output column to a source column name or a constant (a pa.Scalar).
    Meant to run where the file is (a Ray task, a Spark task): one file at a time, batch by
    batch. Returns None (and writes nothing) when no row passes.
    """
    filesystem, inner = filesystem_for(source, storage_options)
    dataset = pads.dataset(inner, format="parquet", filesystem=filesystem)
    wanted = sorted({c for c in columns.values() if isinstance(c, str)})
    # No read-ahead: by default the scanner buffers 16 batches of each of 4 files, which for a
    # big staged file held most of it in memory at once.
    reader = dataset.scanner(columns=wanted, filter=filter, batch_size=16_384, batch_readahead=0,
                             fragment_readahead=0).to_reader()
    target_fs, target_folder = filesystem_for(folder, storage_options)
    target = f"{target_folder}/part-{uuid.uuid4().hex}.parquet"
    writer: pq.ParquetWriter | None = None
    try:
        for batch in iter_batches(reader):
            if batch.num_rows == 0:
                continue
            arrays = [batch.column(value) if isinstance(value, str) else pa.array([value.as_py()] * batch.num_rows,
                                                                                   value.type)
                      for value in columns.values()]
            out = pa.RecordBatch.from_arrays(arrays, names=list(columns))
            if writer is None:
                target_fs.create_dir(target_folder, recursive=True)
                writer = pq.ParquetWriter(target, out.schema, filesystem=target_fs)
            writer.write_batch(out)
    finally:
        if writer is not None:
            writer.close()
    return None if writer is None else _uri(target_fs, target, folder)


# --- inputs -------------------------------------------------------------------------------

def _expand_parquet(path: str, storage_options: StorageOptions = None, *, folders: bool = True) -> list[str]:
    """Files of a parquet path; a local folder stays one entry unless ``folders`` is False."""
    if "://" in path:
        return _expand_remote(path, storage_options)
    if any(ch in path for ch in "*?["):
        files = sorted(glob.glob(path))
        if not files:
            raise InputError(f"{path}: no parquet file matches this pattern")
        return files
    if not os.path.exists(path):
        raise InputError(f"{path}: table not found")
    if os.path.isdir(path) and not folders:
        return _folder_files(path, storage_options)
    return [path]


def _folder_files(path: str, storage_options: StorageOptions) -> list[str]:
    files = list_parquet(path, storage_options=storage_options)
    if not files:
        raise InputError(f"{path}: no parquet file in this folder")
    return files


def _expand_remote(path: str, storage_options: StorageOptions) -> list[str]:
    filesystem, inner = filesystem_for(path, storage_options)
    if any(ch in inner for ch in "*?["):
        parent = inner[: min(inner.find(ch) for ch in "*?[" if ch in inner)].rsplit("/", 1)[0]
        infos = filesystem.get_file_info(pafs.FileSelector(parent, recursive=True, allow_not_found=True))
        files = sorted(_uri(filesystem, i.path, path) for i in infos
                       if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.path, inner))
        if not files:
            raise InputError(f"{path}: no parquet file matches this pattern")
        return files
    info = filesystem.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"{path}: table not found")
    if info.type == pafs.FileType.Directory:
        return _folder_files(path, storage_options)
    return [path]


def _has_deletion_vectors(table: DeltaTable) -> bool:
    # These file lists feed plain parquet readers, which would resurrect rows a DV deletes.
    if "deletionVectors" not in (table.protocol().reader_features or []):
        return False
    return pa.RecordBatchReader.from_stream(table.deletion_vectors()).read_all().num_rows > 0


def parquet_dataset(files: list[str], *, storage_options: StorageOptions = None) -> pads.Dataset:
    """A pyarrow dataset over parquet files (paths or URIs), or over one folder of them."""
    filesystem, _ = filesystem_for(files[0], storage_options)
    inner = [filesystem_for(f, storage_options)[1] for f in files]
    return pads.dataset(inner[0] if len(inner) == 1 else inner, format="parquet", filesystem=filesystem)


def table_files(path: str, fmt: str, *, version: int | None = None, name: str = "pool.path",
                storage_options: StorageOptions = None, folders: bool = True) -> list[str]:
    """Parquet files of a parquet path (file, folder or glob) or of a Delta table version.

    A local folder stays one entry (readers list it) unless ``folders`` is False.
    """
    if fmt == "parquet":
        return _expand_parquet(path, storage_options, folders=folders)
    return open_delta(path, version=version, name=name, storage_options=storage_options).files


@dataclass(frozen=True)
class DeltaSnapshot:
    """What a reader needs of one Delta table version: its schema, its data files and, for each
    file, the values of the partition columns (the files of a partitioned table lack them)."""

    schema: pa.Schema
    files: list[str]
    partitions: list[dict[str, Any]]


def open_delta(path: str, *, version: int | None = None, name: str = "pool.path",
               storage_options: StorageOptions = None) -> DeltaSnapshot:
    """Open a Delta table version once for its schema, files and partition values."""
    try:
        table = _delta(path, storage_options, version)
    except TableNotFoundError:
        raise InputError(f"{name}: {path}: no Delta table there") from None
    except Exception as exc:  # delta-rs raises several types for a missing version
        raise InputError(f"{name}: {path}: cannot open Delta table ({str(exc).splitlines()[0]})") from None
    if _has_deletion_vectors(table):
        raise InputError(f"{name}: {path}: Delta tables with deletion vectors are not supported")
    schema = pa.schema(table.schema().to_arrow())
    files = list(table.file_uris())
    columns = list(table.metadata().partition_columns)
    if not columns:
        return DeltaSnapshot(schema, files, [{} for _ in files])
    actions = pa.table(table.get_add_actions(flatten=True))
    paths = actions.column("path").to_pylist()
    values = {c: actions.column(f"partition.{c}").to_pylist() for c in columns}
    if [os.path.basename(p) for p in paths] != [os.path.basename(f) for f in files]:
        raise InputError(f"{name}: {path}: cannot match the Delta table's files to their partition values")
    return DeltaSnapshot(schema, files, [{c: values[c][i] for c in columns} for i in range(len(files))])


def open_table(path: str, fmt: str, *, version: int | None = None, name: str = "pool.path",
               storage_options: StorageOptions = None, folders: bool = True) -> tuple[pa.Schema, list[str]]:
    """Arrow schema and files of an input table (parquet or Delta), from one listing or one open.

    ``folders`` as in :func:`table_files`; the schema is read from the first file's footer.
    """
    if fmt == "delta":
        snapshot = open_delta(path, version=version, name=name, storage_options=storage_options)
        return snapshot.schema, snapshot.files
    files = _expand_parquet(path, storage_options, folders=folders)
    try:
        return parquet_dataset(files, storage_options=storage_options).schema, files
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{name}: {path}: not a readable parquet table ({str(exc).splitlines()[0]})") from None


def check_pool_schema(schema: pa.Schema, path: str) -> str:
    """Check the pool has a string ``id`` and one payload column; return the payload's name."""
    if "id" not in schema.names:
        raise InputError(f"pool {path}: missing required column 'id' (found {schema.names})")
    if not (pa.types.is_string(schema.field("id").type) or pa.types.is_large_string(schema.field("id").type)):
        raise InputError(f"pool {path}: column 'id' must be a string, found {schema.field('id').type}")
    payloads = [c for c in PAYLOAD_COLUMNS if c in schema.names]
    if not payloads:
        raise InputError(f"pool {path}: missing a payload column: one of {list(PAYLOAD_COLUMNS)}")
    if len(payloads) > 1:
        raise InputError(f"pool {path}: expected one payload column, found {payloads}")
    payload = payloads[0]
    field_type = schema.field(payload).type
    expected = {
        "image": pa.types.is_binary(field_type) or pa.types.is_large_binary(field_type),
        "uri": pa.types.is_string(field_type) or pa.types.is_large_string(field_type),
        "text": pa.types.is_string(field_type) or pa.types.is_large_string(field_type),
        "features": pa.types.is_list(field_type) or pa.types.is_large_list(field_type)
        or pa.types.is_fixed_size_list(field_type),
    }[payload]
    if not expected:
        raise InputError(f"pool {path}: column {payload!r} has an unexpected type {field_type}")
    return payload


def read_column(path: str, fmt: str, column: str, *, name: str,
                storage_options: StorageOptions = None) -> pa.ChunkedArray:
    """One column of a small table (parquet or Delta) such as the labeled set or a query table."""
    schema, files = open_table(path, fmt, name=name, storage_options=storage_options)
    if column not in schema.names:
        raise InputError(f"{name}: {path}: missing required column {column!r}")
    return parquet_dataset(files, storage_options=storage_options).to_table(columns=[column]).column(column)


def read_ids(path: str, fmt: str, *, name: str, storage_options: StorageOptions = None) -> pa.Array:
    """The ``id`` column of a small table such as the labeled set."""
    ids = read_column(path, fmt, "id", name=name, storage_options=storage_options)
    return ids.combine_chunks().cast(pa.string())


def iter_batches(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """Iterate a reader's batches."""
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return


def ensure_dir(path: str) -> None:
    """Create a local folder and its parents; object-store paths need none."""
    if "://" not in path:
        Path(path).mkdir(parents=True, exist_ok=True)
