"""Plain parquet output tables: hive-partitioned ``run_id=...`` folders, a run swapped in by renames.

Plain parquet has no log: readers may see a run missing for the instant between two renames
(on object stores, for the copy), never half of it. Choose Delta or Iceberg when readers must
never see that.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from alray.errors import InputError
from alray.lake.backend import checked_run_id, rows_of_run
from alray.lake.filesystems import StorageOptions, delete_dir, filesystem_for, join_path, list_parquet
from alray.lake.streams import iter_batches
from alray.tables import without_run_id

if TYPE_CHECKING:
    from alray.lake.outputs import Lake


def _parquet_swap(table_path: str, fill: Callable[[pafs.FileSystem, str], None], run_id: str,
                  storage_options: StorageOptions) -> None:
    """Fill a fresh hidden folder, then swap it in for ``run_id=...``."""
    checked_run_id(run_id)
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
        schema = without_run_id(reader.schema, keep_run_id=False)
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


def parquet_delete_run(table_path: str, run_id: str, *, storage_options: StorageOptions = None) -> None:
    """Remove ``run_id``'s folder of a plain parquet table (nothing happens when it has none)."""
    delete_dir(join_path(table_path, f"run_id={checked_run_id(run_id)}"), storage_options=storage_options)


def _hive_dataset(table_path: str, storage_options: StorageOptions) -> pads.Dataset | None:
    filesystem, root = filesystem_for(table_path, storage_options)
    if filesystem.get_file_info(root).type == pafs.FileType.NotFound:
        return None
    partitioning = pads.partitioning(pa.schema([("run_id", pa.string())]), flavor="hive")
    dataset = pads.dataset(root, filesystem=filesystem, format="parquet", partitioning=partitioning,
                           exclude_invalid_files=False, ignore_prefixes=["_", "."])
    # pyarrow takes the schema of the first file it finds; runs written by a newer version add columns.
    schemas = [fragment.physical_schema for fragment in dataset.get_fragments()]
    if all(schema.equals(schemas[0]) for schema in schemas[1:]):
        return dataset
    try:
        unified = pa.unify_schemas([*schemas, pa.schema([("run_id", pa.string())])])
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column whose type changed: read as the first file says
        return dataset
    return pads.dataset(root, filesystem=filesystem, format="parquet", partitioning=partitioning,
                        exclude_invalid_files=False, ignore_prefixes=["_", "."], schema=unified)


def parquet_read_run(table_path: str, run_id: str | None, columns: list[str] | None = None, *,
                     storage_options: StorageOptions = None, missing_ok: bool = True,
                     only: str | None = None) -> pa.Table:
    """The rows of one run (every row when ``run_id`` is None) of a plain parquet table; with ``only``,
    those where that boolean column is true."""
    dataset = _hive_dataset(table_path, storage_options)
    if dataset is None:
        if missing_ok:
            return pa.table({})
        raise InputError(f"table {table_path}: not found")
    return dataset.to_table(columns=columns, filter=rows_of_run(run_id, only))


def parquet_run_files(table_path: str, run_id: str, *, storage_options: StorageOptions = None) -> list[str]:
    """The files of one run of a plain parquet table."""
    checked_run_id(run_id)
    return list_parquet(join_path(table_path, f"run_id={run_id}"), storage_options=storage_options)


@dataclass(frozen=True)
class ParquetBackend:
    """The lake's tables as plain hive-partitioned parquet folders."""

    lake: Lake

    def replace_run(self, name: str, data: pa.Table | pa.RecordBatchReader, run_id: str, *,
                    partition: bool = True) -> None:
        """See :meth:`TableBackend.replace_run`; always partitioned by run_id."""
        parquet_replace_run(self.lake.table(name), data, run_id, storage_options=self.lake.storage_options)

    def commit_files(self, name: str, files: list[str], run_id: str, *, schema: pa.Schema | None = None) -> int:
        """See :meth:`TableBackend.commit_files`; files without the run_id column (``schema`` is not needed)."""
        return parquet_commit_files(self.lake.table(name), files, run_id, storage_options=self.lake.storage_options)

    def delete_run(self, name: str, run_id: str) -> None:
        """See :meth:`TableBackend.delete_run`."""
        parquet_delete_run(self.lake.table(name), run_id, storage_options=self.lake.storage_options)

    def read_run(self, name: str, run_id: str, columns: list[str] | None = None, *, only: str | None = None,
                 ) -> pa.Table:
        """See :meth:`TableBackend.read_run`."""
        return parquet_read_run(self.lake.table(name), run_id, columns, storage_options=self.lake.storage_options,
                                only=only)

    def read_table(self, name: str, columns: list[str] | None = None, *, only: str | None = None) -> pa.Table:
        """See :meth:`TableBackend.read_table`."""
        return parquet_read_run(self.lake.table(name), None, columns, storage_options=self.lake.storage_options,
                                missing_ok=False, only=only)

    def run_files(self, name: str, run_id: str) -> list[str]:
        """See :meth:`TableBackend.run_files`; the files lack the run_id column."""
        return parquet_run_files(self.lake.table(name), run_id, storage_options=self.lake.storage_options)

    def keeps_run_id_in_files(self) -> bool:
        """False: the folder ``run_id=...`` holds the value."""
        return False

    def update_run(self, name: str, run_id: str, update: Callable[[pa.Table], pa.Table | None], *,
                   schema: pa.Schema) -> bool:
        """See :meth:`TableBackend.update_run`. Plain parquet has no log to check a concurrent writer
        against: the last writer of a run wins (choose Delta or Iceberg for concurrent writers)."""
        path = self.lake.table(name)
        rows = parquet_read_run(path, run_id, storage_options=self.lake.storage_options)
        new = update(rows if rows.num_columns else schema.empty_table())
        if new is None:
            return False
        parquet_replace_run(path, new, run_id, storage_options=self.lake.storage_options)
        return True

    def guarded_add(self, name: str, add: Callable[[pa.Table], tuple[str, pa.Table] | None], *,
                    schema: pa.Schema) -> bool:
        """See :meth:`TableBackend.guarded_add`. Unguarded, as ``update_run``: two writers at once may both
        add what they found new (choose Delta or Iceberg for concurrent writers)."""
        path = self.lake.table(name)
        rows = parquet_read_run(path, None, storage_options=self.lake.storage_options)
        new = add(rows if rows.num_columns else schema.empty_table())
        if new is None:
            return False
        parquet_replace_run(path, new[1], new[0], storage_options=self.lake.storage_options)
        return True
