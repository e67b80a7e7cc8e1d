"""Candidates as the Spark stage's tasks see them, in memory: hash partitions cut into Arrow batches.

:class:`TableCandidates` answers the strategies' questions about the whole candidate set
(:class:`~alray.strategies.base.Candidates`) for the single-machine engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from alray.config import QueryConfig
from alray.errors import InputError
from alray.selection.partitions import partition_of, spark_xxhash64
from alray.selection.rounds import sorted_by_id
from alray.strategies.base import CandidateBatch, ascending_non_null, embedding_matrix, numeric_column


def read_query_embeddings(query: QueryConfig, features: pa.Table | Callable[[list[str]], pa.Table]) -> np.ndarray:
    """Embeddings of a similarity query: a table's ``embedding`` column, or the features rows of ``query.ids``."""
    if query.path:
        from alray.lake import read_column

        table = pa.table({"embedding": read_column(query.path, query.format, "embedding", name="query.path",
                                                   storage_options=query.storage_options or None)})
    elif callable(features):
        table = features(list(query.ids))
    else:
        table = sorted_by_id(features.filter(pc.is_in(features.column("id"), value_set=pa.array(query.ids))))
    if table.num_rows == 0:
        raise InputError("query: no query embeddings found (check query.path or query.ids)")
    return embedding_matrix(table)


@dataclass
class TableCandidates:
    """:class:`~alray.strategies.base.Candidates` over an in-memory table of candidates.

    ``batches`` are the candidates as the Spark stage's tasks see them (:func:`spark_batches`):
    sums over batches add up in the same order as there.
    """

    table: pa.Table
    features: pa.Table
    seed: int
    batches: Sequence[pa.Table] = ()
    partitions: Sequence[pa.Table] = ()  # the hash partitions, in id order (:func:`spark_partitions`)
    n_partitions: int = 1
    oversample: float = 4.0

    @property
    def columns(self) -> list[str]:
        return list(self.table.column_names)

    def column_range(self, column: str) -> tuple[float | None, float | None]:
        values = pc.cast(self.table.column(column), pa.float64())
        stats = pc.min_max(values)
        return stats["min"].as_py(), stats["max"].as_py()

    def reference(self, size: int, seed: int) -> CandidateBatch:
        ids = [str(i) for i in self.table.column("id").to_pylist()]
        order = np.lexsort((np.array(ids, dtype=object), spark_xxhash64(ids, seed)))[:size]
        return CandidateBatch.of(self.table.take(pa.array(order, pa.int64())))

    def query_embeddings(self, query: QueryConfig) -> np.ndarray:
        return read_query_embeddings(query, self.features)

    def kmeans_centroids(self, n_clusters: int, seed: int) -> np.ndarray:
        from sklearn.cluster import KMeans

        x = embedding_matrix(self.table)
        if not len(x):
            return np.zeros((0, 0), dtype=np.float32)
        model = KMeans(n_clusters=min(n_clusters, len(x)), random_state=seed, n_init=1, max_iter=20).fit(x)
        return np.asarray(model.cluster_centers_, dtype=np.float32)

    def batch_sum(self, fn: Callable[[CandidateBatch], np.ndarray]) -> np.ndarray:
        parts = [np.asarray(fn(CandidateBatch.of(b)), dtype=np.float64) for b in self.batches if b.num_rows]
        return np.sum(parts, axis=0) if parts else np.asarray(fn(CandidateBatch.of(self.table)))

    def sorted_values(self, column: str) -> np.ndarray:
        return ascending_non_null(numeric_column(self.table, column))

    def partition_map(self, fn: Callable[[pa.Table], pa.Table], schema: pa.Schema) -> pa.Table:
        parts = self.partitions or [sorted_by_id(self.table)]
        return pa.concat_tables([fn(p).cast(schema) for p in parts if p.num_rows] or [schema.empty_table()])


# Spark's default spark.sql.execution.arrow.maxRecordsPerBatch: the rows of one Arrow batch.
ARROW_BATCH_ROWS = 10_000


def spark_partitions(table: pa.Table, n_partitions: int, seed: int) -> list[pa.Table]:
    """``table``'s rows in the Spark stage's hash partitions (:func:`partition_of`), each in id order."""
    ids = [str(i) for i in table.column("id").to_pylist()]
    part = partition_of(ids, n_partitions, seed)
    return [sorted_by_id(table.filter(pa.array(part == p))) for p in range(n_partitions)]


def spark_batches(table: pa.Table | Sequence[pa.Table], n_partitions: int, seed: int, *,
                  batch_rows: int = ARROW_BATCH_ROWS) -> list[pa.Table]:
    """``table`` cut as the Spark stage's Arrow tasks see it: hash partitions, id order, batches of ``batch_rows``.

    Per-batch arithmetic (matrix products over a batch, sums over batches) then runs on the same
    rows in the same order as on Spark. ``batch_rows`` is Spark's default
    ``spark.sql.execution.arrow.maxRecordsPerBatch``; a session that changes it cuts otherwise.
    ``table`` may be its :func:`spark_partitions` already.
    """
    parts = spark_partitions(table, n_partitions, seed) if isinstance(table, pa.Table) else table
    return [rows.slice(start, batch_rows) for rows in parts for start in range(0, rows.num_rows, batch_rows)]
