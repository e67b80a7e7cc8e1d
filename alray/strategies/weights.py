"""``weights``: a numeric score or column, scaled to [0, 1] by the candidates' range, as an objective."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from alray.strategies.base import OBJECTIVE_FLOOR, PREDICTIONS, CandidateBatch, Candidates, Objective

if TYPE_CHECKING:
    from alray.config import StrategyConfig


def minmax_objective(values: npt.ArrayLike, low: float | None, high: float | None) -> np.ndarray:
    """Scale values (N,) to [0, 1] by the candidates' min and max, plus a floor; NaN counts as the min.

    Scale-free by construction: a score and its tenfold give the same objective.
    """
    v = np.asarray(values, dtype=np.float64)
    if low is None or high is None or not high > low:
        return np.ones_like(v) + OBJECTIVE_FLOOR
    scaled = (v - low) / (high - low)
    return np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0) + OBJECTIVE_FLOOR


class Weights(Objective):
    """Prefer high values of a score (e.g. BALD) or a numeric metadata column."""

    name = "weights"
    inputs = "column"
    summary = "a score or numeric column, min-max scaled: higher values are preferred"

    def check(self, entry: StrategyConfig) -> None:
        if entry.input == PREDICTIONS:
            raise ValueError("strategy 'weights' takes a numeric score or column, not predictions")

    def prepare(self, entry: StrategyConfig, column: str | None, candidates: Candidates) -> Any:
        assert column is not None
        return candidates.column_range(column)

    def evaluate(self, entry: StrategyConfig, column: str | None, state: Any, batch: CandidateBatch) -> np.ndarray:
        assert column is not None
        low, high = state
        return minmax_objective(batch.column(column), low, high)
