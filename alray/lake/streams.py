"""Record-batch streams: iterate a reader, wrap batches as a reader, reshape one parquet file."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from alray.lake.filesystems import StorageOptions, filesystem_for, path_like


def iter_batches(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """Iterate a reader's batches."""
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return


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
    def reshaped() -> Iterator[pa.RecordBatch]:
        for batch in iter_batches(reader):
            arrays = [batch.column(value) if isinstance(value, str) else pa.array([value.as_py()] * batch.num_rows,
                                                                                   value.type)
                      for value in columns.values()]
            yield pa.RecordBatch.from_arrays(arrays, names=list(columns))

    return write_part_file(reshaped(), folder, storage_options=storage_options)


def write_part_file(batches: Iterable[pa.RecordBatch | pa.Table], folder: str, *,
                    storage_options: StorageOptions = None) -> str | None:
    """Write ``batches`` to one new parquet file in ``folder`` (created then); return its path, or None
    (and nothing written, no folder made) when no batch holds a row. The first non-empty batch
    gives the file's schema."""
    target_fs, target_folder = filesystem_for(folder, storage_options)
    target = f"{target_folder}/part-{uuid.uuid4().hex}.parquet"
    writer: pq.ParquetWriter | None = None
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if writer is None:
                target_fs.create_dir(target_folder, recursive=True)
                writer = pq.ParquetWriter(target, batch.schema, filesystem=target_fs)
            writer.write(batch)
    finally:
        if writer is not None:
            writer.close()
    return None if writer is None else path_like(target_fs, target, folder)
