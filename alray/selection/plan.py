"""A selection config resolved against a features table: which strategy plays which role, on which column.

Both engines start from a :class:`Plan`; its checks name the config key at fault.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from alray.config import FilterConfig, SelectionConfig, StrategyConfig
from alray.errors import ConfigError
from alray.strategies.auto import MODEL_COLUMNS, Auto, Budget
from alray.strategies.base import (
    EMBEDDINGS,
    PREDICTION_COLUMN,
    PREDICTIONS,
    Filter,
    Objective,
    Sampler,
    Selector,
    Strategy,
)
from alray.strategies.registry import get_strategy


@dataclass(frozen=True)
class PlannedObjective:
    """An objective entry, the column it reads (None for embeddings) and the features column holding its value."""

    entry: StrategyConfig
    strategy: Objective
    column: str | None
    name: str

    @property
    def label(self) -> str:
        """The objective's key in the ranking's parts."""
        return self.strategy.label(self.entry)


@dataclass(frozen=True)
class Plan:
    """What the strategies ask of the selection."""

    selection: SelectionConfig
    diversity: StrategyConfig | None
    objectives: list[PlannedObjective]
    filters: list[tuple[FilterConfig, str]]  # (filter, dotted config key), metadata filters then thresholds
    balance: StrategyConfig | None
    balance_column: str | None
    min_distance: float
    label: str
    selector: tuple[StrategyConfig, Selector] | None = None
    sampler: tuple[StrategyConfig, Sampler, str] | None = None  # (entry, strategy, column)
    auto: StrategyConfig | None = None  # an ``auto`` entry, until :func:`resolve_auto` replaces it
    auto_reason: str | None = None  # why ``auto`` chose what it chose

    @property
    def ranks_by_distance(self) -> bool:
        """Whether the ranking scores candidates by distance to the picks (diversity or a selector)."""
        return self.diversity is not None or self.selector is not None

    @property
    def diversity_strength(self) -> float:
        """Exponent of the distance in the greedy's weight x distance^strength."""
        return self.diversity.strength if self.diversity is not None else 1.0

    @property
    def top_m(self) -> int | None:
        """Candidates kept by weight before an unweighted diversity (top_m mode), else None."""
        return self.selection.top_m if self.selection.mode == "top_m" else None


def input_column(entry: StrategyConfig, key: str, columns: Sequence[str]) -> str:
    """The features column an entry reads; ConfigError naming ``key`` when the table lacks it."""
    column = PREDICTION_COLUMN if entry.input == PREDICTIONS else entry.input
    if column not in columns:
        raise ConfigError(f"{key}: no column {entry.input!r} in the features table")
    return column


def strategy_label(selection: SelectionConfig) -> str:
    """The ranking's strategy label, e.g. ``diversity^1+weights:bald^1``."""
    parts = [get_strategy(s.strategy).describe(s) for s in selection.strategies]
    prefix = f"top_m({selection.top_m})+" if selection.mode == "top_m" else ""
    return prefix + "+".join(parts)


