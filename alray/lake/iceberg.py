"""Iceberg output tables through pyiceberg: a SQL (sqlite) or REST catalog, a run replaced in one snapshot.

Tables are partitioned by ``run_id`` (identity) and, unlike Delta and plain parquet, their data
files hold the ``run_id`` column. The catalog is embedded (a sqlite file in the lake root) unless
the output config names one.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

import pyarrow as pa

from alray.errors import InputError
from alray.lake.backend import (
    COMMIT_ATTEMPTS,
    CommitConflictError,
    backoff,
    checked_run_id,
    guarded_update,
    merged_schema,
    move_into,
    run_predicate,
    staged_rows,
)
from alray.lake.filesystems import S3_KEYS, StorageOptions, ensure_dir, filesystem_for, path_like
from alray.lake.streams import iter_batches

if TYPE_CHECKING:
    from alray.lake.outputs import Lake


@dataclass(frozen=True)
class IcebergCatalog:
    """Where Iceberg tables are registered: a SQL catalog (sqlite by default) or a REST catalog."""

    type: Literal["sql", "rest"] = "sql"
    uri: str = ""
    name: str = "default"
    warehouse: str | None = None
    namespace: str = "alray"
    properties: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def for_output(cls, output: Any) -> IcebergCatalog:
        """The catalog of an ``OutputConfig``: the one it names, or a sqlite file in the lake root."""
        given = output.catalog
        uri = given.uri if given is not None and given.uri else _embedded_catalog_uri(output.path)
        return cls(
            type=given.type if given is not None else "sql", uri=uri,
            name=given.name if given is not None else "default",
            warehouse=given.warehouse if given is not None else None,
            namespace=given.namespace if given is not None else "alray",
            properties=dict(given.properties) if given is not None else {},
        )


def _embedded_catalog_uri(root: str) -> str:
    if "://" in root and not root.startswith("file://"):
        raise InputError(f"output.catalog.uri: an Iceberg lake at {root} needs a catalog uri "
                         "(the embedded sqlite catalog lives on a local disk)")
    local = urlparse(root).path if root.startswith("file://") else os.path.abspath(root)
    ensure_dir(local)
    return f"sqlite:///{os.path.join(local, '_catalog.db')}"


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
        target = S3_KEYS.get(key.lower())
        if target:
            properties.setdefault(names[target], value)
    return properties


def open_catalog(catalog: IcebergCatalog, storage_options: StorageOptions = None) -> Any:
    """A pyiceberg catalog: SQL (sqlite file by default) or REST."""
    properties = iceberg_properties(catalog, storage_options)
    if catalog.type == "sql":
        from pyiceberg.catalog.sql import SqlCatalog
        from sqlalchemy.exc import OperationalError

        for attempt in range(COMMIT_ATTEMPTS):
            try:
                return SqlCatalog(catalog.name, **properties)
            except OperationalError:  # another process created the catalog's tables at the same moment
                if attempt + 1 >= COMMIT_ATTEMPTS:
                    raise
                backoff(attempt)
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

    def load(self, schema: pa.Schema | None = None, properties: Mapping[str, str] | None = None) -> Any:
        """The table, created partitioned by run_id (when ``schema`` is given, with ``properties``) if it does
        not exist."""
        from pyiceberg.exceptions import NoSuchTableError

        catalog = open_catalog(self.catalog, self.storage_options)
        try:
            return catalog.load_table(self.identifier)
        except NoSuchTableError:
            if schema is None:
                return None
        from pyiceberg.exceptions import TableAlreadyExistsError

        _create_namespace(catalog, self.catalog.namespace)
        try:
            table = catalog.create_table(self.identifier, schema=schema, location=self.location,
                                         properties=dict(properties or {}))
            with table.update_spec() as spec:
                spec.add_identity("run_id")
        except TableAlreadyExistsError:  # another run created it first
            pass
        return catalog.load_table(self.identifier)


def _create_namespace(catalog: Any, namespace: str) -> None:
    """Create ``namespace`` unless it exists, also when another process creates it at the same moment."""
    from sqlalchemy.exc import IntegrityError

    with contextlib.suppress(IntegrityError):  # a SQL catalog's row written by the other process first
        catalog.create_namespace_if_not_exists(namespace)


def _iceberg_commit(target: IcebergTarget, schema: pa.Schema, write: Callable[[Any], None]) -> None:
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
            backoff(attempt)


def iceberg_replace_run(target: IcebergTarget, data: pa.Table | pa.RecordBatchReader, run_id: str) -> None:
    """Replace ``run_id``'s rows of an Iceberg table with ``data`` in one snapshot commit, batch by batch."""
    checked_run_id(run_id)
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
    checked_run_id(run_id)
    token = uuid.uuid4().hex[:12]
    _, root, staged = move_into(files, target.location, f"data/run_id={run_id}", storage_options, token)
    incoming = schema
    for item in staged:
        incoming = merged_schema(incoming, item.metadata.schema.to_arrow_schema(), f"table {target.identifier}")
    if incoming is None:
        raise ValueError("commit_files: give a schema when there are no files")
    if "run_id" not in incoming.names:
        raise InputError(f"table {target.identifier}: staged files need their run_id column for Iceberg")
    paths = [path_like(filesystem_for(target.location, storage_options)[0], f"{root}/{item.path}", target.location)
             for item in staged]

    def write(transaction: Any) -> None:
        transaction.delete(_iceberg_run_filter(run_id))
        if paths:
            transaction.add_files(paths)

    _iceberg_commit(target, incoming, write)
    return staged_rows(staged)


