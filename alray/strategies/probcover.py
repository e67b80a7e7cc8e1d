"""``probcover``: greedy maximum coverage of delta-balls around the picks.

After Yehuda, Dekel, Hacohen and Weinshall, "Active Learning Through a Covering Lens" (NeurIPS
2022). Every sample covers the samples closer than ``delta`` to it. Each pick is the sample that
covers the most samples not covered yet (by the labeled set or earlier picks); once every sample
is covered, the rest of the batch is taken in hash order (a seeded random order).

``delta`` is the config's, or chosen from the data by the paper's purity heuristic: k-means
pseudo-labels (``n_clusters`` clusters; set it to the number of classes you expect), and the
largest delta for which a share ``purity`` (0.95) of the balls hold one pseudo-label only. A
ball around x is pure exactly when delta is at most the distance from x to the nearest sample of
another pseudo-label, so that delta is the (1 - purity) quantile of those distances: no search.

At scale the ball graph is built on a uniform sample of the candidates: the first
``sample_size`` in the order of Spark's ``xxhash64(id, seed)`` (every candidate when there are
fewer), the same on every engine; the picks are samples of it. The graph is held as sparse
neighbour lists, built in blocks of distances; a graph of more than ``MAX_EDGES`` edges is
refused with the figures to change. The coverage of the whole candidate set is measured in one
pass and shown in the summary with delta.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from alray.errors import ConfigError
from alray.strategies.base import CandidateBatch, Candidates, Picks, Selector
from alray.strategies.typicality import nearest_centroid
from alray.strategies.typiclust import kmeans_centroids

if TYPE_CHECKING:
    from alray.config import StrategyConfig

# Edges the ball graph may hold (8 bytes each with its offsets): about 800 MB.
MAX_EDGES = 100_000_000
_BLOCK = 1024


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(np.sum(a * a, axis=1)[:, None] - 2.0 * a @ b.T + np.sum(b * b, axis=1)[None, :], 0.0)


def purity_delta(X: npt.ArrayLike, pseudo_labels: npt.ArrayLike, *, purity: float = 0.95) -> float:
    """The largest delta at which a share ``purity`` of the delta-balls around rows of ``X`` (N, D) are pure.

    A ball is pure when every row in it has the centre's pseudo-label (N,). Returns the
    (1 - purity) quantile of each row's distance to the nearest row of another label (inf
    when there is one label only).
    """
    points = np.asarray(X, dtype=np.float32)
    labels = np.asarray(pseudo_labels)
    other = np.full(len(points), np.inf)
    for start in range(0, len(points), _BLOCK):
        block = _squared_distances(points[start:start + _BLOCK], points)
        block[labels[start:start + _BLOCK, None] == labels[None, :]] = np.inf
        other[start:start + _BLOCK] = np.sqrt(block.min(axis=1))
    finite = other[np.isfinite(other)]
    return float(np.quantile(finite, 1.0 - purity)) if len(finite) else float("inf")


def ball_graph(X: npt.ArrayLike, delta: float, *, max_edges: int = MAX_EDGES) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour lists of the delta-ball graph of ``X`` (N, D): CSR offsets (N + 1,) and columns.

    Row i's neighbours are the rows closer than ``delta`` to it, itself included; ConfigError
    when there would be more than ``max_edges`` of them.
    """
    points = np.asarray(X, dtype=np.float32)
    limit = delta * delta
    counts, columns, total = [], [], 0
    for start in range(0, len(points), _BLOCK):
        close = _squared_distances(points[start:start + _BLOCK], points) < limit
        close[np.arange(len(close)), np.arange(start, start + len(close))] = True
        rows, cols = np.nonzero(close)
        total += len(cols)
        if total > max_edges:
            raise ConfigError(f"probcover: the delta-ball graph of {len(points)} samples at delta {delta:.4g} has "
                              f"more than {max_edges:,} edges; lower the strategy's sample_size or delta")
        counts.append(np.bincount(rows, minlength=len(close)))
        columns.append(cols.astype(np.int32))
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(counts))]) if counts else np.zeros(1, np.int64)
    return offsets.astype(np.int64), (np.concatenate(columns) if columns else np.zeros(0, np.int32))


