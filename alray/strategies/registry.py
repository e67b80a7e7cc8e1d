"""The one registry of selection strategies: config names to strategy objects.

The config's schema and checks, the Spark stage, the single-machine path, the Python API and
the simulator all look strategies up here. Adding a strategy is one module holding its class
and one line in ``_BUILT_IN`` (or a :func:`register` call from outside the package).
"""

from __future__ import annotations

from alray.strategies.auto import Auto
from alray.strategies.badge import Badge
from alray.strategies.balance import Balance
from alray.strategies.base import INPUT_KINDS, ROLES, Filter, Objective, Strategy
from alray.strategies.cluster_margin import ClusterMargin
from alray.strategies.diversity import Diversity
from alray.strategies.object_balance import ObjectBalance
from alray.strategies.probcover import ProbCover
from alray.strategies.similarity import Similarity
from alray.strategies.stochastic import PowerSampling, SoftmaxSampling, SoftrankSampling
from alray.strategies.threshold import Threshold
from alray.strategies.typicality import Typicality
from alray.strategies.typiclust import TypiClust
from alray.strategies.weights import Weights

_BUILT_IN: tuple[Strategy, ...] = (Diversity(), Weights(), Threshold(), Balance(), ObjectBalance(), Similarity(),
                                   Typicality(), TypiClust(), ProbCover(), PowerSampling(), SoftmaxSampling(),
                                   SoftrankSampling(), Badge(), ClusterMargin(), Auto())

_REGISTRY: dict[str, Strategy] = {strategy.name: strategy for strategy in _BUILT_IN}


def register(strategy: Strategy) -> Strategy:
    """Add a strategy under its ``name``; ValueError when the name is taken or its role is unknown."""
    if strategy.name in _REGISTRY:
        raise ValueError(f"strategy {strategy.name!r} is registered already")
    if strategy.role not in ROLES:
        raise ValueError(f"strategy {strategy.name!r}: role must be one of {list(ROLES)}, got {strategy.role!r}")
    if not isinstance(strategy, (Objective, Filter)):
        # the selection core runs diversity (the k-center rounds), balance (quotas) and the selectors itself
        raise ValueError(f"strategy {strategy.name!r}: a registered strategy is an Objective or a Filter")
    if strategy.inputs not in INPUT_KINDS:
        raise ValueError(f"strategy {strategy.name!r}: inputs must be one of {list(INPUT_KINDS)}")
    _REGISTRY[strategy.name] = strategy
    return strategy


def unregister(name: str) -> None:
    """Remove a strategy added with :func:`register` (built-in strategies stay)."""
    if any(s.name == name for s in _BUILT_IN):
        raise ValueError(f"strategy {name!r} is built in")
    _REGISTRY.pop(name, None)


def strategy_names() -> tuple[str, ...]:
    """Every registered strategy name, built-in ones first."""
    return tuple(_REGISTRY)


def get_strategy(name: str) -> Strategy:
    """The strategy registered as ``name``; ValueError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(_REGISTRY)}") from None