def iceberg_update_run(target: IcebergTarget, run_id: str, update: Callable[[pa.Table], pa.Table | None], *,
                       schema: pa.Schema) -> bool:
    """Replace ``run_id``'s rows with ``update(rows)`` in one snapshot whose parent is the one read.

    pyiceberg asserts that the branch still points at the snapshot the rows were read from; when
    another commit moved it, the read and ``update`` run again.
    """
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    run_filter = _iceberg_run_filter(run_id)

    def read() -> tuple[Any, pa.Table]:
        table = target.load(schema)
        return table, table.scan(row_filter=run_filter).to_arrow()

    def write(table: Any, rows: pa.Table) -> None:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Delete operation did not match any records")
                with table.transaction() as transaction:
                    transaction.delete(run_filter)
                    transaction.append(rows.cast(table.schema().as_arrow()))
        except (CommitFailedException, ValidationException) as exc:
            # pyiceberg retries a commit itself and then refuses one whose delete would miss rows
            # another writer added (ValidationException): both mean that the read is stale.
            raise CommitConflictError(str(exc)) from exc

    return guarded_update(read, write, update)


# pyiceberg retries a commit that lost a race by rebasing it on the new snapshot, and an append
# passes its checks there; a table written by guarded adds turns that off, so the add fails and is
# worked out again from the rows the other commit wrote.
NO_COMMIT_RETRIES = {"commit.retry.num-retries": "0"}


