"""``typiclust``: one typical sample per cluster, the largest uncovered clusters first.

After Hacohen, Dekel and Weinshall, "Active Learning on a Budget: Opposite Strategies Suit High
and Low Budgets" (ICML 2022). The candidates' embeddings are clustered by k-means into
``labeled + n_select`` clusters (at most ``max_clusters``); each pick goes to the cluster with
the fewest labeled or picked samples, the largest first, and takes its most typical sample not
yet picked. Typicality is the inverse mean distance to the ``n_neighbors`` nearest samples of
the same cluster (at most half the cluster). Clusters smaller than ``MIN_CLUSTER_SIZE`` are
passed over while larger ones remain.

At scale the procedure runs on a uniform sample of the candidates: the first ``sample_size`` in
the order of Spark's ``xxhash64(id, seed)`` (every candidate when there are fewer), the same on
every engine. k-means, the neighbours and the picks are computed on that sample in memory
(``sample_size`` x D floats, and blocks of ``sample_size`` distances); the cluster sizes that
order the clusters are counted over every candidate in one pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from alray.strategies.base import CandidateBatch, Candidates, Picks, Selector
from alray.strategies.typicality import knn_typicality, nearest_centroid

if TYPE_CHECKING:
    from alray.config import StrategyConfig

# Clusters smaller than this are picked from only when no larger cluster has samples left.
MIN_CLUSTER_SIZE = 5


def kmeans_centroids(X: npt.ArrayLike, n_clusters: int, *, seed: int) -> np.ndarray:
    """Centroids (K, D) of scikit-learn's k-means of ``X`` (N, D), K = min(n_clusters, N); seeded."""
    from sklearn.cluster import KMeans

    points = np.asarray(X, dtype=np.float64)
    k = max(1, min(n_clusters, len(points)))
    model = KMeans(n_clusters=k, n_init=1 if k > 50 else 3, random_state=seed, max_iter=100).fit(points)
    return np.asarray(model.cluster_centers_, dtype=np.float32)


def cluster_typicality(X: np.ndarray, clusters: np.ndarray, *, n_neighbors: int) -> np.ndarray:
    """Typicality (N,) of each row of ``X`` (N, D) among the rows of its cluster (``clusters`` (N,))."""
    typicality = np.zeros(len(X))
    for c in np.unique(clusters):
        rows = np.flatnonzero(clusters == c)
        k = max(1, min(n_neighbors, len(rows) // 2))
        if len(rows) == 1:
            typicality[rows] = 1.0
            continue
        typicality[rows] = knn_typicality(X[rows], X[rows], n_neighbors=k, is_reference=np.ones(len(rows), bool))
    return typicality


def typiclust_picks(clusters: np.ndarray, typicality: np.ndarray, n_select: int, *, sizes: np.ndarray,
                    covered: np.ndarray) -> np.ndarray:
    """Rows (K,) picked in order: each from the least-covered cluster, the largest first, its most typical row.

    Parameters
    ----------
    clusters : (N,) cluster of each row
    typicality : (N,) typicality of each row within its cluster
    n_select : picks wanted
    sizes : (C,) cluster sizes that order the clusters (counted over the whole candidate set)
    covered : (C,) labeled samples per cluster; picks add to it
    """
    covered = np.asarray(covered, dtype=np.int64).copy()
    order_in: dict[int, list[int]] = {}
    for c in np.unique(clusters):
        rows = np.flatnonzero(clusters == c)
        order_in[int(c)] = rows[np.lexsort((rows, -typicality[rows]))].tolist()  # most typical first, ties by row
    picks: list[int] = []
    while len(picks) < n_select:
        open_clusters = [c for c, rows in order_in.items() if rows]
        if not open_clusters:
            break
        large = [c for c in open_clusters if sizes[c] >= MIN_CLUSTER_SIZE]
        pool = large or open_clusters
        best = min(pool, key=lambda c: (covered[c], -sizes[c], c))
        picks.append(int(order_in[best].pop(0)))
        covered[best] += 1
    return np.array(picks, dtype=np.int64)


def typiclust(X: npt.ArrayLike, n_select: int, *, labeled: npt.ArrayLike | None = None, max_clusters: int = 500,
              n_neighbors: int = 20, seed: int = 0,
              count_sizes: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """TypiClust on arrays: rows (K,) of ``X`` (N, D) in pick order, and each row's cluster (N,).

    ``labeled`` (L, D) are the labeled samples (their clusters count as covered);
    ``count_sizes(centroids)`` gives the cluster sizes (C,) to order the clusters by when ``X`` is
    a sample of a larger candidate set (default: counted in ``X``).
    """
    points = np.asarray(X, dtype=np.float32)
    if len(points) == 0 or n_select <= 0:
        return np.zeros(0, np.int64), np.zeros(len(points), np.int64)
    others = None if labeled is None or not len(np.asarray(labeled)) else np.asarray(labeled, dtype=np.float32)
    n_labeled = 0 if others is None else len(others)
    centroids = kmeans_centroids(points, min(max_clusters, n_labeled + n_select), seed=seed)
    k = len(centroids)
    clusters, _ = nearest_centroid(points, centroids)
    sizes = np.bincount(clusters, minlength=k) if count_sizes is None else np.asarray(count_sizes(centroids))
    covered = np.zeros(k, np.int64) if others is None else np.bincount(nearest_centroid(others, centroids)[0],
                                                                        minlength=k)
    typicality = cluster_typicality(points, clusters, n_neighbors=n_neighbors)
    return typiclust_picks(clusters, typicality, n_select, sizes=sizes, covered=covered), clusters


class TypiClust(Selector):
    """Typical samples of the uncovered k-means clusters (module docstring)."""

    name = "typiclust"
    inputs = "embeddings"
    summary = "cold start: the most typical sample of each uncovered k-means cluster, largest clusters first"

    def select(self, entry: StrategyConfig, candidates: Candidates, n_select: int,
               labeled: np.ndarray | None) -> Picks:
        sample = candidates.reference(entry.sample_size, candidates.seed)

        def count_sizes(centroids: np.ndarray) -> np.ndarray:
            def sizes(batch: CandidateBatch) -> np.ndarray:
                nearest = nearest_centroid(batch.embeddings, centroids)[0]
                return np.bincount(nearest, minlength=len(centroids)).astype(np.float64)
            return np.rint(candidates.batch_sum(sizes)).astype(np.int64)

        rows, _ = typiclust(sample.embeddings, n_select, labeled=labeled, max_clusters=entry.max_clusters,
                            n_neighbors=entry.n_neighbors, seed=candidates.seed, count_sizes=count_sizes)
        n_labeled = 0 if labeled is None else len(labeled)
        n_clusters = min(entry.max_clusters, n_labeled + n_select, len(sample))
        return Picks([sample.ids[r] for r in rows], sample.embeddings[rows],
                     {"clusters": float(n_clusters), "sample": float(len(sample))})
