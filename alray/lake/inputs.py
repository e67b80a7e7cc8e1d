"""Input tables: the pool, the labeled set and query tables, read as parquet files or Delta versions.

Inputs are resolved to a schema and a list of parquet files (a file, folder or glob of parquet,
or one version of a Delta table), which any engine can then read; :func:`check_pool_schema`
checks a pool's required columns, naming the table and the column.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from alray.errors import InputError
from alray.lake.delta import delta_table
from alray.lake.filesystems import StorageOptions, filesystem_for, list_parquet, path_like

PAYLOAD_COLUMNS = ("image", "uri", "features", "text")


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
        files = sorted(path_like(filesystem, i.path, path) for i in infos
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
    file, the values of the partition columns (the files of a partitioned table lack them) and its
    size and time as the log records them (``SIZE:MILLISECONDS``: a file's version, for incremental
    scoring; Delta never rewrites a file in place)."""

    schema: pa.Schema
    files: list[str]
    partitions: list[dict[str, Any]]
    versions: list[str] = field(default_factory=list)


def open_delta(path: str, *, version: int | None = None, name: str = "pool.path",
               storage_options: StorageOptions = None) -> DeltaSnapshot:
    """Open a Delta table version once for its schema, files and partition values."""
    try:
        table = delta_table(path, storage_options, version)
    except TableNotFoundError:
        raise InputError(f"{name}: {path}: no Delta table there") from None
    except Exception as exc:  # delta-rs raises several types for a missing version
        raise InputError(f"{name}: {path}: cannot open Delta table ({str(exc).splitlines()[0]})") from None
    if _has_deletion_vectors(table):
        raise InputError(f"{name}: {path}: Delta tables with deletion vectors are not supported")
    schema = pa.schema(table.schema().to_arrow())
    files = list(table.file_uris())
    columns = list(table.metadata().partition_columns)
    actions = pa.table(table.get_add_actions(flatten=True))
    paths = actions.column("path").to_pylist()
    if [os.path.basename(p) for p in paths] != [os.path.basename(f) for f in files]:
        raise InputError(f"{name}: {path}: cannot match the Delta table's files to their log entries")
    versions = [f"{size}:{time}" for size, time in zip(actions.column("size_bytes").to_pylist(),
                                                         actions.column("modification_time").to_pylist(), strict=True)]
    values = {c: actions.column(f"partition.{c}").to_pylist() for c in columns}
    return DeltaSnapshot(schema, files, [{c: values[c][i] for c in columns} for i in range(len(files))], versions)


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


def read_columns(path: str, fmt: str, columns: list[str], *, name: str,
                 storage_options: StorageOptions = None) -> pa.Table:
    """Some columns of a small table (parquet or Delta) such as the labeled set or a query table."""
    schema, files = open_table(path, fmt, name=name, storage_options=storage_options)
    for column in columns:
        if column not in schema.names:
            raise InputError(f"{name}: {path}: missing required column {column!r}")
    return parquet_dataset(files, storage_options=storage_options).to_table(columns=columns)


def read_column(path: str, fmt: str, column: str, *, name: str,
                storage_options: StorageOptions = None) -> pa.ChunkedArray:
    """One column of a small table (:func:`read_columns`)."""
    return read_columns(path, fmt, [column], name=name, storage_options=storage_options).column(column)


def read_ids(path: str, fmt: str, *, name: str, storage_options: StorageOptions = None) -> pa.Array:
    """The ``id`` column of a small table such as the labeled set."""
    ids = read_column(path, fmt, "id", name=name, storage_options=storage_options)
    return ids.combine_chunks().cast(pa.string())
