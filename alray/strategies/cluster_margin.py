"""``cluster_margin``: the most uncertain candidates, taken round-robin across clusters of the pool.

After Citovsky, DeSalvo, Gentile, Karydas, Rajagopalan, Rostamizadeh and Kumar, "Batch Active
Learning at Scale" (NeurIPS 2021), designed for pools of millions and batches of 100,000 and more.
The pool's embeddings are clustered once by hierarchical agglomerative clustering with average
linkage; the ``margin_candidates`` most uncertain candidates by the entry's score (default 10 x
the batch; highest first, so ``input: margin``, alray's 1 - (top-1 - top-2), takes the smallest
margins) are grouped by cluster, and the batch is taken round-robin over their clusters, the
smallest cluster first, one candidate of each cluster per pass, in a seeded random order within
a cluster (Spark's ``xxhash64(id, seed)``), until the batch is full.

To scale, the agglomerative clustering runs over k-means micro-clusters: ``max_clusters``
centroids (default 500) of a k-means of a uniform sample of the candidates (the first
``sample_size`` in the seeded hash order, as typiclust's), merged by average linkage weighted
by their sizes in the sample (the distance of two groups is the size-weighted mean of their
micro-centroid distances) down to ``n_clusters`` clusters. A candidate belongs to the cluster of
its nearest micro-centroid. One pass over the candidates finds the score threshold (the
engine's sorted values), one gathers the margin candidates (id, score, cluster: never their
embeddings), one fetches the picks' embeddings for the ranking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from alray.errors import ConfigError
from alray.selection.partitions import spark_xxhash64
from alray.strategies.base import Candidates, Picks, Selector, embedding_matrix, float_lists, numeric_column
from alray.strategies.typicality import nearest_centroid
from alray.strategies.typiclust import kmeans_centroids

if TYPE_CHECKING:
    from alray.config import StrategyConfig

# Margin candidates per pick when the entry does not say.
MARGIN_CANDIDATES_PER_PICK = 10
_GATHERED = pa.schema([("id", pa.string()), ("score", pa.float64()), ("micro", pa.int64())])
_EMBEDDED = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32()))])


def average_linkage(points: npt.ArrayLike, n_clusters: int, *, weights: npt.ArrayLike | None = None) -> np.ndarray:
    """Cluster (M,) of each of ``points`` (M, D) after average-linkage merging down to ``n_clusters``.

    ``weights`` (M,) are how many samples each point stands for: the distance between two groups
    is the weighted mean of the distances between their points. Merges the closest pair first
    (ties: the lowest indices); clusters are numbered 0.. by their smallest point.
    """
    x = np.asarray(points, dtype=np.float64)
    m = len(x)
    size = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64).copy()
    if m == 0:
        return np.zeros(0, np.int64)
    d = np.sqrt(np.maximum((x * x).sum(1)[:, None] - 2.0 * x @ x.T + (x * x).sum(1)[None, :], 0.0))
    np.fill_diagonal(d, np.inf)
    owner = np.arange(m)
    alive = np.ones(m, dtype=bool)
    for _ in range(m - max(1, min(n_clusters, m))):
        i, j = divmod(int(np.argmin(d)), m)
        i, j = min(i, j), max(i, j)
        total = size[i] + size[j]
        merged = (size[i] * d[i] + size[j] * d[j]) / total if total > 0 else np.minimum(d[i], d[j])
        d[i], d[:, i] = merged, merged
        d[i, i] = np.inf
        d[j], d[:, j] = np.inf, np.inf
        size[i], alive[j] = total, False
        owner[owner == j] = i
    _, labels = np.unique(owner, return_inverse=True)
    return labels.astype(np.int64)


def round_robin(clusters: npt.ArrayLike, priority: npt.ArrayLike, n_select: int) -> np.ndarray:
    """Rows (K,) taken one per cluster per pass, the smallest cluster first, by ``priority`` (low first) within.

    ``clusters`` (N,) are the rows' clusters; cluster sizes count these rows; ties of size go to
    the lower cluster number.
    """
    c = np.asarray(clusters, dtype=np.int64)
    order = np.asarray(priority)
    if len(c) == 0 or n_select <= 0:
        return np.zeros(0, np.int64)
    labels, sizes = np.unique(c, return_counts=True)
    queues = [np.flatnonzero(c == label) for label in labels[np.lexsort((labels, sizes))]]
    queues = [rows[np.argsort(order[rows], kind="stable")] for rows in queues]
    picks: list[int] = []
    depth = 0
    while len(picks) < n_select and depth < max(len(q) for q in queues):
        picks.extend(int(q[depth]) for q in queues if depth < len(q))
        depth += 1
    return np.array(picks[:n_select], dtype=np.int64)


class ClusterMargin(Selector):
    """Round-robin over average-linkage clusters of the most uncertain candidates (module docstring)."""

    name = "cluster_margin"
    inputs = "column"
    summary = "large batches: the most uncertain candidates round-robin over average-linkage clusters"

    def check(self, entry: StrategyConfig) -> None:
        if entry.margin_candidates is not None and entry.margin_candidates < 1:
            raise ValueError(f"cluster_margin: margin_candidates must be >= 1, got {entry.margin_candidates}")

    def select(self, entry: StrategyConfig, candidates: Candidates, n_select: int,
               labeled: np.ndarray | None) -> Picks:
        column, seed = entry.input, candidates.seed
        if column not in candidates.columns:
            raise ConfigError(f"selection.strategies: cluster_margin: no column {column!r} in the features table")
        values = candidates.sorted_values(column)
        n_margin = min(len(values), entry.margin_candidates or MARGIN_CANDIDATES_PER_PICK * n_select)
        if n_select == 0 or n_margin == 0:
            return Picks([], np.zeros((0, 0), np.float32), {})
        threshold = float(values[len(values) - n_margin])
        sample = candidates.reference(entry.sample_size, seed)
        micro = kmeans_centroids(sample.embeddings, entry.max_clusters, seed=seed)
        micro_sizes = np.bincount(nearest_centroid(sample.embeddings, micro)[0], minlength=len(micro))
        cluster_of = average_linkage(micro, entry.n_clusters, weights=micro_sizes)

        def gather(table: pa.Table) -> pa.Table:
            scores = numeric_column(table, column)
            keep = np.flatnonzero(scores >= threshold)  # NaN compares false
            rows = table.take(pa.array(keep, pa.int64()))
            nearest = nearest_centroid(embedding_matrix(rows), micro)[0] if len(keep) else np.zeros(0, np.int64)
            return pa.table([rows.column("id").cast(pa.string()), pa.array(scores[keep], pa.float64()),
                             pa.array(nearest, pa.int64())], schema=_GATHERED)

        gathered = candidates.partition_map(gather, _GATHERED)
        ids = np.array(gathered.column("id").to_pylist(), dtype=object)
        top = np.lexsort((ids, -gathered.column("score").to_numpy()))[:n_margin]
        ids = ids[top]
        clusters = cluster_of[gathered.column("micro").to_numpy()[top]]
        noise = spark_xxhash64(list(ids), seed)
        priority = np.lexsort((ids, noise))
        rank = np.empty(len(ids), np.int64)
        rank[priority] = np.arange(len(ids))
        rows = round_robin(clusters, rank, n_select)
        chosen = [str(ids[r]) for r in rows]
        wanted = pa.array(chosen, pa.string())

        def embeddings(table: pa.Table) -> pa.Table:
            found = table.filter(pc.is_in(table.column("id").cast(pa.string()), value_set=wanted))
            return pa.table([found.column("id").cast(pa.string()),
                             float_lists(found.column("embedding"))], schema=_EMBEDDED)

        fetched = candidates.partition_map(embeddings, _EMBEDDED)
        position = {i: n for n, i in enumerate(fetched.column("id").to_pylist())}
        picked = embedding_matrix(fetched)[[position[i] for i in chosen]]
        return Picks(chosen, picked, {"clusters": float(len(np.unique(clusters))),
                                      "margin_candidates": float(n_margin), "threshold": threshold,
                                      "sample": float(len(sample))})
