"""The ranking's numbers: each candidate's score and diversity, and the order of the ranking.

``score`` is non-increasing with ``rank``: the picks come first, in pick order, each scored by
what the selection maximised when it was made; the other candidates follow by score, which is
capped at the last pick's (see :data:`alray.tables.RANKING_COLUMNS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alray.coreset import nearest_centre_distances
from alray.selection.rounds import pick_distances


def first_pick_reach(candidates: np.ndarray, first: np.ndarray) -> float:
    """Largest distance from the first pick (D,) to any candidate (N, D): its diversity when no centre precedes it."""
    if not len(candidates):
        return 0.0
    return float(nearest_centre_distances(candidates, first.reshape(1, -1)).max())


def pick_scores(weights: np.ndarray, distances: np.ndarray | None, reach: float | None) -> tuple[np.ndarray,
                                                                                                    np.ndarray]:
    """Scores and diversities (K,) of the picks, in pick order.

    Parameters
    ----------
    weights : (K,) the picks' greedy weights (with diversity) or weights (without)
    distances : (K,) each pick's distance to the centres before it (NaN: none before it), or None
        without diversity
    reach : the first pick's :func:`first_pick_reach`, used where its distance is NaN

    Returns
    -------
    scores : weight x distance (weight alone without diversity); a running minimum keeps float
        noise of the distances from breaking the greedy's non-increasing order
    diversity : the distances, the first pick's reach filled in (NaN without diversity)
    """
    w = np.asarray(weights, dtype=np.float64)
    if distances is None:
        return np.minimum.accumulate(w) if len(w) else w, np.full(len(w), np.nan)
    d = np.asarray(distances, dtype=np.float64).copy()
    if len(d) and np.isnan(d[0]):
        d[0] = reach if reach is not None else np.nan
    scores = w * np.nan_to_num(d, nan=1.0)
    return (np.minimum.accumulate(scores) if len(scores) else scores), d


@dataclass(frozen=True)
class RankingPass:
    """What the ranking pass needs of the selection, to score candidates batch by batch.

    ``picks`` maps a pick's id to (pick order from 1, score, diversity); ``centres`` (C, D) are
    the labeled rows then the picks in id order; ``cap`` is the last pick's score.
    """

    picks: dict[str, tuple[int, float, float]]
    centres: np.ndarray
    cap: float | None
    diversity: bool

    @classmethod
    def of(cls, pick_ids: list[str], picked: np.ndarray, pick_weights: np.ndarray, labeled: np.ndarray | None, *,
           diversity: bool, reach: float | None) -> RankingPass:
        """The pass for picks (ids, embeddings (K, D), greedy weights or weights (K,)) and the labeled rows."""
        if diversity:
            scores, distances = pick_scores(pick_weights, pick_distances(picked, labeled), reach)
        else:
            scores, distances = pick_scores(pick_weights, None, None)
        picks = {i: (r + 1, float(s), float(d))
                 for r, (i, s, d) in enumerate(zip(pick_ids, scores, distances, strict=True))}
        order = np.argsort(np.array(pick_ids, dtype=object), kind="stable") if pick_ids else np.zeros(0, int)
        parts = [m for m in (labeled, picked[order] if pick_ids else None) if m is not None and len(m)]
        centres = np.vstack(parts) if parts else np.zeros((0, 0), dtype=np.float32)
        return cls(picks, centres, float(scores[-1]) if len(scores) else None, diversity)

    def score_batch(self, ids: list[str], embeddings: np.ndarray, greedy_weights: np.ndarray,
                    weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Score (N,), diversity (N,), distance to the nearest centre (N,; NaN: none) and pick order (N,; NaN)."""
        n = len(ids)
        nearest = (nearest_centre_distances(embeddings, self.centres).astype(np.float64)
                   if len(self.centres) and n else np.full(n, np.nan))
        score = other_scores(greedy_weights if self.diversity else weights, nearest, diversity=self.diversity,
                             cap=self.cap)
        diversity = nearest.copy()
        order = np.full(n, np.nan)
        for j, i in enumerate(ids):
            pick = self.picks.get(i)
            if pick is not None:
                order[j], score[j] = pick[0], pick[1]
                if self.diversity:
                    diversity[j] = pick[2]
        return score, diversity, nearest, order


def other_scores(weights: np.ndarray, nearest: np.ndarray, *, diversity: bool, cap: float | None) -> np.ndarray:
    """Scores (N,) of candidates that were not picked.

    With diversity: greedy weight x distance to the nearest centre (weight alone when there is no
    centre); without: the weight. Never above ``cap``, the last pick's score, when there is one.
    """
    w = np.asarray(weights, dtype=np.float64)
    scores = w * np.nan_to_num(np.asarray(nearest, dtype=np.float64), nan=1.0) if diversity else w.copy()
    return np.minimum(scores, cap) if cap is not None else scores
