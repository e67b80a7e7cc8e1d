"""One round of selection over arrays: the weighted k-center greedy with quotas, or picks by weight.

Every round of the two-stage coreset (:mod:`alray.selection.rounds`) is :func:`greedy_picks`;
a selection without diversity is :func:`select_by_weight`.
"""

from __future__ import annotations

import numpy as np

from alray.coreset import k_center_greedy, nearest_centre_distances


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
