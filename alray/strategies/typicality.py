"""``typicality``: prefer candidates in dense, typical regions of the embedding space.

Two methods: ``knn`` (1 / mean distance to the nearest neighbours among a seeded reference
sample of the candidates) and ``kmeans`` (large clusters, and rows near their centroid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from alray.strategies.base import DISTANCE_EPSILON, CandidateBatch, Candidates, Objective

if TYPE_CHECKING:
    from alray.config import StrategyConfig


def knn_typicality(X: npt.ArrayLike, reference: npt.ArrayLike, *, n_neighbors: int,
                   is_reference: npt.ArrayLike | None = None) -> np.ndarray:
    """Density of each row: 1 / mean distance to its ``n_neighbors`` nearest rows of ``reference``.

    Parameters
    ----------
    X : array of shape (N, d)
    reference : array of shape (R, d), a sample of the candidates
    n_neighbors : neighbours averaged (capped at what the reference holds)
    is_reference : bool array (N,), rows that are themselves in ``reference`` (their zero
        distance to themselves is skipped)

    Returns
    -------
    ndarray of shape (N,): higher in dense, typical regions.
    """
    points = np.asarray(X, dtype=np.float32)
    ref = np.asarray(reference, dtype=np.float32)
    n = len(points)
    if n == 0 or len(ref) == 0:
        return np.ones(n)
    self_mask = np.zeros(n, dtype=bool) if is_reference is None else np.asarray(is_reference, dtype=bool)
    k = max(1, min(n_neighbors, len(ref) - 1 if self_mask.any() else len(ref)))
    squared = (np.sum(points * points, axis=1)[:, None] - 2.0 * points @ ref.T + np.sum(ref * ref, axis=1)[None])
    distances = np.sqrt(np.maximum(squared, 0.0))
    take = min(k + 1, len(ref))
    nearest = np.sort(np.partition(distances, take - 1, axis=1)[:, :take], axis=1)
    others = nearest[:, :k].mean(axis=1)
    # a reference row's nearest neighbour is itself: skip that zero
    selves = nearest[:, 1 : k + 1].mean(axis=1) if take > 1 else others
    mean = np.where(self_mask, selves, others)
    return 1.0 / (mean + DISTANCE_EPSILON)


def cluster_typicality(distance: npt.ArrayLike, cluster_share: npt.ArrayLike,
                       cluster_mean_distance: npt.ArrayLike) -> np.ndarray:
    """Typicality from a clustering: large clusters, and rows near their centroid, score high.

    ``share x 1 / (1 + distance / mean distance in the cluster)``, all of shape (N,).
    """
    d = np.asarray(distance, dtype=np.float64)
    mean = np.maximum(np.asarray(cluster_mean_distance, dtype=np.float64), DISTANCE_EPSILON)
    return np.asarray(cluster_share, dtype=np.float64) / (1.0 + d / mean)


def nearest_centroid(X: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index (N,) of each row's nearest centroid and the distance (N,) to it."""
    if not len(X):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    squared = (np.sum(X * X, axis=1)[:, None] - 2 * X @ centroids.T + np.sum(centroids ** 2, axis=1)[None])
    nearest = np.argmin(squared, axis=1)
    distance = np.sqrt(np.maximum(squared[np.arange(len(X)), nearest], 0.0)).astype(np.float64)
    return nearest.astype(np.int64), distance


@dataclass(frozen=True)
class _Reference:
    embeddings: np.ndarray
    ids: frozenset[str]


@dataclass(frozen=True)
class _Clusters:
    centroids: np.ndarray
    share: np.ndarray  # (K,) share of the candidates in each cluster
    mean_distance: np.ndarray  # (K,) mean distance to the centroid within each cluster


class Typicality(Objective):
    """Density: knn over a reference sample, or the size of and closeness to k-means clusters."""

    name = "typicality"
    inputs = "embeddings"
    summary = "density: knn over a seeded reference sample, or k-means cluster size and closeness"

    def prepare(self, entry: StrategyConfig, column: str | None, candidates: Candidates) -> Any:
        if entry.method == "knn":
            reference = candidates.reference(entry.reference_size, candidates.seed)
            return _Reference(reference.embeddings, frozenset(reference.ids))
        centroids = np.asarray(candidates.kmeans_centroids(entry.n_clusters, candidates.seed), dtype=np.float32)
        k = len(centroids)

        def sums(batch: CandidateBatch) -> np.ndarray:
            nearest, distance = nearest_centroid(batch.embeddings, centroids)
            return np.stack([np.bincount(nearest, minlength=k).astype(np.float64),
                             np.bincount(nearest, weights=distance, minlength=k)])

        counts, distances = candidates.batch_sum(sums)
        total = max(float(counts.sum()), 1.0)
        mean = np.divide(distances, counts, out=np.zeros(k), where=counts > 0)
        return _Clusters(centroids, counts / total, mean)

    def evaluate(self, entry: StrategyConfig, column: str | None, state: Any, batch: CandidateBatch) -> np.ndarray:
        if isinstance(state, _Reference):
            mask = np.array([i in state.ids for i in batch.ids], dtype=bool)
            return knn_typicality(batch.embeddings, state.embeddings, n_neighbors=entry.n_neighbors,
                                  is_reference=mask)
        nearest, distance = nearest_centroid(batch.embeddings, state.centroids)
        return cluster_typicality(distance, state.share[nearest], state.mean_distance[nearest])
