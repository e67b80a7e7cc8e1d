"""Where the scoring stage's rows come from: the pool table, opened and checked before Ray starts.

A pool is a parquet file, folder or glob; a Delta table (a version of it); an Iceberg table
through a pyiceberg catalog (a snapshot of it); or a CSV/JSONL listing of ``id,uri[,metadata]``.
:func:`open_pool` resolves it to a schema and a list of files and checks the required columns,
naming the table and the column; :func:`read_pool` turns that into a Ray Dataset that reads the
files on the workers, so no pool row passes through the driver.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from alray.config import IcebergCatalogConfig, PoolConfig
from alray.errors import InputError
from alray.lake import (
    IcebergCatalog,
    check_pool_schema,
    filesystem_for,
    open_catalog,
    open_delta,
    open_table,
    refuse_delete_files,
    table_files,
)
from alray.tables import RESERVED_COLUMNS

if TYPE_CHECKING:
    import ray.data

# Bytes a scoring block aims at when a batch of rows is smaller (see block_rows_for).
TARGET_BLOCK_BYTES = 2**20

# A pool of more files than this is read by tasks of several files each.
MAX_READ_TASKS = 1024

# Listings name files by text: ids and uris stay strings even when they look like numbers.
_LISTING_STRINGS = ("id", "uri", "text")
# The payloads a person can look at (reports, labeling tools), in the order a pool's columns are tried.
PAYLOAD_COLUMNS = ("image", "uri", "text")


@dataclass(frozen=True)
class PoolSource:
    """A pool resolved to files: what Ray reads and what the checks saw."""

    path: str
    format: str
    files: list[str]
    schema: pa.Schema
    payload: str
    filesystem: pafs.FileSystem | None = field(default=None, compare=False)
    # Per file, the values of the columns its path holds rather than its rows (Delta partitions).
    partitions: list[dict[str, Any]] = field(default_factory=list, compare=False)
    n_rows: int | None = field(default=None, compare=False)  # once counted (check_pool_ids)
    # Per file, what tells its content changed, from the table's own metadata (Delta: size and time
    # in the log; Iceberg: size, its files are never rewritten); empty: the file system says (a stat).
    file_versions: list[str] = field(default_factory=list, compare=False)

    def subset(self, indices: list[int]) -> PoolSource:
        """The same pool restricted to the files at ``indices``."""
        def pick(values: list[Any]) -> list[Any]:
            return [values[i] for i in indices] if values else []

        return replace(self, files=pick(self.files), partitions=pick(self.partitions),
                       file_versions=pick(self.file_versions), n_rows=None)


def open_pool(pool: PoolConfig, *, staging: str | None = None, precomputed: bool = False) -> PoolSource:
    """Resolve and check the pool: its files, its schema, its payload column.

    An ``images`` pool is listed first into parquet listings of ``id, uri, file_size,
    modified_at`` (and the metadata table's columns) under ``staging`` (a temporary folder when
    absent); those listings are then read like any parquet pool.

    Raises InputError naming the table and the column when a required column is missing or
    has the wrong type, and when the table cannot be read as plain files (Delta deletion
    vectors, Iceberg delete files).
    """
    options = pool.storage_options or None
    partitions: list[dict[str, Any]] = []
    versions: list[str] = []
    if pool.format == "parquet":
        schema, files = open_table(pool.path, pool.format, storage_options=options, folders=False)
    elif pool.format == "delta":
        snapshot = open_delta(pool.path, version=pool.version, storage_options=options)
        schema, files, partitions, versions = snapshot.schema, snapshot.files, snapshot.partitions, snapshot.versions
    elif pool.format == "iceberg":
        schema, files, versions = _iceberg_files(pool)
    elif pool.format == "images":
        files = list_images(pool, staging or tempfile.mkdtemp(prefix="alray-listing-"))
        schema = pq.read_schema(filesystem_for(files[0], options)[1], filesystem=filesystem_for(files[0], options)[0])
    else:
        files = _listing_files(pool.path, pool.format, options)
        try:
            schema = _listing_format(pool.format).inspect(*_inner(files[0], options))
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"pool {files[0]}: not a readable {pool.format} listing "
                             f"({str(exc).splitlines()[0]})") from None
    payload = check_precomputed_schema(schema, pool.path) if precomputed else check_pool_schema(schema, pool.path)
    if not files:
        raise InputError(f"pool {pool.path}: the pool has no data files")
    filesystem, local = None, all("://" not in f or f.startswith("file://") for f in files)
    if local:
        # Ray workers may run in another working directory: hand them absolute paths.
        files = [os.path.abspath(urlparse(f).path if f.startswith("file://") else f) for f in files]
    else:
        filesystem = filesystem_for(files[0], options)[0]
        files = [filesystem_for(f, options)[1] for f in files]
    return PoolSource(pool.path, pool.format, files, schema, payload, filesystem, partitions,
                      file_versions=versions)


def read_rows(source: PoolSource, ids: list[str], columns: list[str]) -> pa.Table:
    """The ``columns`` of the rows of ``ids`` from the pool's files (a selection's payloads, for exports)."""
    fmt: Any = _listing_format(source.format) if source.format in ("csv", "jsonl") else "parquet"
    dataset = pads.dataset(source.files, filesystem=source.filesystem, format=fmt)
    return dataset.to_table(columns=columns, filter=pc.field("id").isin(pa.array(ids, pa.string())))


def check_precomputed_schema(schema: pa.Schema, path: str) -> str:
    """Check a pool scored without a model: a string ``id`` and a list ``embedding``; return ``embedding``."""
    if "id" not in schema.names or not pa.types.is_string(schema.field("id").type):
        raise InputError(f"pool {path}: missing a string column 'id' (found {schema.names})")
    if "embedding" not in schema.names:
        raise InputError(f"pool {path}: no model section and no 'embedding' column: give model.checkpoint, or "
                         "precomputed embeddings (and probs, logits or mc_probs) in the pool")
    kind = schema.field("embedding").type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
        raise InputError(f"pool {path}: column 'embedding' must be a list of floats, found {kind}")
    return "embedding"


def embedding_width(source: PoolSource) -> int | None:
    """Width of the first non-null ``embedding`` of a precomputed pool (every row must match it)."""
    for batch in pads.dataset(source.files, format="parquet", filesystem=source.filesystem).to_batches(
            columns=["embedding"], batch_size=1024):
        for value in batch.column(0).to_pylist():
            if value:
                return len(value)
    return None


def open_checked_pool(pool: PoolConfig, *, staging: str | None, precomputed: bool) -> PoolSource:
    """:func:`open_pool`, its ids checked and its rows counted (:func:`check_pool_ids`): what a score stage
    opens before any engine starts."""
    source = open_pool(pool, staging=staging, precomputed=precomputed)
    return dataclasses.replace(source, n_rows=check_pool_ids(source))


def check_metadata_names(source: PoolSource, inputs: set[str]) -> None:
    """Refuse pool columns besides the model's ``inputs`` that the features table names itself (the
    metadata columns are copied into it); InputError names them."""
    clashes = sorted((set(source.schema.names) - inputs) & RESERVED_COLUMNS)
    if clashes:
        raise InputError(f"pool {source.path}: metadata columns {clashes} clash with features columns; rename them")


def check_pool_ids(source: PoolSource) -> int:
    """Check the pool's ids from its ``id`` column alone, before any scoring; return the row count.

    Raises InputError naming up to three rows with an empty id (null, or only whitespace) or up
    to three duplicated ids. The column is streamed file by file and only a 64-bit hash per row
    is kept (8 bytes a row); ids whose hashes collide are compared in a second pass.
    """
    import numpy as np

    hashes: list[np.ndarray] = []
    empty_rows: list[int] = []
    n_empty = 0
    position = 0
    for ids in _id_batches(source):
        blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(ids), ""), True)
        if pc.any(blank).as_py():
            rows = np.flatnonzero(blank.to_numpy(zero_copy_only=False))
            n_empty += len(rows)
            empty_rows.extend(int(position + r) for r in rows[: 3 - len(empty_rows)])
        hashes.append(_hash_ids(ids))
        position += len(ids)
    if n_empty:
        shown = ", ".join(str(r) for r in empty_rows)
        raise InputError(f"pool {source.path}: {n_empty} row(s) with an empty id (row {shown}, counted from 0); "
                         "every row needs a non-empty id")
    if not hashes:
        return 0
    ordered = np.sort(np.concatenate(hashes))
    colliding = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if colliding.size:
        duplicates = _duplicated_ids(source, colliding)
        if duplicates:
            shown = ", ".join(repr(i) for i in duplicates[:3])
            raise InputError(f"pool {source.path}: {len(duplicates)} duplicate id(s) ({shown}); ids must be unique")
    return position


def _id_batches(source: PoolSource) -> Iterator[pa.Array]:
    fmt: pads.FileFormat | str = _listing_format(source.format) if source.format in ("csv", "jsonl") else "parquet"
    try:
        dataset = pads.dataset(source.files, format=fmt, filesystem=source.filesystem)
        for batch in dataset.to_batches(columns=["id"]):
            yield batch.column(0).cast(pa.string())
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"pool {source.path}: cannot read the id column ({str(exc).splitlines()[0][:120]})") from None


def _hash_ids(ids: pa.Array) -> Any:
    import pandas as pd

    return pd.util.hash_array(ids.to_numpy(zero_copy_only=False).astype(object), categorize=False)


def _duplicated_ids(source: PoolSource, colliding: Any) -> list[str]:
    """The ids, in pool order, that occur more than once among those whose hash is in ``colliding``."""
    import numpy as np

    seen: set[str] = set()
    duplicates: dict[str, None] = {}
    for ids in _id_batches(source):
        candidates = ids.filter(pa.array(np.isin(_hash_ids(ids), colliding)))
        for value in candidates.to_pylist():
            if value in seen:
                duplicates.setdefault(value)
            seen.add(value)
    return list(duplicates)


def block_rows_for(source: PoolSource, batch_size: int) -> int:
    """Rows per block of the scoring dataset: one batch, or more when a batch is under
    ``TARGET_BLOCK_BYTES`` (a row size read from the first file's footer).

    Ray keeps some bookkeeping per block in the driver and in each actor (of the order of
    100 KiB), so a million 300-byte feature rows in batches of 256 (3,900 blocks) cost more in
    bookkeeping than in data. Blocks of about a MiB keep the count of blocks, and with it that
    memory, small, while a worker still holds at most one block and one batch.
    """
    if source.format in ("csv", "jsonl"):
        return batch_size

    try:
        with pq.ParquetFile(source.files[0], filesystem=source.filesystem) as parquet:
            metadata = parquet.metadata
            groups = [metadata.row_group(i) for i in range(metadata.num_row_groups)]
    except (OSError, pa.ArrowInvalid):
        return batch_size  # the read tasks will say what is wrong with the file
    rows = sum(g.num_rows for g in groups)
    if rows == 0:
        return batch_size
    return whole_batches(TARGET_BLOCK_BYTES, sum(g.total_byte_size for g in groups) / rows, batch_size)


def whole_batches(budget_bytes: int, row_bytes: float, batch_size: int) -> int:
    """Rows, in whole batches of ``batch_size``, that fit ``budget_bytes`` at ``row_bytes`` a row
    (counted as at least one byte); at least one batch."""
    return max(batch_size, int(budget_bytes // max(1.0, row_bytes)) // batch_size * batch_size)


def read_pool(source: PoolSource, *, rows_per_block: int, skip_ids: Any = None) -> ray.data.Dataset:
    """A Ray Dataset over the pool's files, read on the workers in blocks of ``rows_per_block`` rows.

    Parquet files (plain, Delta, Iceberg) are read by tasks that stream each file in slices of
    ``rows_per_block`` rows, each its own block: a worker holds one row group and one slice, never
    the pool. (Ray's own parquet reader packed the small files of a 1M-row pool into one task that
    read them whole, and that worker's memory grew with the pool.) Rows get the pool's schema:
    Delta partition values are put back, columns a file predates are null. CSV and JSON listings,
    rows of a few bytes, go through Ray's readers and are cut into blocks after. ``skip_ids`` (an
    Arrow array of ids, or a Ray object reference to one) leaves those rows out: the rows an
    incremental run carries over.
    """
    import ray.data

    if source.format in ("csv", "jsonl"):
        files: Any = source.files if len(source.files) > 1 else source.files[0]
        if source.format == "csv":
            listing = ray.data.read_csv(files, filesystem=source.filesystem, convert_options=_csv_convert())
        else:
            # pyarrow's JSON reader (Ray's default, not lines=True) reads JSON lines and takes parse options.
            listing = ray.data.read_json(files, filesystem=source.filesystem, parse_options=_json_parse())
        if skip_ids is not None:
            listing = listing.map_batches(functools.partial(_without_ids, skip_ids=skip_ids), batch_format="pyarrow")
        return listing.repartition(target_num_rows_per_block=rows_per_block)
    units = ray.data.from_items([{"file": i} for i in range(len(source.files))],
                                override_num_blocks=min(len(source.files), MAX_READ_TASKS))
    read = functools.partial(_read_files, source=source, rows_per_block=rows_per_block, skip_ids=skip_ids)
    # Ray fuses the cut into the read tasks: blocks of rows_per_block rows leave each task as it reads.
    return units.map_batches(read, batch_size=1, batch_format="pyarrow").repartition(
        target_num_rows_per_block=rows_per_block)


def _read_files(units: pa.Table, *, source: PoolSource, rows_per_block: int, skip_ids: Any) -> Iterator[pa.Table]:
    """Ray task: stream the files ``units`` names as tables of the pool's schema, ``rows_per_block`` rows each."""
    for index in units.column("file").to_pylist():
        for table in file_batches(source, index, rows_per_block):
            yield table if skip_ids is None else _without_ids(table, skip_ids)


def _without_ids(table: pa.Table, skip_ids: Any) -> pa.Table:
    if not isinstance(skip_ids, (pa.Array, pa.ChunkedArray)):  # a Ray object reference
        import ray

        skip_ids = ray.get(skip_ids)
    return table.filter(pc.invert(pc.is_in(table.column("id").cast(pa.string()), value_set=skip_ids)))


def file_batches(source: PoolSource, index: int, rows_per_batch: int) -> Iterator[pa.Table]:
    """The rows of the pool's file at ``index``, streamed ``rows_per_batch`` at a time, as the pool's schema
    (parquet files: Delta partition values put back, columns the file predates null) or, for listings, as
    their reader gives them."""
    if source.format in ("csv", "jsonl"):
        dataset = pads.dataset(source.files[index], format=_listing_format(source.format),
                               filesystem=source.filesystem)
        for batch in dataset.to_batches(batch_size=rows_per_batch):
            if batch.num_rows:
                yield pa.Table.from_batches([batch])
        return
    constants = source.partitions[index] if source.partitions else {}
    with pq.ParquetFile(source.files[index], filesystem=source.filesystem) as parquet:
        present = set(parquet.schema_arrow.names)
        columns = [name for name in source.schema.names if name in present]
        for batch in parquet.iter_batches(batch_size=rows_per_batch, columns=columns):
            yield conform(pa.Table.from_batches([batch]), source.schema, constants)


def conform(table: pa.Table, schema: pa.Schema, constants: dict[str, Any]) -> pa.Table:
    """``table`` shaped as ``schema``: partition columns from ``constants``, columns a file lacks
    (added to the table after it was written) as nulls, each cast to the table's type."""
    arrays = []
    for column in schema:
        if column.name in table.column_names:
            arrays.append(table.column(column.name).cast(column.type))
        else:
            value = constants.get(column.name)
            arrays.append(pa.nulls(table.num_rows, column.type) if value is None
                          else pa.repeat(pa.scalar(value).cast(column.type), table.num_rows))
    return pa.Table.from_arrays(arrays, schema=schema)


def _inner(path: str, options: dict[str, str] | None) -> tuple[str, pafs.FileSystem]:
    filesystem, inner = filesystem_for(path, options)
    return inner, filesystem


def _csv_convert() -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(column_types={name: pa.string() for name in _LISTING_STRINGS},
                                strings_can_be_null=False)


def _json_parse() -> pajson.ParseOptions:
    return pajson.ParseOptions(explicit_schema=pa.schema([(name, pa.string()) for name in _LISTING_STRINGS]),
                               unexpected_field_behavior="infer")


def _listing_format(fmt: str) -> pads.FileFormat:
    if fmt == "csv":
        return pads.CsvFileFormat(convert_options=_csv_convert())
    return pads.JsonFileFormat(parse_options=_json_parse())


def _listing_files(path: str, fmt: str, options: dict[str, str] | None) -> list[str]:
    suffixes = (".csv",) if fmt == "csv" else (".jsonl", ".json", ".ndjson")
    filesystem, inner = filesystem_for(path, options)
    if any(ch in inner for ch in "*?["):
        files = table_files(path, "parquet", storage_options=options)  # glob expansion is format-blind
    else:
        info = filesystem.get_file_info(inner)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"pool {path}: listing not found")
        if info.type == pafs.FileType.Directory:
            infos = filesystem.get_file_info(pafs.FileSelector(inner, recursive=True))
            files = sorted(_as_given(i.path, path) for i in infos
                           if i.type == pafs.FileType.File and i.path.endswith(suffixes))
        else:
            files = [path]
    if not files:
        raise InputError(f"pool {path}: no {fmt} file there")
    return files


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
# Rows of one listing file: the driver holds this many listing rows (and one directory's
# entries) at a time, whatever the number of images.
LISTING_ROWS_PER_FILE = 100_000
_LISTING_SCHEMA = pa.schema([("id", pa.string()), ("uri", pa.string()), ("file_size", pa.int64()),
                             ("modified_at", pa.timestamp("us", tz="UTC"))])


