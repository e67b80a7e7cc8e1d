"""Selection objectives and how they combine: NumPy arrays in, per-sample objectives or picks out.

The Spark stage evaluates these per Arrow batch; the single-machine :func:`select_local` runs
the same strategies end to end for tests, benchmarks and the simulator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from alray.coreset import k_center_greedy, nearest_centre_distances

# Keeps every candidate selectable: an objective scales a candidate's chances, never erases them.
OBJECTIVE_FLOOR = 1e-6
# Distances below this count as zero in the inverse-distance objectives.
DISTANCE_EPSILON = 1e-6


def minmax_objective(values: npt.ArrayLike, low: float | None, high: float | None) -> np.ndarray:
    """Scale values (N,) to [0, 1] by the candidates' min and max, plus a floor; NaN counts as the min.

    Scale-free by construction: a score and its tenfold give the same objective.
    """
    v = np.asarray(values, dtype=np.float64)
    if low is None or high is None or not high > low:
        return np.ones_like(v) + OBJECTIVE_FLOOR
    scaled = (v - low) / (high - low)
    return np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0) + OBJECTIVE_FLOOR


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


def similarity_objective(X: npt.ArrayLike, queries: npt.ArrayLike) -> np.ndarray:
    """Closeness (N,) to the nearest query embedding: 1 / distance (scale-free in a product)."""
    distances = nearest_centre_distances(X, queries).astype(np.float64)
    return 1.0 / (distances + DISTANCE_EPSILON)


def combine(objectives: Sequence[tuple[np.ndarray, float]], n_rows: int) -> np.ndarray:
    """Product of each objective (N,) raised to its strength; ones when there is none."""
    combined = np.ones(n_rows)
    for values, strength in objectives:
        combined *= np.power(np.maximum(np.asarray(values, dtype=np.float64), 0.0), strength)
    return combined


def balance_quotas(available: Mapping[str, int], n_select: int,
                   target: str | Mapping[str, float]) -> dict[str, int]:
    """How many samples of each class to select so that the selection follows ``target``.

    Parameters
    ----------
    available : candidates per class (classes named by strings)
    n_select : samples to select in total
    target : ``"uniform"``, ``"input"`` (as in ``available``) or ``{class: share}`` (classes
        compared as strings; an absent class gets no share)

    Returns
    -------
    dict class -> quota, each within one sample of ``share x n_select`` when the classes hold
    enough candidates; a class short of candidates gives its remainder to the others in
    proportion to their shares. The quotas never exceed ``available``.
    """
    classes = sorted(available)
    if isinstance(target, str):
        shares = {c: (1.0 if target == "uniform" else float(available[c])) for c in classes}
    else:
        shares = {c: float(target.get(c, 0.0)) for c in classes}
    quotas = {c: 0 for c in classes}
    left = min(n_select, sum(available[c] for c in classes if shares[c] > 0))
    open_classes = [c for c in classes if shares[c] > 0 and available[c] > 0]
    while left > 0 and open_classes:
        total = sum(shares[c] for c in open_classes)
        ideal = {c: left * shares[c] / total for c in open_classes}
        grant = {c: math.floor(ideal[c]) for c in open_classes}
        # largest remainders first (class order breaks ties) so the total is exact
        for c in sorted(open_classes, key=lambda c: (-(ideal[c] - grant[c]), c))[: left - sum(grant.values())]:
            grant[c] += 1
        for c in open_classes:
            give = min(grant[c], available[c] - quotas[c])
            quotas[c] += give
            left -= give
        open_classes = [c for c in open_classes if quotas[c] < available[c]]
    return quotas


def local_quotas(quotas: npt.ArrayLike, k_local: int, n_select: int) -> np.ndarray:
    """Per-partition share of global quotas: enough of each class for the global round to choose from."""
    counts = np.asarray(quotas, dtype=np.int64)
    if n_select <= 0:
        return np.zeros_like(counts)
    return np.array([math.ceil(int(q) * k_local / n_select) for q in counts], dtype=np.int64)


def first_pick(weights: np.ndarray, groups: np.ndarray | None, quotas: np.ndarray | None) -> int:
    """Index of the heaviest row whose class still has room: where the greedy starts."""
    allowed = np.ones(len(weights), dtype=bool) if groups is None or quotas is None else quotas[groups] > 0
    masked = np.where(allowed, weights, -np.inf)
    return int(np.argmax(masked))


def select_by_rank(embeddings: np.ndarray, weights: np.ndarray, n_select: int, *,
                   groups: np.ndarray | None = None, quotas: np.ndarray | None = None,
                   min_distance: float = 0.0, labeled: np.ndarray | None = None) -> list[int]:
    """Pick rows by descending weight (no diversity), honouring class quotas and a minimum distance.

    Returns row indices in pick order (ties: lower index first).
    """
    order = np.lexsort((np.arange(len(weights)), -np.asarray(weights, dtype=np.float64)))
    remaining = None if quotas is None else np.array(quotas, dtype=np.int64)
    chosen: list[int] = []
    for index in order:
        if len(chosen) >= n_select:
            break
        if remaining is not None and groups is not None and remaining[groups[index]] <= 0:
            continue
        if min_distance > 0:
            centres = [embeddings[chosen]] if chosen else []
            if labeled is not None and len(labeled):
                centres.append(labeled)
            nearest = nearest_centre_distances(embeddings[index : index + 1], np.vstack(centres)) if centres else None
            if nearest is not None and nearest[0] < min_distance:
                continue
        chosen.append(int(index))
        if remaining is not None and groups is not None:
            remaining[groups[index]] -= 1
    return chosen


@dataclass
class LocalSelection:
    """Result of :func:`select_local`: picks in order and every row's combined weight."""

    indices: np.ndarray
    weights: np.ndarray


