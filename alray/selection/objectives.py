"""Objective values, weights and classes of candidates, batch by batch: what both engines compute per task."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from alray.selection.batches import TableCandidates
from alray.selection.plan import Plan, PlannedObjective
from alray.strategies.balance import class_labels
from alray.strategies.base import Balancer, CandidateBatch, Candidates, combine
from alray.strategies.registry import get_strategy


@dataclass(frozen=True)
class Prepared:
    """What the objectives and the sampler asked of the whole candidate set (their ``prepare``)."""

    objectives: list[tuple[PlannedObjective, Any]]
    sampler: Any = None


def prepare_objectives(plan: Plan, source: Candidates) -> Prepared:
    """Each objective with what it asked of the whole candidate set, and the sampler's."""
    sampler = None
    if plan.sampler is not None:
        entry, strategy, column = plan.sampler
        sampler = strategy.prepare(entry, column, source)
    return Prepared([(o, o.strategy.prepare(o.entry, o.column, source)) for o in plan.objectives], sampler)


def with_objectives(batches: list[pa.Table], plan: Plan, source: TableCandidates) -> list[pa.Table]:
    """Each batch with one float64 column per objective, ``_weight`` and ``_greedy_weight``."""
    states = prepare_objectives(plan, source)
    return [pa.table(add_objective_columns(b, CandidateBatch.of(b), plan, states)) for b in batches]


def add_objective_columns(table: pa.Table | pa.RecordBatch, batch: CandidateBatch, plan: Plan,
                          prepared: Prepared) -> pa.Table | pa.RecordBatch:
    """One batch with its objective values, the weight (their product) and the greedy weight.

    The greedy maximises weight x distance^strength, i.e. weight^(1/strength) x distance; in
    top_m mode the greedy is unweighted among the top_m rows. With a sampler the weight is the
    sampler's key plus the log of the objectives' product: the largest weights are then a draw
    with probability the sampling's times that product.
    """
    states = prepared.objectives
    values = [(o.strategy.evaluate(o.entry, o.column, state, batch), o.entry.strength) for o, state in states]
    weight = combine(values, len(batch))
    greedy = np.ones(len(batch)) if plan.top_m is not None else np.power(weight, 1.0 / plan.diversity_strength)
    if plan.sampler is not None:
        entry, sampler, column = plan.sampler
        with np.errstate(divide="ignore"):
            weight = sampler.keys(entry, column, prepared.sampler, batch) + np.log(weight)
    columns = [*table.columns, *[pa.array(v, pa.float64()) for v, _ in values],
               pa.array(weight, pa.float64()), pa.array(greedy, pa.float64())]
    names = [*table.schema.names, *[o.name for o, _ in states], "_weight", "_greedy_weight"]
    if isinstance(table, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(columns, names=names)
    return pa.Table.from_arrays(columns, names=names)


def quotas_for(plan: Plan, available: Mapping[str, int], n_select: int) -> tuple[dict[str, int], np.ndarray] | None:
    """Group index per class label and quota per group, when a balance strategy is configured."""
    if plan.balance is None:
        return None
    strategy = get_strategy(plan.balance.strategy)
    assert isinstance(strategy, Balancer)
    quotas = strategy.plan_quotas(plan.balance, available, n_select)
    groups = sorted(quotas.quotas)
    index = {group: i for i, group in enumerate(groups)}
    if quotas.group_of is not None:
        index = {label: index[group] for label, group in quotas.group_of.items()}
    return index, np.array([quotas.quotas[group] for group in groups])


def greedy_table(candidates: pa.Table, plan: Plan) -> pa.Table:
    """The columns the rounds read: id, embedding, the greedy weight and the class."""
    columns = {"id": candidates.column("id"), "embedding": candidates.column("embedding"),
               "weight": candidates.column("_greedy_weight")}
    if plan.balance_column is not None:
        columns["_group"] = pa.array(class_labels(candidates.column(plan.balance_column)), pa.string())
    return pa.table(columns)