def list_images(pool: PoolConfig, staging: str) -> list[str]:
    """List the image files under ``pool.path`` into parquet listing files in ``staging``; return their paths.

    Directories are walked one at a time in name order, so the listing is deterministic and the
    driver holds one directory's entries and one listing file's rows at a time. Ids are the
    paths relative to the root (``/`` separated). InputError when there is no image file.
    """
    options = pool.storage_options or None
    filesystem, root, pattern = _image_root(pool)
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"pool {pool.path}: folder not found")
    metadata = _image_metadata(pool)
    out_fs, out_dir = filesystem_for(staging, options)
    out_fs.delete_dir_contents(out_dir, missing_dir_ok=True)  # a rerun lists afresh
    out_fs.create_dir(out_dir, recursive=True)
    files: list[str] = []
    rows: list[tuple[str, str, int, Any]] = []

    def flush() -> None:
        if not rows:
            return
        ids, uris, sizes, times = zip(*rows, strict=True)
        table = pa.table([pa.array(ids, pa.string()), pa.array(uris, pa.string()), pa.array(sizes, pa.int64()),
                          pa.array(times, pa.timestamp("us", tz="UTC"))], schema=_LISTING_SCHEMA)
        if metadata is not None:
            table = table.join(metadata, "id", join_type="left outer").sort_by("id")
        name = f"listing-{len(files):05d}.parquet"
        pq.write_table(table, f"{out_dir}/{name}", filesystem=out_fs)
        files.append(f"{staging.rstrip('/')}/{name}")
        rows.clear()

    pending = [root] if info.type == pafs.FileType.Directory else []
    singles = [info] if info.type == pafs.FileType.File else []
    while pending or singles:
        entries = singles or filesystem.get_file_info(pafs.FileSelector(pending.pop(), recursive=False))
        singles = []
        subdirs = []
        for entry in sorted(entries, key=lambda e: e.path):
            if entry.type == pafs.FileType.Directory:
                subdirs.append(entry.path)
            elif entry.type == pafs.FileType.File and entry.path.lower().endswith(IMAGE_SUFFIXES) and (
                    pattern is None or fnmatch.fnmatch(entry.path, pattern)):
                relative = entry.path[len(root) + 1:] if entry.path.startswith(root + "/") else entry.base_name
                rows.append((relative, _as_given(entry.path, pool.path), int(entry.size or 0), entry.mtime))
                if len(rows) >= LISTING_ROWS_PER_FILE:
                    flush()
        pending.extend(reversed(subdirs))  # depth first, in name order
    flush()
    if not files:
        raise InputError(f"pool {pool.path}: no image files ({', '.join(IMAGE_SUFFIXES)}) there")
    return files


