"""Lake tables: read pools and labeled sets, and replace one run's rows of an output table atomically.

Every output table is partitioned by ``run_id`` and one run is replaced as a whole, by the
backend of the lake's table format: Delta (the default) through delta-rs, Iceberg through
pyiceberg, or plain parquet folders. Object-store URIs (``s3://...``) take the same code path.

- :mod:`~alray.lake.outputs`: :class:`Lake`, the output tables, and the format-to-backend map.
- :mod:`~alray.lake.backend`: the :class:`TableBackend` protocol and what the formats share.
- :mod:`~alray.lake.delta`, :mod:`~alray.lake.iceberg`, :mod:`~alray.lake.parquet`: one backend each.
- :mod:`~alray.lake.inputs`: pools, labeled sets and query tables, resolved to parquet files.
- :mod:`~alray.lake.selections`: the ids that earlier runs selected.
- :mod:`~alray.lake.labels`: the labels table (imported labels, each import one commit, no row twice).
- :mod:`~alray.lake.rounds`: the round_items table (each selected id: selected, sent, labeled, expired).
- :mod:`~alray.lake.streams`: record-batch streams and per-file reshaping.
- :mod:`~alray.lake.filesystems`: file systems and paths, local and on object stores.
"""

from alray.lake.backend import COMMIT_ATTEMPTS, TableBackend
from alray.lake.delta import DeltaBackend, commit_files, delete_run, read_run, replace_run, run_files
from alray.lake.filesystems import (
    StorageOptions,
    delete_dir,
    ensure_dir,
    filesystem_for,
    list_parquet,
    s3_filesystem,
)
from alray.lake.iceberg import (
    IcebergBackend,
    IcebergCatalog,
    IcebergTarget,
    iceberg_commit_files,
    iceberg_delete_run,
    iceberg_properties,
    iceberg_read_run,
    iceberg_replace_run,
    iceberg_run_files,
    open_catalog,
    refuse_delete_files,
)
from alray.lake.inputs import (
    PAYLOAD_COLUMNS,
    DeltaSnapshot,
    check_pool_schema,
    open_delta,
    open_table,
    parquet_dataset,
    read_column,
    read_ids,
    table_files,
)
from alray.lake.outputs import BACKENDS, TABLE_NAMES, Lake, TableFormat
from alray.lake.parquet import (
    ParquetBackend,
    parquet_commit_files,
    parquet_delete_run,
    parquet_read_run,
    parquet_replace_run,
    parquet_run_files,
)
from alray.lake.selections import previously_selected_ids
from alray.lake.streams import iter_batches, reader_from_batches, reshape_parquet

__all__ = [
    "BACKENDS",
    "COMMIT_ATTEMPTS",
    "PAYLOAD_COLUMNS",
    "TABLE_NAMES",
    "DeltaBackend",
    "DeltaSnapshot",
    "IcebergBackend",
    "IcebergCatalog",
    "IcebergTarget",
    "Lake",
    "ParquetBackend",
    "StorageOptions",
    "TableBackend",
    "TableFormat",
    "check_pool_schema",
    "commit_files",
    "delete_dir",
    "delete_run",
    "ensure_dir",
    "filesystem_for",
    "iceberg_commit_files",
    "iceberg_delete_run",
    "iceberg_properties",
    "iceberg_read_run",
    "iceberg_replace_run",
    "iceberg_run_files",
    "iter_batches",
    "list_parquet",
    "open_catalog",
    "open_delta",
    "open_table",
    "parquet_commit_files",
    "parquet_dataset",
    "parquet_delete_run",
    "parquet_read_run",
    "parquet_replace_run",
    "parquet_run_files",
    "previously_selected_ids",
    "read_column",
    "read_ids",
    "read_run",
    "reader_from_batches",
    "refuse_delete_files",
    "replace_run",
    "reshape_parquet",
    "run_files",
    "s3_filesystem",
    "table_files",
]