def plan_selection(selection: SelectionConfig, columns: Sequence[str]) -> Plan:
    """Resolve ``selection`` against the features ``columns``; ConfigError names a missing column's entry."""
    diversity = balance = None
    balance_column: str | None = None
    objectives: list[PlannedObjective] = []
    selector: tuple[StrategyConfig, Selector] | None = None
    sampler: tuple[StrategyConfig, Sampler, str] | None = None
    auto: StrategyConfig | None = None
    filters = [(spec, f"selection.filters.{i}") for i, spec in enumerate(selection.filters)]
    for i, entry in enumerate(selection.strategies):
        key = f"selection.strategies.{i}"
        strategy: Strategy = get_strategy(entry.strategy)
        column = None if entry.input == EMBEDDINGS else input_column(entry, key, columns)
        if isinstance(strategy, Filter):
            assert column is not None
            filters.append((strategy.as_filter(entry, column), key))
        elif isinstance(strategy, Objective):
            objectives.append(PlannedObjective(entry, strategy, column, f"_objective_{i}"))
        elif strategy.role == "diversity":
            diversity = entry
        elif strategy.role == "balance":
            balance, balance_column = entry, column
        elif isinstance(strategy, Sampler):
            if sampler is not None:
                raise ConfigError(f"{key}: only one of power, softmax and softrank per selection")
            assert column is not None
            sampler = (entry, strategy, column)
        elif isinstance(strategy, Auto):
            auto = entry
        elif isinstance(strategy, Selector):
            if selector is not None:
                raise ConfigError(f"{key}: only one of typiclust, probcover and other selectors per selection")
            selector = (entry, strategy)
    if selector is not None and (diversity is not None or objectives or balance is not None):
        key = f"selection.strategies.{selection.strategies.index(selector[0])}"
        raise ConfigError(f"{key}: {selector[0].strategy} picks the batch itself; combine it only with filters and "
                          "thresholds, not with diversity, objectives or balance")
    if sampler is not None and (diversity is not None or selector is not None):
        key = f"selection.strategies.{selection.strategies.index(sampler[0])}"
        raise ConfigError(f"{key}: {sampler[0].strategy} draws the batch at random; combine it with filters, "
                          "thresholds, objectives and balance, not with diversity or a selector")
    if auto is not None and (len(objectives) or diversity or balance or selector or sampler
                             or sum(isinstance(get_strategy(e.strategy), Auto) for e in selection.strategies) > 1):
        key = f"selection.strategies.{selection.strategies.index(auto)}"
        raise ConfigError(f"{key}: auto chooses the strategies itself; combine it only with filters and thresholds")
    min_distance = max(selection.near_duplicate_distance, (diversity.min_distance or 0.0) if diversity else 0.0)
    return Plan(selection=selection, diversity=diversity, objectives=objectives, filters=filters, balance=balance,
                balance_column=balance_column, min_distance=min_distance, label=strategy_label(selection),
                selector=selector, sampler=sampler, auto=auto)


def keyed_inputs(selection: SelectionConfig) -> list[tuple[str, str]]:
    """Each column the strategies and filters read, with the config key that names it
    (``selection.strategies.1``, ``selection.filters.0``): what an error about that column names."""
    asks = [(f"selection.strategies.{i}", s.input) for i, s in enumerate(selection.strategies)]
    return asks + [(f"selection.filters.{i}", f.column) for i, f in enumerate(selection.filters)]


def needed_columns(plan: Plan, columns: Sequence[str]) -> list[str]:
    """The features ``columns`` the selection of ``plan`` reads, in table order: ids, embeddings, what
    the filters, strategies and balance read, and (for ``auto``) the model's outputs it may choose from."""
    wanted = {"id", "embedding", *(f.column for f, _ in plan.filters)}
    wanted |= {o.column for o in plan.objectives if o.column is not None}
    for entry in plan.selection.strategies:
        strategy = get_strategy(entry.strategy)
        if entry.input != EMBEDDINGS:
            wanted.add(PREDICTION_COLUMN if entry.input == PREDICTIONS else entry.input)
        wanted.update(strategy.reads(entry))
    if plan.auto is not None:
        wanted.update(MODEL_COLUMNS)
    return [c for c in columns if c in wanted]


def resolve_auto(plan: Plan, budget: Budget) -> Plan:
    """``plan`` with its ``auto`` entry replaced by the strategies it chooses under ``budget`` (as is without one).

    The new plan's label is ``auto(<chosen label>)`` and its ``auto_reason`` says why.
    """
    if plan.auto is None:
        return plan
    chosen, reason = Auto().resolve(plan.auto, budget)
    strategies = [e for e in plan.selection.strategies if e is not plan.auto]
    position = plan.selection.strategies.index(plan.auto)
    selection = plan.selection.model_copy(update={"strategies": strategies[:position] + chosen + strategies[position:]})
    resolved = plan_selection(selection, budget.columns)
    return dataclasses.replace(resolved, label=f"auto({resolved.label})", auto_reason=reason)


def target_count(selection: SelectionConfig, n_candidates: int) -> int:
    """How many to select among ``n_candidates``: n_samples, a proportion, or all (a min_distance stops)."""
    if selection.n_samples is not None:
        return min(selection.n_samples, n_candidates)
    if selection.proportion_samples is not None:
        return min(n_candidates, math.ceil(selection.proportion_samples * n_candidates))
    return n_candidates
