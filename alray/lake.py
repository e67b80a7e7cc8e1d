"""Lake tables: read pools and labeled sets, and replace one run's rows of a Delta table atomically."""

from __future__ import annotations

import glob
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from alray.config import RUN_ID_PATTERN
from alray.errors import InputError

TABLE_NAMES = ("features", "ranking", "rejects", "runs")
PAYLOAD_COLUMNS = ("image", "uri", "features", "text")


@dataclass(frozen=True)
class Lake:
    """The output lake: one Delta table per name under ``root``, each partitioned by run_id."""

    root: str

    def table(self, name: str) -> str:
        """Path of table ``name`` (features, ranking, rejects, runs)."""
        if name not in TABLE_NAMES:
            raise ValueError(f"name: expected one of {TABLE_NAMES}, got {name!r}")
        return os.path.join(self.root, name)

    def staging(self, run_id: str, name: str) -> str:
        """A fresh folder where workers write a run's parquet files before they are committed."""
        return os.path.join(self.root, "_staging", run_id, f"{name}-{uuid.uuid4().hex[:8]}")

    def clear_staging(self, run_id: str) -> None:
        """Remove a run's staging files once committed."""
        shutil.rmtree(os.path.join(self.root, "_staging", run_id), ignore_errors=True)


def _run_predicate(run_id: str) -> str:
    # The run id is validated to a safe alphabet, so quoting it in the predicate cannot break out.
    if not RUN_ID_PATTERN.match(run_id):
        raise ValueError(f"run_id: unsafe run id {run_id!r}")
    return f"run_id = '{run_id}'"


def replace_run(
    table_path: str, data: pa.Table | pa.RecordBatchReader, run_id: str, *, partition: bool = True
) -> None:
    """Replace the rows of ``run_id`` in a Delta table with ``data`` in one commit.

    Readers see the old rows or the new ones, never a mix; other runs' rows are untouched, and
    new columns merge into the table schema. ``data`` may be a stream, so a large run does not
    need to fit in memory.
    """
    write_deltalake(
        table_path,
        data,
        mode="overwrite",
        predicate=_run_predicate(run_id),
        partition_by=["run_id"] if partition else None,
        schema_mode="merge",
    )


def read_run(table_path: str, run_id: str, columns: list[str] | None = None) -> pa.Table:
    """The rows of one run of a Delta table (empty table when the table does not exist)."""
    try:
        table = DeltaTable(table_path)
    except TableNotFoundError:
        return pa.table({})
    dataset = table.to_pyarrow_dataset()
    return dataset.to_table(columns=columns, filter=pads.field("run_id") == run_id)


def run_files(table_path: str, run_id: str) -> list[str]:
    """Parquet files holding one run's rows of a Delta table, for engines without a Delta reader.

    Those files do not hold the partition column ``run_id`` itself.
    """
    return list(DeltaTable(table_path).file_uris(file_pruning_predicate=_run_predicate(run_id)))


def stream_parquet(folder: str, *, filter: pads.Expression | None = None,
                   columns: list[str] | None = None) -> pa.RecordBatchReader:
    """Stream the parquet files of a staging folder batch by batch (never all in memory)."""
    dataset = pads.dataset(folder, format="parquet")
    scanner = dataset.scanner(columns=columns, filter=filter, batch_size=8192)
    return scanner.to_reader()


def reader_from_batches(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> pa.RecordBatchReader:
    """A RecordBatchReader over batches, so a transformed stream can be written to a table."""
    return pa.RecordBatchReader.from_batches(schema, iter(batches))


# --- inputs -------------------------------------------------------------------------------

def _expand_parquet(path: str) -> list[str]:
    if any(ch in path for ch in "*?["):
        files = sorted(glob.glob(path))
        if not files:
            raise InputError(f"{path}: no parquet file matches this pattern")
        return files
    if not os.path.exists(path):
        raise InputError(f"{path}: table not found")
    return [path]


def _has_deletion_vectors(table: DeltaTable) -> bool:
    # These file lists feed plain parquet readers, which would resurrect rows a DV deletes.
    if "deletionVectors" not in (table.protocol().reader_features or []):
        return False
    return pa.RecordBatchReader.from_stream(table.deletion_vectors()).read_all().num_rows > 0


def parquet_dataset(files: list[str]) -> pads.Dataset:
    """A pyarrow dataset over parquet files, or over one folder of them."""
    return pads.dataset(files[0] if len(files) == 1 else files, format="parquet")


def table_files(path: str, fmt: str, *, version: int | None = None, name: str = "pool.path") -> list[str]:
    """Parquet files of a parquet path (file, folder or glob) or of a Delta table version."""
    if fmt == "parquet":
        return _expand_parquet(path)
    try:
        table = DeltaTable(path, version=version)
    except TableNotFoundError:
        raise InputError(f"{name}: {path}: no Delta table there") from None
    except Exception as exc:  # delta-rs raises several types for a missing version
        raise InputError(f"{name}: {path}: cannot open Delta table ({str(exc).splitlines()[0]})") from None
    if _has_deletion_vectors(table):
        raise InputError(f"{name}: {path}: Delta tables with deletion vectors are not supported")
    return list(table.file_uris())


def table_schema(path: str, fmt: str, *, version: int | None = None, name: str = "pool.path") -> pa.Schema:
    """Arrow schema of an input table."""
    if fmt == "delta":
        try:
            return pa.schema(DeltaTable(path, version=version).schema().to_arrow())
        except TableNotFoundError:
            raise InputError(f"{name}: {path}: no Delta table there") from None
    try:
        return parquet_dataset(_expand_parquet(path)).schema
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


def read_ids(path: str, fmt: str, *, name: str) -> pa.Array:
    """The ``id`` column of a small table such as the labeled set."""
    schema = table_schema(path, fmt, name=name)
    if "id" not in schema.names:
        raise InputError(f"{name}: {path}: missing required column 'id'")
    files = table_files(path, fmt, name=name)
    ids = parquet_dataset(files).to_table(columns=["id"]).column("id")
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