def covered_by(X: np.ndarray, centres: np.ndarray | None, delta: float) -> np.ndarray:
    """Whether each row of ``X`` (N, D) is closer than ``delta`` to one of ``centres`` (M, D)."""
    covered = np.zeros(len(X), dtype=bool)
    if centres is None or not len(centres) or not len(X):
        return covered
    for start in range(0, len(centres), _BLOCK):
        covered |= (_squared_distances(X, centres[start:start + _BLOCK]) < delta * delta).any(axis=1)
    return covered


def probcover(X: npt.ArrayLike, n_select: int, *, delta: float, labeled: npt.ArrayLike | None = None,
              max_edges: int = MAX_EDGES) -> tuple[np.ndarray, float]:
    """ProbCover on arrays: rows (K,) of ``X`` (N, D) in pick order, and the share of rows they cover.

    Each pick covers the most rows that neither ``labeled`` (L, D) nor an earlier pick covers
    (ties: the first row); once all are covered, the next rows in order are taken.
    """
    points = np.asarray(X, dtype=np.float32)
    n = len(points)
    if n == 0 or n_select <= 0:
        return np.zeros(0, np.int64), 0.0
    offsets, columns = ball_graph(points, delta, max_edges=max_edges)
    centres = None if labeled is None else np.asarray(labeled, dtype=np.float32)
    covered = covered_by(points, centres, delta)
    # a row's degree: the uncovered rows in its ball (the graph is symmetric)
    owner = np.repeat(np.arange(n), np.diff(offsets))
    degree = np.bincount(owner, weights=~covered[columns], minlength=n).astype(np.int64)
    picked = np.zeros(n, dtype=bool)
    picks: list[int] = []
    while len(picks) < min(n_select, n):
        best = int(np.argmax(np.where(picked, -1, degree)))
        if degree[best] <= 0:
            break
        picks.append(best)
        picked[best] = True
        ball = columns[offsets[best]:offsets[best + 1]]
        newly = ball[~covered[ball]]
        covered[newly] = True
        if len(newly):
            touched = np.concatenate([columns[offsets[c]:offsets[c + 1]] for c in newly])
            degree -= np.bincount(touched, minlength=n)
    share = float(covered.mean())
    rest = np.flatnonzero(~picked)[: max(0, min(n_select, n) - len(picks))]
    return np.concatenate([np.array(picks, dtype=np.int64), rest]), share


class ProbCover(Selector):
    """Greedy maximum coverage of delta-balls (module docstring)."""

    name = "probcover"
    inputs = "embeddings"
    summary = "cold start: greedy maximum coverage of delta-balls, delta from k-means purity"

    def check(self, entry: StrategyConfig) -> None:
        if not 0.0 < entry.purity < 1.0:
            raise ValueError(f"probcover: purity must be in (0, 1), got {entry.purity}")

    def select(self, entry: StrategyConfig, candidates: Candidates, n_select: int,
               labeled: np.ndarray | None) -> Picks:
        sample = candidates.reference(entry.sample_size, candidates.seed)
        if len(sample) == 0 or n_select == 0:
            return Picks([], np.zeros((0, 0), np.float32), {})
        delta = entry.delta
        if delta is None:
            centroids = kmeans_centroids(sample.embeddings, entry.n_clusters, seed=candidates.seed)
            delta = purity_delta(sample.embeddings, nearest_centroid(sample.embeddings, centroids)[0],
                                 purity=entry.purity)
        rows, sample_share = probcover(sample.embeddings, n_select, delta=delta, labeled=labeled)
        centres = sample.embeddings[rows] if labeled is None or not len(labeled) else np.vstack(
            [labeled, sample.embeddings[rows]])

        def covered(batch: CandidateBatch) -> np.ndarray:
            return np.array([covered_by(batch.embeddings, centres, delta).sum(), len(batch)], dtype=np.float64)

        hits, total = candidates.batch_sum(covered)
        return Picks([sample.ids[r] for r in rows], sample.embeddings[rows],
                     {"delta": float(delta), "coverage": float(hits / max(total, 1.0)),
                      "sample_coverage": sample_share, "sample": float(len(sample))})
