"""``similarity``: prefer candidates close to query embeddings (find more like these)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from alray.coreset import nearest_centre_distances
from alray.strategies.base import DISTANCE_EPSILON, CandidateBatch, Candidates, Objective

if TYPE_CHECKING:
    from alray.config import StrategyConfig


def similarity_objective(X: npt.ArrayLike, queries: npt.ArrayLike) -> np.ndarray:
    """Closeness (N,) to the nearest query embedding: 1 / distance (scale-free in a product)."""
    distances = nearest_centre_distances(X, queries).astype(np.float64)
    return 1.0 / (distances + DISTANCE_EPSILON)


class Similarity(Objective):
    """Closeness to the nearest of some query embeddings (a table of them, or ids of the pool)."""

    name = "similarity"
    inputs = "embeddings"
    summary = "closeness to the nearest query embedding (query.path or query.ids)"

    def check(self, entry: StrategyConfig) -> None:
        if entry.query is None or (entry.query.path is None and not entry.query.ids):
            raise ValueError("strategy 'similarity' needs query.path or query.ids")

    def prepare(self, entry: StrategyConfig, column: str | None, candidates: Candidates) -> Any:
        assert entry.query is not None
        return candidates.query_embeddings(entry.query)

    def evaluate(self, entry: StrategyConfig, column: str | None, state: Any, batch: CandidateBatch) -> np.ndarray:
        return similarity_objective(batch.embeddings, state)