def select_local(embeddings: np.ndarray, n_select: int, *, objectives: Sequence[tuple[np.ndarray, float]] = (),
                 diversity: bool = True, diversity_strength: float = 1.0, min_distance: float = 0.0,
                 labeled: np.ndarray | None = None, groups: np.ndarray | None = None,
                 quotas: np.ndarray | None = None, top_m: int | None = None) -> LocalSelection:
    """Single-machine selection with the stage's semantics.

    Parameters
    ----------
    embeddings : (N, d) candidate embeddings
    n_select : samples to select
    objectives : (values (N,), strength) pairs, multiplied into one weight per row
    diversity : weighted k-center when true, else rank by weight
    diversity_strength : exponent of the distance in ``weight x distance^strength``
    min_distance : no two picks (nor a pick and a labeled row) closer than this
    labeled : (M, d) embeddings of already labeled samples, existing centres
    groups, quotas : class index per row (N,) and picks allowed per class
    top_m : keep the top_m rows by weight, then diversify among them unweighted

    Returns
    -------
    LocalSelection with the picked indices in order and the combined weights (N,).
    """
    n = len(embeddings)
    weights = combine(objectives, n)
    if not diversity:
        ranked = select_by_rank(embeddings, weights, n_select, groups=groups, quotas=quotas,
                                min_distance=min_distance, labeled=labeled)
        return LocalSelection(np.asarray(ranked, dtype=np.int64), weights)
    pool = np.arange(n)
    greedy_weights = np.power(weights, 1.0 / diversity_strength)
    if top_m is not None:
        pool = np.lexsort((np.arange(n), -weights))[: min(top_m, n)]
        pool.sort()
        greedy_weights = np.ones(n)
    sub_groups = groups[pool] if groups is not None else None
    has_labeled = labeled is not None and len(labeled) > 0
    picks, _ = k_center_greedy(
        embeddings[pool], n_select, weights=greedy_weights[pool], already_selected=labeled if has_labeled else None,
        first=None if has_labeled else first_pick(greedy_weights[pool], sub_groups, quotas),
        min_distance=min_distance or None, groups=sub_groups, quotas=quotas)
    return LocalSelection(pool[picks], weights)