def _image_root(pool: PoolConfig) -> tuple[pafs.FileSystem, str, str | None]:
    """An ``images`` pool's file system, the folder its ids are relative to, and its glob (None without one)."""
    filesystem, inner = filesystem_for(pool.path, pool.storage_options or None)
    pattern = None
    if any(ch in inner for ch in "*?["):
        pattern = inner
        inner = inner[: min(inner.find(ch) for ch in "*?[" if ch in inner)].rsplit("/", 1)[0]
    return filesystem, inner.rstrip("/"), pattern


@dataclass(frozen=True)
class Payloads:
    """The payloads of some pool rows: the column that holds them (``image``, ``uri`` or ``text``; another
    payload kind has none to give) and each row's value (bytes, a URI as the pool gives it, a text)."""

    column: str
    values: dict[str, Any]


def read_payloads(pool: PoolConfig, ids: Sequence[str]) -> Payloads:
    """The payloads of the pool rows ``ids`` (for reports and exports, not for scoring): the ``image`` bytes,
    ``uri`` or ``text`` column of a table or listing, or, for an ``images`` pool, each file's URI under the
    pool's own root (a folder, a glob's folder, or the one file). Rows not there are left out; InputError
    when the pool cannot be read."""
    wanted = list(dict.fromkeys(ids))
    if pool.format == "images":
        filesystem, root, _pattern = _image_root(pool)
        is_file = filesystem.get_file_info(root).type == pafs.FileType.File
        return Payloads("uri", {i: _as_given(root if is_file else f"{root}/{i}", pool.path) for i in wanted})
    source = open_pool(pool)
    column = source.payload if source.payload in PAYLOAD_COLUMNS else next(
        (c for c in PAYLOAD_COLUMNS if c in source.schema.names), source.payload)
    if column not in PAYLOAD_COLUMNS or not wanted:
        return Payloads(column, {})
    table = read_rows(source, wanted, ["id", column])
    values = {i: (bytes(v) if column == "image" else v)
              for i, v in zip(table.column("id").to_pylist(), table.column(column).to_pylist(), strict=True) if v}
    return Payloads(column, values)


