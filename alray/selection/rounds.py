"""The rounds of the distributed two-stage k-center, on Arrow tables of candidates.

A candidate table holds ``id``, ``embedding`` and ``weight`` (the greedy weight), and
``_group`` (the class, as a string) when quotas apply. Round one, :func:`local_centres`, runs
in every partition and keeps :func:`~alray.coreset.local_k` centres; :func:`reduce_levels`
says how many further partitioned rounds keep the union small; :func:`merged_rows` picks the
final centres from the union (Malkomes et al., NeurIPS 2015). The Spark stage calls these in
``mapInArrow`` tasks and on the driver; :mod:`alray.selection.local` calls them in a loop.
Rows are sorted by id inside every round, so a round's result depends on which rows it got,
never on the order they arrived in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from alray.coreset import UNION_CAP, local_k, nearest_centre_distances
from alray.selection.greedy import greedy_picks, select_by_weight
from alray.strategies.balance import local_quotas
from alray.strategies.base import embedding_matrix

# Reduce levels after the first round, at most.
MAX_REDUCE_LEVELS = 3


@dataclass(frozen=True)
class GreedySpec:
    """What every round shares: the labeled centres (M, D), class quotas and the minimum distance."""

    n_select: int
    oversample: float
    seed: int
    labeled: np.ndarray | None = None
    group_index: dict[str, int] | None = None
    quotas: np.ndarray | None = None
    min_distance: float | None = None


def sorted_by_id(table: pa.Table) -> pa.Table:
    """``table`` in id order (Arrow's byte order of UTF-8, as Spark sorts strings)."""
    return table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))


def _groups(table: pa.Table, index: dict[str, int]) -> np.ndarray:
    return np.array([index[str(v)] for v in table.column("_group").to_pylist()], dtype=np.int64)


def _greedy(table: pa.Table, k: int, quotas: np.ndarray | None, spec: GreedySpec) -> np.ndarray:
    groups = _groups(table, spec.group_index) if spec.group_index is not None else None
    weights = pc.cast(table.column("weight"), pa.float64()).to_numpy()
    return greedy_picks(embedding_matrix(table), weights, k, labeled=spec.labeled, groups=groups, quotas=quotas,
                        min_distance=spec.min_distance, seed=spec.seed)


def local_centres(table: pa.Table, n_partitions: int, spec: GreedySpec) -> pa.Table:
    """One partition's round: its :func:`~alray.coreset.local_k` weighted k-center picks (rows of ``table``)."""
    if table.num_rows == 0 or spec.n_select == 0:
        return table.slice(0, 0)
    table = sorted_by_id(table)
    k = local_k(spec.n_select, n_partitions, spec.oversample, table.num_rows)
    # A class's share of the partition's budget, not of its rows: a small partition keeps all it may,
    # else a class of few candidates that all hash to one partition would reach the merge short.
    budget = local_k(spec.n_select, n_partitions, spec.oversample, 2**62)
    quotas = local_quotas(spec.quotas, budget, spec.n_select) if spec.quotas is not None else None
    return table.take(pa.array(_greedy(table, k, quotas, spec), pa.int64()))


def reduce_levels(n_select: int, n_partitions: int, oversample: float, *, union_cap: int = UNION_CAP) -> list[int]:
    """Partition counts of the reduce levels after round one (often none).

    A level runs while the bound on the union (partitions x local k) exceeds ``union_cap``
    and the level shrinks that bound; at most :data:`MAX_REDUCE_LEVELS`.
    """
    bound = n_partitions * local_k(n_select, n_partitions, oversample, 2**62)
    levels: list[int] = []
    for _ in range(MAX_REDUCE_LEVELS):
        if bound <= union_cap:
            break
        partitions = math.ceil(bound / union_cap)
        next_bound = partitions * local_k(n_select, partitions, oversample, 2**62)
        if next_bound >= bound:
            break
        levels.append(partitions)
        bound = next_bound
    return levels


def merged_rows(union: pa.Table, spec: GreedySpec) -> pa.Table:
    """The final round over the union of local centres: the picked rows of ``union``, in pick order."""
    if union.num_rows == 0 or spec.n_select == 0:
        return union.slice(0, 0)
    union = sorted_by_id(union)
    return union.take(pa.array(_greedy(union, spec.n_select, spec.quotas, spec), pa.int64()))


