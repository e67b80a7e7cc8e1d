"""The output lake: its run-partitioned tables under one root, in the table format the config names.

Besides the tables every run writes, a detection run writes ``objects`` (one row per detected
object) and, when it selects objects, ``object_ranking``.

A :class:`Lake` picks its backend once, from :data:`BACKENDS`, and every read and write goes
through it. Large tables are written where the data is: engines write parquet files into
:meth:`Lake.staging`, and :meth:`Lake.commit_files` commits those files in one transaction, so the
driver handles file names and footers, never the rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.fs as pafs

from alray.lake.backend import TableBackend
from alray.lake.delta import DeltaBackend
from alray.lake.filesystems import delete_dir, filesystem_for, join_path
from alray.lake.iceberg import IcebergBackend, IcebergCatalog
from alray.lake.parquet import ParquetBackend

TABLE_NAMES = ("features", "ranking", "rejects", "runs", "labels", "round_items", "objects", "object_ranking",
               "pool_rows")
TableFormat = Literal["delta", "iceberg", "parquet"]

# The one place a table format's name meets its implementation.
BACKENDS: dict[str, Callable[[Lake], TableBackend]] = {
    "delta": DeltaBackend,
    "iceberg": IcebergBackend,
    "parquet": ParquetBackend,
}


@dataclass(frozen=True)
class Lake:
    """The output lake: one table per name under ``root``, each partitioned by run_id."""

    root: str
    format: TableFormat = "delta"
    storage_options: Mapping[str, str] | None = field(default=None, hash=False, compare=False)
    catalog: IcebergCatalog | None = None
    _backend: TableBackend = field(init=False, repr=False, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.format not in BACKENDS:
            raise ValueError(f"format: expected one of {tuple(BACKENDS)}, got {self.format!r}")
        object.__setattr__(self, "_backend", BACKENDS[self.format](self))

    @classmethod
    def from_output(cls, output: Any) -> Lake:
        """The lake an ``OutputConfig`` describes."""
        catalog = IcebergCatalog.for_output(output) if output.format == "iceberg" else None
        return cls(output.path, output.format, dict(output.storage_options) or None, catalog)

    def table(self, name: str) -> str:
        """Path of table ``name`` (one of :data:`TABLE_NAMES`)."""
        if name not in TABLE_NAMES:
            raise ValueError(f"name: expected one of {TABLE_NAMES}, got {name!r}")
        return join_path(self.root, name)

    def staging(self, run_id: str, name: str) -> str:
        """A fresh folder where workers write a run's parquet files before they are committed.

        Absolute for a local lake: Ray workers and Spark tasks may run in another directory.
        """
        root = self.root if "://" in self.root else os.path.abspath(self.root)
        return join_path(root, "_staging", run_id, f"{name}-{uuid.uuid4().hex[:8]}")

    def clear_staging(self, run_id: str) -> None:
        """Remove a run's staging files once committed."""
        delete_dir(join_path(self.root, "_staging", run_id), storage_options=self.storage_options)

    def filesystem(self) -> pafs.FileSystem:
        """A pyarrow file system for the lake's files (what run_files returns lives there)."""
        return filesystem_for(self.root, self.storage_options)[0]

    # What follows is the backend's: see TableBackend.

    def replace_run(self, name: str, data: pa.Table | pa.RecordBatchReader, run_id: str, *,
                    partition: bool = True) -> None:
        """Replace ``run_id``'s rows of table ``name`` with ``data`` (a table or a stream) in one commit."""
        self._backend.replace_run(name, data, run_id, partition=partition)

    def commit_files(self, name: str, files: list[str], run_id: str, *, schema: pa.Schema | None = None) -> int:
        """Make parquet ``files`` (written by workers) the rows of ``run_id`` in table ``name``; return rows."""
        return self._backend.commit_files(name, files, run_id, schema=schema)

    def delete_run(self, name: str, run_id: str) -> None:
        """Remove ``run_id``'s rows of table ``name`` in one commit; nothing happens when it has none."""
        self._backend.delete_run(name, run_id)

    def keeps_run_id_in_files(self) -> bool:
        """Whether committed files carry the ``run_id`` column (Iceberg) or take it from their path."""
        return self._backend.keeps_run_id_in_files()

    def read_run(self, name: str, run_id: str, columns: list[str] | None = None, *, only: str | None = None,
                 ) -> pa.Table:
        """The rows of one run of table ``name`` (an empty table when the table does not exist); with
        ``only`` (a boolean column) the rows where it is true, filtered while the files stream in."""
        return self._backend.read_run(name, run_id, columns, only=only)

    def read_table(self, name: str, columns: list[str] | None = None, *, only: str | None = None) -> pa.Table:
        """Every row of table ``name`` (for small tables such as runs; with ``only``, where that boolean
        column is true, filtered while the files stream in); InputError when it does not exist."""
        return self._backend.read_table(name, columns, only=only)

    def run_files(self, name: str, run_id: str) -> list[str]:
        """Parquet files holding one run's rows, for engines without a reader for the table format."""
        return self._backend.run_files(name, run_id)

    def update_run(self, name: str, run_id: str, update: Callable[[pa.Table], pa.Table | None], *,
                   schema: pa.Schema) -> bool:
        """Replace ``run_id``'s rows of table ``name`` with ``update(rows)``, retried while another writer
        changes them in between; False when ``update`` gave None (nothing written)."""
        return self._backend.update_run(name, run_id, update, schema=schema)

    def guarded_add(self, name: str, add: Callable[[pa.Table], tuple[str, pa.Table] | None], *,
                    schema: pa.Schema) -> bool:
        """Add the run ``add(every row of the table)`` gives (its id and rows), committed only if nobody wrote
        the table since that read, else read and added again; False when ``add`` gave None."""
        return self._backend.guarded_add(name, add, schema=schema)
