"""Delta Lake output tables through delta-rs: a run replaced in one commit, retried on conflict.

Tables are partitioned by ``run_id``; a run's parquet files live in its ``run_id=...`` folder
and do not hold the column themselves. :func:`commit_files` commits files that engines wrote,
reading only their footers, so the driver never handles the rows.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as pads
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

from alray.errors import InputError
from alray.lake.backend import (
    COMMIT_ATTEMPTS,
    CommitConflictError,
    backoff,
    guarded_update,
    merged_schema,
    move_into,
    rows_of_run,
    run_predicate,
    staged_rows,
)
from alray.lake.filesystems import StorageOptions

if TYPE_CHECKING:
    from alray.lake.outputs import Lake


def delta_table(path: str, storage_options: StorageOptions, version: int | None = None) -> DeltaTable:
    """Open a Delta table (a version of it); TableNotFoundError when there is none."""
    return DeltaTable(path, version=version, storage_options=dict(storage_options) if storage_options else None)


def _is_conflict(exc: Exception) -> bool:
    text = str(exc).lower()
    return isinstance(exc, CommitFailedError) or "conflict" in text or "already exists" in text


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
    predicate = run_predicate(run_id)
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
            backoff(attempt)


def update_run(table_path: str, run_id: str, update: Callable[[pa.Table], pa.Table | None], *, schema: pa.Schema,
               storage_options: StorageOptions = None) -> bool:
    """Replace ``run_id``'s rows with ``update(rows)`` unless another commit changed them since the read.

    The write is made against the version the rows were read from, so delta-rs's conflict check
    refuses it when a concurrent commit added or removed files of that run (commits to other runs
    pass); the read and ``update`` then run again. A table that did not exist is created with a
    create-only write, which fails when another writer created it first. False when ``update``
    gave None (no commit).
    """
    predicate = run_predicate(run_id)

    def write(table: DeltaTable | None, rows: pa.Table) -> None:
        _write_against(table, table_path, rows, predicate=predicate, storage_options=storage_options)

    return guarded_update(lambda: _snapshot(table_path, schema, storage_options, run_id), write, update)


def guarded_add(table_path: str, add: Callable[[pa.Table], tuple[str, pa.Table] | None], *, schema: pa.Schema,
                storage_options: StorageOptions = None) -> bool:
    """Append the rows of a new run that ``add(every row)`` gives, only if the table is still at the version
    read: the commit is not retried by delta-rs (a retried append would pass its conflict check, as
    appends of other partitions do), so any commit in between sends it back to the read and ``add``."""

    def write(table: DeltaTable | None, new: tuple[str, pa.Table]) -> None:
        run_id, rows = new
        run_predicate(run_id)
        _write_against(table, table_path, rows, predicate=None, storage_options=storage_options)

    return guarded_update(lambda: _snapshot(table_path, schema, storage_options, None), write, add)


def _snapshot(table_path: str, schema: pa.Schema, storage_options: StorageOptions,
              run_id: str | None) -> tuple[DeltaTable | None, pa.Table]:
    """The table as it is now and its rows (one run's, or all); None and no rows when it does not exist."""
    try:
        table = delta_table(table_path, storage_options)
    except TableNotFoundError:
        return None, schema.empty_table()
    dataset = table.to_pyarrow_dataset()
    return table, dataset.to_table(filter=pads.field("run_id") == run_id) if run_id else dataset.to_table()


def _write_against(table: DeltaTable | None, table_path: str, rows: pa.Table, *, predicate: str | None,
                   storage_options: StorageOptions) -> None:
    """Write ``rows`` against the version ``table`` was read at: replacing ``predicate``'s rows (retried by
    delta-rs while its conflict check passes), or appended with no retry at all; or, when there was no
    table, create it (create-only). CommitConflictError when that version is stale."""
    try:
        if table is None:
            # delta-rs would retry a lost race for version 0 as version 1: no retry, so it fails instead
            write_deltalake(table_path, rows, mode="error", partition_by=["run_id"],
                            storage_options=dict(storage_options) if storage_options else None,
                            commit_properties=CommitProperties(max_commit_retries=0))
        elif predicate is not None:
            write_deltalake(table, rows, mode="overwrite", predicate=predicate, partition_by=["run_id"],
                            schema_mode="merge", commit_properties=CommitProperties(max_commit_retries=50))
        else:
            write_deltalake(table, rows, mode="append", partition_by=["run_id"], schema_mode="merge",
                            commit_properties=CommitProperties(max_commit_retries=0))
    except (CommitFailedError, DeltaError) as exc:
        if _is_conflict(exc):
            raise CommitConflictError(str(exc)) from exc
        raise


def delete_run(table_path: str, run_id: str, *, storage_options: StorageOptions = None) -> None:
    """Remove the rows of ``run_id`` from a Delta table in one commit (none when it has no such rows)."""
    predicate = run_predicate(run_id)
    try:
        table = delta_table(table_path, storage_options)
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
            backoff(attempt)
            table = delta_table(table_path, storage_options)


def read_run(table_path: str, run_id: str, columns: list[str] | None = None, *,
             storage_options: StorageOptions = None, only: str | None = None) -> pa.Table:
    """The rows of one run of a Delta table (empty table when the table does not exist); with
    ``only``, those where that boolean column is true."""
    try:
        table = delta_table(table_path, storage_options)
    except TableNotFoundError:
        return pa.table({})
    dataset = table.to_pyarrow_dataset()
    return dataset.to_table(columns=columns, filter=rows_of_run(run_id, only))


def run_files(table_path: str, run_id: str, *, storage_options: StorageOptions = None) -> list[str]:
    """Parquet files holding one run's rows of a Delta table, for engines without a Delta reader.

    Those files do not hold the partition column ``run_id`` itself.
    """
    table = delta_table(table_path, storage_options)
    return list(table.file_uris(file_pruning_predicate=run_predicate(run_id)))


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
    run_predicate(run_id)
    token = uuid.uuid4().hex[:12]
    app_id = app_id or f"alray:{run_id}"
    txn_version = txn_version if txn_version is not None else time.time_ns() // 1000
    _, _, staged = move_into(files, table_path, f"run_id={run_id}", storage_options, token)
    incoming = schema
    for item in staged:
        file_schema = item.metadata.schema.to_arrow_schema()
        if "run_id" in file_schema.names:
            raise InputError(f"{table_path}: staged file {item.path} holds a run_id column; drop it "
                             "(the table takes run_id from the partition)")
        incoming = merged_schema(incoming, file_schema, f"table {table_path}")
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
                table = delta_table(table_path, storage_options)
            except TableNotFoundError:
                create_table_with_add_actions(table_path, _delta_schema(incoming), adds, mode="error",
                                              partition_by=["run_id"], storage_options=options,
                                              commit_properties=properties)
                return staged_rows(staged)
            if table.transaction_version(app_id) == txn_version:
                return staged_rows(staged)  # an earlier attempt landed before its answer was lost
            if "run_id" not in table.metadata().partition_columns:
                raise InputError(f"{table_path}: not partitioned by run_id; cannot commit files to it")
            current = pa.schema(table.schema().to_arrow())
            merged = merged_schema(current, incoming, f"table {table_path}")
            table.create_write_transaction(actions, "overwrite", merged, partition_by=["run_id"],
                                           partition_filters=[("run_id", "=", run_id)],
                                           commit_properties=properties)
            return staged_rows(staged)
        except (CommitFailedError, DeltaError) as exc:
            if attempt + 1 >= COMMIT_ATTEMPTS or not _is_conflict(exc):
                raise
            backoff(attempt)
    raise AssertionError("unreachable")


def _delta_schema(schema: pa.Schema) -> Any:
    from deltalake import Schema

    return Schema.from_arrow(schema)


@dataclass(frozen=True)
class DeltaBackend:
    """The lake's tables as Delta tables (the default format)."""

    lake: Lake

    def replace_run(self, name: str, data: pa.Table | pa.RecordBatchReader, run_id: str, *,
                    partition: bool = True) -> None:
        """See :meth:`TableBackend.replace_run`; :func:`replace_run` on the table."""
        replace_run(self.lake.table(name), data, run_id, partition=partition,
                    storage_options=self.lake.storage_options)

    def commit_files(self, name: str, files: list[str], run_id: str, *, schema: pa.Schema | None = None) -> int:
        """See :meth:`TableBackend.commit_files`; files without the run_id column."""
        return commit_files(self.lake.table(name), files, run_id, schema=schema,
                            storage_options=self.lake.storage_options)

    def delete_run(self, name: str, run_id: str) -> None:
        """See :meth:`TableBackend.delete_run`."""
        delete_run(self.lake.table(name), run_id, storage_options=self.lake.storage_options)

    def read_run(self, name: str, run_id: str, columns: list[str] | None = None, *, only: str | None = None,
                 ) -> pa.Table:
        """See :meth:`TableBackend.read_run`."""
        return read_run(self.lake.table(name), run_id, columns, storage_options=self.lake.storage_options, only=only)

    def read_table(self, name: str, columns: list[str] | None = None, *, only: str | None = None) -> pa.Table:
        """See :meth:`TableBackend.read_table`."""
        path = self.lake.table(name)
        try:
            table = delta_table(path, self.lake.storage_options)
        except TableNotFoundError:
            raise InputError(f"{name} table {path}: not found") from None
        return table.to_pyarrow_dataset().to_table(columns=columns, filter=rows_of_run(None, only))

    def run_files(self, name: str, run_id: str) -> list[str]:
        """See :meth:`TableBackend.run_files`; the files lack the run_id column."""
        return run_files(self.lake.table(name), run_id, storage_options=self.lake.storage_options)

    def keeps_run_id_in_files(self) -> bool:
        """False: a Delta table takes run_id from the partition folder."""
        return False

    def update_run(self, name: str, run_id: str, update: Callable[[pa.Table], pa.Table | None], *,
                   schema: pa.Schema) -> bool:
        """See :meth:`TableBackend.update_run`; :func:`update_run` on the table."""
        return update_run(self.lake.table(name), run_id, update, schema=schema,
                          storage_options=self.lake.storage_options)

    def guarded_add(self, name: str, add: Callable[[pa.Table], tuple[str, pa.Table] | None], *,
                    schema: pa.Schema) -> bool:
        """See :meth:`TableBackend.guarded_add`; :func:`guarded_add` on the table."""
        return guarded_add(self.lake.table(name), add, schema=schema, storage_options=self.lake.storage_options)
