"""One round of selection over arrays: the weighted k-center greedy with quotas, or picks by weight.

Every round of the two-stage coreset (:mod:`alray.selection.rounds`) is :func:`greedy_picks`;
a selection without diversity is :func:`select_by_weight`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from alray.coreset import k_center_greedy, nearest_centre_distances
from alray.strategies.base import combine


def first_pick(weights: np.ndarray, groups: np.ndarray | None, quotas: np.ndarray | None) -> int:
    """Index of the heaviest row whose class still has room: where the greedy starts."""
    allowed = np.ones(len(weights), dtype=bool) if groups is None or quotas is None else quotas[groups] > 0
    masked = np.where(allowed, weights, -np.inf)
    return int(np.argmax(masked))


def greedy_picks(embeddings: np.ndarray, weights: np.ndarray, k: int, *, labeled: np.ndarray | None = None,
                 groups: np.ndarray | None = None, quotas: np.ndarray | None = None,
                 min_distance: float | None = None, seed: int = 0) -> np.ndarray:
    """Up to ``k`` rows (N, D) by weighted k-center greedy: row indices in pick order.

    The labeled rows (M, D) are existing centres; without them the first pick is the heaviest
    row whose class has room (:func:`first_pick`). ``groups`` (N,) and ``quotas`` (G,) cap the
    picks per class; no pick lies closer than ``min_distance`` to a centre.
    """
    has_labeled = labeled is not None and len(labeled) > 0
    picks, _ = k_center_greedy(
        embeddings, k, weights=weights, already_selected=labeled if has_labeled else None,
        first=None if has_labeled else first_pick(weights, groups, quotas),
        seed=seed, min_distance=min_distance, groups=groups, quotas=quotas)
    return picks


def select_by_weight(embeddings: np.ndarray, weights: np.ndarray, n_select: int, *,
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
    """One round over all rows (no partitions): the greedy or the ranking, from objective arrays.

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
        ranked = select_by_weight(embeddings, weights, n_select, groups=groups, quotas=quotas,
                                min_distance=min_distance, labeled=labeled)
        return LocalSelection(np.asarray(ranked, dtype=np.int64), weights)
    pool = np.arange(n)
    greedy_weights = np.power(weights, 1.0 / diversity_strength)
    if top_m is not None:
        pool = np.lexsort((np.arange(n), -weights))[: min(top_m, n)]
        pool.sort()
        greedy_weights = np.ones(n)
    sub_groups = groups[pool] if groups is not None else None
    picks = greedy_picks(embeddings[pool], greedy_weights[pool], n_select, labeled=labeled, groups=sub_groups,
                         quotas=quotas, min_distance=min_distance or None)
    return LocalSelection(pool[picks], weights)