def read_images(pool: PoolConfig, ids: Sequence[str], *, max_bytes: int = 64 << 20) -> dict[str, bytes]:
    """The encoded images of the pool rows ``ids`` (:func:`read_payloads`, files read through their URIs).
    Rows that are not there or cannot be read, or files over ``max_bytes``, are left out, and so is every
    row of a pool that moved or changed since the run (the report shows the rest)."""
    from alray.payloads import PayloadError, read_uri

    try:
        payloads = read_payloads(pool, ids)
    except (InputError, OSError, pa.ArrowInvalid):
        return {}
    if payloads.column == "image":
        return payloads.values
    if payloads.column != "uri":
        return {}  # a pool of feature vectors or texts has no image to show
    images = {}
    for identifier, uri in payloads.values.items():
        try:
            images[identifier] = read_uri(uri, max_bytes=max_bytes, storage_options=pool.storage_options or None)
        except PayloadError:
            continue
    return images


def _image_metadata(pool: PoolConfig) -> pa.Table | None:
    if not pool.metadata_path:
        return None
    options = pool.storage_options or None
    try:
        _schema, files = open_table(pool.metadata_path, "parquet", name="pool.metadata_path", storage_options=options)
        parts = [pq.read_table(inner, filesystem=fs) for fs, inner in (filesystem_for(f, options) for f in files)]
        table = pa.concat_tables(parts, promote_options="default")
    except (OSError, pa.ArrowInvalid) as exc:
        reason = str(exc).splitlines()[0]
        raise InputError(f"pool.metadata_path: {pool.metadata_path}: cannot read ({reason})") from None
    if "id" not in table.column_names:
        raise InputError(f"pool.metadata_path: {pool.metadata_path}: missing required column 'id'")
    clashes = sorted(set(table.column_names) & {"uri", "file_size", "modified_at"})
    if clashes:
        raise InputError(f"pool.metadata_path: {pool.metadata_path}: columns {clashes} clash with the listing's")
    return table.set_column(table.column_names.index("id"), "id", pc.cast(table.column("id"), pa.string()))


