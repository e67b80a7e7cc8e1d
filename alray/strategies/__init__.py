"""Selection strategies, one module each, found by name through :mod:`alray.strategies.registry`."""

from alray.strategies.balance import balance_quotas, local_quotas
from alray.strategies.base import (
    DISTANCE_EPSILON,
    EMBEDDINGS,
    OBJECTIVE_FLOOR,
    PREDICTIONS,
    CandidateBatch,
    Candidates,
    Filter,
    Objective,
    Strategy,
    combine,
)
from alray.strategies.registry import get_strategy, register, strategy_names, unregister
from alray.strategies.similarity import similarity_objective
from alray.strategies.threshold import THRESHOLD_OPS
from alray.strategies.typicality import cluster_typicality, knn_typicality
from alray.strategies.weights import minmax_objective

__all__ = [
    "DISTANCE_EPSILON", "EMBEDDINGS", "OBJECTIVE_FLOOR", "PREDICTIONS", "THRESHOLD_OPS", "CandidateBatch",
    "Candidates", "Filter", "Objective", "Strategy", "balance_quotas", "cluster_typicality", "combine",
    "get_strategy", "knn_typicality", "local_quotas", "minmax_objective", "register", "similarity_objective",
    "strategy_names", "unregister",
]
