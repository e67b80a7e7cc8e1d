"""The table-format backend protocol, and what the formats share: run ids, schema merges, staged files.

Every output table is partitioned by ``run_id`` and one run is replaced as a whole. A backend
(:mod:`alray.lake.delta`, :mod:`alray.lake.iceberg`, :mod:`alray.lake.parquet`) does that for
one table format; :class:`alray.lake.outputs.Lake` holds the backend its format names.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from alray.config import RUN_ID_PATTERN
from alray.errors import InputError
from alray.lake.filesystems import StorageOptions, filesystem_for

# Concurrent runs commit to the same table log; a lost race is retried after a jittered backoff.
COMMIT_ATTEMPTS = 8
_BACKOFF_S = 0.05

Change = TypeVar("Change")  # what a guarded update writes: a run's new rows, or a new run id and its rows


class TableBackend(Protocol):
    """One table format's way to replace, read and list the runs of a lake's tables, by table name."""

    def replace_run(self, name: str, data: pa.Table | pa.RecordBatchReader, run_id: str, *,
                    partition: bool = True) -> None:
        """Replace ``run_id``'s rows of table ``name`` with ``data`` (a table or a stream) in one commit.

        ``partition=False`` lets a format that can (Delta) keep a small table unpartitioned.
        """

    def commit_files(self, name: str, files: list[str], run_id: str, *, schema: pa.Schema | None = None) -> int:
        """Make parquet ``files`` (written by workers) the rows of ``run_id`` in table ``name``; return rows."""

    def delete_run(self, name: str, run_id: str) -> None:
        """Remove ``run_id``'s rows of table ``name`` in one commit; nothing happens when it has none."""

    def read_run(self, name: str, run_id: str, columns: list[str] | None = None, *, only: str | None = None,
                 ) -> pa.Table:
        """The rows of one run of table ``name`` (an empty table when the table does not exist); with
        ``only`` (a boolean column) the rows where it is true, filtered while the files stream in."""

    def read_table(self, name: str, columns: list[str] | None = None, *, only: str | None = None) -> pa.Table:
        """Every row of table ``name`` (with ``only``, where that boolean column is true); InputError when
        it does not exist."""

    def run_files(self, name: str, run_id: str) -> list[str]:
        """Parquet files holding one run's rows, for engines without a reader for the table format."""

    def keeps_run_id_in_files(self) -> bool:
        """Whether committed files carry the ``run_id`` column, or the table takes it from their path."""

    def update_run(self, name: str, run_id: str, update: Callable[[pa.Table], pa.Table | None], *,
                   schema: pa.Schema) -> bool:
        """Read ``run_id``'s rows of table ``name``, write ``update(rows)`` in their place; False when it gave None.

        The write lands only if no other writer changed that run's rows since the read (Delta's
        conflict check, Iceberg's snapshot assertion); otherwise the rows are read again and
        ``update`` runs again. ``schema`` gives the rows of a table that does not exist yet.
        """

    def guarded_add(self, name: str, add: Callable[[pa.Table], tuple[str, pa.Table] | None], *,
                    schema: pa.Schema) -> bool:
        """Read every row of table ``name`` and commit ``add(rows)`` (a new run id and its rows) beside them,
        only if no other writer committed to the table since the read; False when ``add`` gave None.

        For tables whose rows must be unique across runs (labels): ``add`` works out what is new
        from the whole table, and when another commit landed in between, the read and ``add`` run
        again. ``schema`` gives the rows of a table that does not exist yet (it is then created,
        and a table created by another writer meanwhile counts as such a commit).
        """


def checked_run_id(run_id: str) -> str:
    """``run_id`` when it is of the safe alphabet (so it can be quoted in predicates and paths)."""
    if not RUN_ID_PATTERN.match(run_id):
        raise ValueError(f"run_id: unsafe run id {run_id!r}")
    return run_id


def rows_of_run(run_id: str | None, only: str | None = None) -> pads.Expression | None:
    """The dataset filter of one run's rows (every run's when ``run_id`` is None; None: no filter);
    with ``only``, the rows where that boolean column is true."""
    rows = None if run_id is None else pads.field("run_id") == checked_run_id(run_id)
    if only is None:
        return rows
    true = pads.field(only) == True  # noqa: E712 (an expression)
    return true if rows is None else rows & true


def run_predicate(run_id: str) -> str:
    """The SQL predicate ``run_id = '...'`` of one run."""
    # The run id is validated to a safe alphabet, so quoting it in the predicate cannot break out.
    return f"run_id = '{checked_run_id(run_id)}'"


class CommitConflictError(Exception):
    """A guarded write lost a race: another writer changed the rows it read."""


def guarded_update(read: Callable[[], tuple[Any, pa.Table]], write: Callable[[Any, Change], None],
                   update: Callable[[pa.Table], Change | None]) -> bool:
    """Optimistic read-modify-write: ``read()`` gives a snapshot and rows, ``update(rows)`` what to write
    (None: nothing), ``write(snapshot, new)`` commits it against that snapshot or raises
    :class:`CommitConflictError`, and then it all runs again (with backoff)."""
    for attempt in range(COMMIT_ATTEMPTS):
        snapshot, rows = read()
        new = update(rows)
        if new is None:
            return False
        try:
            write(snapshot, new)
            return True
        except CommitConflictError:
            if attempt + 1 >= COMMIT_ATTEMPTS:
                raise
            backoff(attempt)
    raise AssertionError("unreachable")


def backoff(attempt: int) -> None:
    """Sleep before retrying a commit that lost a race: jittered, doubling with each attempt."""
    time.sleep(_BACKOFF_S * (2 ** attempt) * (0.5 + random.random()))


def merged_schema(current: pa.Schema | None, incoming: pa.Schema, where: str) -> pa.Schema:
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


@dataclass(frozen=True)
class Staged:
    """A worker's parquet file once moved into a table's folder, with its footer."""

    path: str           # relative to the table root
    size: int
    metadata: pq.FileMetaData


def move_into(files: list[str], table_path: str, subdir: str, storage_options: StorageOptions,
              token: str) -> tuple[pafs.FileSystem, str, list[Staged]]:
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
        staged.append(Staged(relative, size, metadata))
    return filesystem, root, staged


def staged_rows(staged: list[Staged]) -> int:
    """The rows of staged files, from their footers."""
    return sum(item.metadata.num_rows for item in staged)