def _as_given(inner: str, like: str) -> str:
    return inner if "://" not in like else f"{urlparse(like).scheme}://{inner}"


def _iceberg_files(pool: PoolConfig) -> tuple[pa.Schema, list[str], list[str]]:
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    catalog = open_catalog(_catalog(pool.catalog), pool.storage_options or None)
    try:
        table = catalog.load_table(pool.path)
    except (NoSuchTableError, NoSuchNamespaceError, ValueError):
        raise InputError(f"pool.path: {pool.path}: no Iceberg table of that name in the catalog") from None
    if pool.version is not None and table.snapshot_by_id(pool.version) is None:
        raise InputError(f"pool.version: {pool.path}: no snapshot {pool.version}")
    current = table.schema()
    for older in table.metadata.schemas:
        for old_field in older.fields:
            # The files keep a renamed column's old name; a plain parquet reader would not find it.
            new_field = _field_by_id(current, old_field.field_id)
            if new_field is not None and new_field.name != old_field.name:
                raise InputError(f"pool {pool.path}: column {new_field.name!r} was renamed from {old_field.name!r}; "
                                 "renamed Iceberg columns are not supported")
    tasks = list(table.scan(snapshot_id=pool.version).plan_files())
    refuse_delete_files(tasks, f"pool {pool.path}")
    return (current.as_arrow(), [task.file.file_path for task in tasks],
            [str(task.file.file_size_in_bytes) for task in tasks])


def _field_by_id(schema: Any, field_id: int) -> Any:
    for candidate in schema.fields:
        if candidate.field_id == field_id:
            return candidate
    return None


def _catalog(config: IcebergCatalogConfig | None) -> IcebergCatalog:
    if config is None or not config.uri:
        raise InputError("pool.catalog.uri: an Iceberg pool needs a catalog uri")
    return IcebergCatalog(type=config.type, uri=config.uri, name=config.name, warehouse=config.warehouse,
                          namespace=config.namespace, properties=dict(config.properties))