def picks_of(picked: pa.Table) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Picked candidate rows as their ids, embeddings (K, D, a writable copy) and greedy weights (K,)."""
    return ([str(i) for i in picked.column("id").to_pylist()], np.array(embedding_matrix(picked)),
            pc.cast(picked.column("weight"), pa.float64()).to_numpy())


def merge_round(union: pa.Table, spec: GreedySpec) -> tuple[list[str], np.ndarray]:
    """:func:`merged_rows` as the picks' ids in order and their embeddings (K, D)."""
    ids, embeddings, _ = picks_of(merged_rows(union, spec))
    return ids, embeddings


def by_weight_round(ordered: pa.Table, spec: GreedySpec) -> tuple[list[str], np.ndarray, np.ndarray]:
    """No diversity: picks from candidates ordered by weight (descending, then id), skipping full
    classes and rows closer than the minimum distance to a pick or a labeled row.

    ``ordered`` holds ``id``, ``embedding``, ``_weight`` and ``_group`` when quotas apply.
    Returns the picks' ids, embeddings (K, D) and weights (K,).
    """
    groups = _groups(ordered, spec.group_index) if spec.group_index is not None else None
    weights = pc.cast(ordered.column("_weight"), pa.float64()).to_numpy()
    embeddings = embedding_matrix(ordered)
    picks = select_by_weight(embeddings, weights, spec.n_select, groups=groups, quotas=spec.quotas,
                             min_distance=spec.min_distance or 0.0, labeled=spec.labeled)
    ids = ordered.column("id").to_pylist()
    return [str(ids[i]) for i in picks], embeddings[picks], weights[picks]


# Picks measured against each other at a time in :func:`pick_distances` and :func:`without_near_duplicates`.
_PICK_BLOCK = 1024


def _block_squared_distances(block: np.ndarray) -> np.ndarray:
    """Squared distances (B, B) between the rows of one block of picks, in float64."""
    rows = block.astype(np.float64)
    sq = np.einsum("ij,ij->i", rows, rows)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * rows @ rows.T, 0.0)


def pick_distances(picked: np.ndarray, labeled: np.ndarray | None) -> np.ndarray:
    """Distance (K,) of each pick (K, D) to the centres before it and the labeled set; NaN: no centre yet.

    Blocks of picks are measured against all earlier blocks with one chunked product each and
    within the block directly, so the cost is K^2 x D multiply-adds in BLAS, not K passes.
    """
    k = len(picked)
    if not k:
        return np.empty(0)
    points = np.asarray(picked)
    if labeled is not None and len(labeled):
        running = nearest_centre_distances(points, labeled).astype(np.float64)
    else:
        running = np.full(k, np.inf)
    for start in range(0, k, _PICK_BLOCK):
        stop = min(start + _PICK_BLOCK, k)
        if start:
            earlier = nearest_centre_distances(points[start:stop], points[:start]).astype(np.float64)
            running[start:stop] = np.minimum(running[start:stop], earlier)
        within = _block_squared_distances(points[start:stop])
        within[np.triu_indices(stop - start)] = np.inf  # only the picks before each one
        running[start:stop] = np.minimum(running[start:stop], np.sqrt(within.min(axis=1)))
    return np.where(np.isfinite(running), running, np.nan)


def kept_apart(ids: list[str], picked: np.ndarray, labeled: np.ndarray | None, min_distance: float,
               ) -> tuple[list[str], np.ndarray]:
    """A selector's picks (ids, embeddings (K, D)) without those :func:`without_near_duplicates` drops."""
    keep = without_near_duplicates(picked, labeled, min_distance)
    return [i for i, k in zip(ids, keep, strict=True) if k], picked[keep]


def without_near_duplicates(picked: np.ndarray, labeled: np.ndarray | None, min_distance: float) -> np.ndarray:
    """Which picks (K, D) to keep, in order: none closer than ``min_distance`` to a kept pick or a labeled row.

    For the selectors, whose own procedures do not know ``near_duplicate_distance``; the batch
    then comes out short, as a minimum distance stops the k-center.
    """
    k = len(picked)
    keep = np.ones(k, dtype=bool)
    if not k or min_distance <= 0:
        return keep
    points = np.asarray(picked)
    if labeled is not None and len(labeled):
        keep &= nearest_centre_distances(points, labeled) >= min_distance
    for start in range(0, k, _PICK_BLOCK):
        stop = min(start + _PICK_BLOCK, k)
        kept_before = np.flatnonzero(keep[:start])
        if len(kept_before):
            keep[start:stop] &= nearest_centre_distances(points[start:stop], points[kept_before]) >= min_distance
        close = _block_squared_distances(points[start:stop]) < min_distance * min_distance
        for j in range(stop - start):
            if keep[start + j]:
                later = np.flatnonzero(close[j, j + 1:]) + j + 1
                keep[start + later] = False
    return keep