def iceberg_guarded_add(target: IcebergTarget, add: Callable[[pa.Table], tuple[str, pa.Table] | None], *,
                        schema: pa.Schema) -> bool:
    """Append the rows of a new run that ``add(every row)`` gives, in one snapshot whose parent is the one
    read; when another commit moved the table, the read and ``add`` run again."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    def read() -> tuple[Any, pa.Table]:
        table = _without_commit_retries(target, schema)
        return table, table.scan().to_arrow()

    def write(table: Any, new: tuple[str, pa.Table]) -> None:
        run_id, rows = new
        checked_run_id(run_id)
        try:
            with table.transaction() as transaction:
                transaction.append(rows.cast(table.schema().as_arrow()))
        except (CommitFailedException, ValidationException) as exc:
            raise CommitConflictError(str(exc)) from exc

    return guarded_update(read, write, add)


def _without_commit_retries(target: IcebergTarget, schema: pa.Schema) -> Any:
    """The table (created when missing) once its properties say :data:`NO_COMMIT_RETRIES`."""
    from pyiceberg.exceptions import CommitFailedException

    for attempt in range(COMMIT_ATTEMPTS):
        table = target.load(schema, properties=NO_COMMIT_RETRIES)
        if all(table.properties.get(k) == v for k, v in NO_COMMIT_RETRIES.items()):
            return table
        try:
            with table.transaction() as transaction:
                transaction.set_properties(NO_COMMIT_RETRIES)
        except CommitFailedException:  # another writer moved the table: look again
            backoff(attempt)
    raise CommitConflictError(f"table {target.identifier}: cannot set {NO_COMMIT_RETRIES}")


def iceberg_delete_run(target: IcebergTarget, run_id: str) -> None:
    """Remove the rows of ``run_id`` from an Iceberg table in one snapshot (none when it does not exist)."""
    table = target.load()
    if table is None:
        return
    run_filter = _iceberg_run_filter(run_id)
    _iceberg_commit(target, table.schema().as_arrow(), lambda transaction: transaction.delete(run_filter))


def iceberg_read_run(target: IcebergTarget, run_id: str | None, columns: list[str] | None = None, *,
                     missing_ok: bool = True, only: str | None = None) -> pa.Table:
    """The rows of one run (every row when ``run_id`` is None) of an Iceberg table; with ``only``, those
    where that boolean column is true."""
    from pyiceberg.expressions import AlwaysTrue

    table = target.load()
    if table is None:
        if missing_ok:
            return pa.table({})
        raise InputError(f"table {target.identifier}: not found in the catalog")
    # pyiceberg parses these row filters; run ids are of a safe alphabet, ``only`` is a column of ours.
    terms = []
    if run_id is not None:
        terms.append(_iceberg_run_filter(run_id))
    if only is not None:
        terms.append(f"{only} == true")
    row_filter: Any = " and ".join(terms) if terms else AlwaysTrue()
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
    return run_predicate(run_id).replace(" = ", " == ")


def refuse_delete_files(tasks: Iterable[Any], name: str) -> None:
    """Plain parquet readers would resurrect rows that Iceberg delete files remove: refuse those tables."""
    if any(task.delete_files for task in tasks):
        raise InputError(f"{name}: Iceberg tables with delete files (merge-on-read deletes) are not supported; "
                         "compact the table first")


@dataclass(frozen=True)
class IcebergBackend:
    """The lake's tables as Iceberg tables registered in the lake's catalog, at ``root/name``."""

    lake: Lake

    def replace_run(self, name: str, data: pa.Table | pa.RecordBatchReader, run_id: str, *,
                    partition: bool = True) -> None:
        """See :meth:`TableBackend.replace_run`; always partitioned by run_id."""
        iceberg_replace_run(self._target(name), data, run_id)

    def commit_files(self, name: str, files: list[str], run_id: str, *, schema: pa.Schema | None = None) -> int:
        """See :meth:`TableBackend.commit_files`; files with their run_id column."""
        return iceberg_commit_files(self._target(name), files, run_id, schema=schema,
                                    storage_options=self.lake.storage_options)

    def delete_run(self, name: str, run_id: str) -> None:
        """See :meth:`TableBackend.delete_run`."""
        iceberg_delete_run(self._target(name), run_id)

    def read_run(self, name: str, run_id: str, columns: list[str] | None = None, *, only: str | None = None,
                 ) -> pa.Table:
        """See :meth:`TableBackend.read_run`."""
        return iceberg_read_run(self._target(name), run_id, columns, only=only)

    def read_table(self, name: str, columns: list[str] | None = None, *, only: str | None = None) -> pa.Table:
        """See :meth:`TableBackend.read_table`."""
        return iceberg_read_run(self._target(name), None, columns, missing_ok=False, only=only)

    def run_files(self, name: str, run_id: str) -> list[str]:
        """See :meth:`TableBackend.run_files`; the files hold the run_id column."""
        return iceberg_run_files(self._target(name), run_id)

    def keeps_run_id_in_files(self) -> bool:
        """True: Iceberg keeps partition values in the data files."""
        return True

    def update_run(self, name: str, run_id: str, update: Callable[[pa.Table], pa.Table | None], *,
                   schema: pa.Schema) -> bool:
        """See :meth:`TableBackend.update_run`; :func:`iceberg_update_run` on the table."""
        return iceberg_update_run(self._target(name), run_id, update, schema=schema)

    def guarded_add(self, name: str, add: Callable[[pa.Table], tuple[str, pa.Table] | None], *,
                    schema: pa.Schema) -> bool:
        """See :meth:`TableBackend.guarded_add`; :func:`iceberg_guarded_add` on the table."""
        return iceberg_guarded_add(self._target(name), add, schema=schema)

    def _target(self, name: str) -> IcebergTarget:
        if self.lake.catalog is None:
            raise ValueError("an Iceberg lake needs a catalog")
        return IcebergTarget(self.lake.catalog, name, self.lake.table(name), self.lake.storage_options)
