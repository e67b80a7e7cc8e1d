"""The selection on one machine: the Spark stage's plan, strategies and rounds, over an Arrow table.

Every step calls the functions the Spark stage calls, with the same partition hash
(:func:`alray.selection.partitions.partition_of`) and the same Arrow batches
(:func:`alray.selection.batches.spark_batches`), so for the same features and config the picks
are the Spark stage's, pick for pick. Only the k-means of ``typicality: kmeans`` differs
(scikit-learn here, Spark ML there). Used by :func:`alray.select`, the simulator and the benchmarks.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from alray.config import SelectionConfig
from alray.coreset import nearest_centre_distances
from alray.errors import InputError
from alray.selection.batches import TableCandidates, spark_batches, spark_partitions
from alray.selection.filters import rejection_reasons
from alray.selection.objectives import greedy_table, quotas_for, with_objectives
from alray.selection.partitions import partition_of
from alray.selection.plan import Plan, plan_selection, resolve_auto, target_count
from alray.selection.ranking import RankingPass, first_pick_reach
from alray.selection.result import LABELED_REASON, PREVIOUS_REASON, SelectResult
from alray.selection.rounds import (
    GreedySpec,
    by_weight_round,
    kept_apart,
    local_centres,
    merge_round,
    reduce_levels,
    sorted_by_id,
)
from alray.strategies.auto import MODEL_COLUMNS, Budget
from alray.strategies.balance import class_labels
from alray.strategies.base import embedding_matrix
from alray.tables import RANKING_SCHEMA


def two_stage(rows: pa.Table, n_partitions: int, spec: GreedySpec) -> tuple[list[str], np.ndarray]:
    """The distributed two-stage k-center, partition by partition: the picks' ids and embeddings."""
    ids = [str(i) for i in rows.column("id").to_pylist()]
    union_parts = []
    part = partition_of(ids, n_partitions, spec.seed)
    for p in range(n_partitions):
        union_parts.append(local_centres(rows.filter(pa.array(part == p)), n_partitions, spec))
    union = pa.concat_tables(union_parts)
    for level, partitions in enumerate(reduce_levels(spec.n_select, n_partitions, spec.oversample), start=1):
        part = partition_of([str(i) for i in union.column("id").to_pylist()], partitions, spec.seed + level)
        union = pa.concat_tables([local_centres(union.filter(pa.array(part == p)), partitions, spec)
                                  for p in range(partitions)])
    return merge_round(union, spec)


def two_stage_k_center(X: npt.ArrayLike, k: int, n_partitions: int, *, oversample: float = 4.0,
                       weights: npt.ArrayLike | None = None, already_selected: npt.ArrayLike | None = None,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The Spark stage's two-stage k-center on arrays: rows named by their index, zero-padded.

    Round one runs in the hash partitions of the ids, each starting from its heaviest row
    (the first row in id order without ``weights``) or from the row farthest from
    ``already_selected``; the reduce levels and the merge round follow, as on Spark.

    Parameters
    ----------
    X : (N, D) candidate embeddings
    k : centres to pick
    n_partitions : first-round partitions
    oversample : see :func:`alray.coreset.local_k`
    weights : (N,) non-negative greedy weights (ones when absent)
    already_selected : (M, D) existing centres
    seed : the partition hash seed

    Returns
    -------
    indices : (n_picked,) int64 rows of ``X`` in pick order
    min_distances : (N,) float32 distance of every row to its nearest centre (picks and existing;
        inf when there is none)
    """
    points = np.asarray(X, dtype=np.float32)
    n = len(points)
    width = len(str(max(n - 1, 0)))
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    existing = None if already_selected is None else np.asarray(already_selected, dtype=np.float32)
    flat = pa.array(np.ascontiguousarray(points).ravel(), pa.float32())
    offsets = pa.array(np.arange(0, (n + 1) * points.shape[1], points.shape[1], dtype=np.int64))
    rows = pa.table({"id": [f"{i:0{width}d}" for i in range(n)],
                     "embedding": pa.LargeListArray.from_arrays(offsets, flat).cast(pa.list_(pa.float32())),
                     "weight": pa.array(w, pa.float64())})
    spec = GreedySpec(n_select=k, oversample=oversample, seed=seed,
                      labeled=existing if existing is not None and len(existing) else None)
    picked_ids, _ = two_stage(rows, n_partitions, spec)
    indices = np.array([int(i) for i in picked_ids], dtype=np.int64)
    source = np.asarray(X)
    centres = [m for m in (existing, source[indices]) if m is not None and len(m)]
    min_distances = (nearest_centre_distances(source, np.vstack(centres)) if centres
                     else np.full(n, np.inf, dtype=np.float32))
    min_distances[indices] = 0.0
    return indices, min_distances


def select_table(features: pa.Table, selection: SelectionConfig, *, seed: int = 0,
                 excluded: Mapping[str, str] | None = None, run_id: str | None = None,
                 run_time: dt.datetime | None = None) -> tuple[pa.Table, SelectResult]:
    """Select from a features table on this machine: the ranking (RANKING_SCHEMA) and the counts.

    ``excluded`` maps ids to the reason they are not candidates (``labeled``, ``selected_before``);
    those in ``features`` are existing centres.
    """
    run_time = run_time or dt.datetime.now(dt.timezone.utc)
    id_type = features.schema.field("id").type if "id" in features.column_names else None
    if id_type is None or not (pa.types.is_string(id_type) or pa.types.is_large_string(id_type)):
        raise InputError("features: expected a string column 'id'")
    ids = np.array([str(i) for i in features.column("id").to_pylist()], dtype=object)
    if len(set(ids)) != len(ids):
        values, repeats = np.unique(ids, return_counts=True)
        shown = ", ".join(repr(str(i)) for i in values[repeats > 1][:3])
        raise InputError(f"features: duplicate ids ({shown}); ids must be unique")
    plan = plan_selection(selection, features.column_names)
    before = []
    if excluded:
        marks = np.array([excluded.get(i) for i in ids], dtype=object)
        before = [(marks == reason, reason) for reason in (LABELED_REASON, PREVIOUS_REASON)]
    reasons = rejection_reasons(features, plan.filters, run_time, before=before)
    is_candidate = reasons == None  # noqa: E711
    counts: dict[str, int] = {}
    for reason in reasons[~is_candidate]:
        counts[str(reason)] = counts.get(str(reason), 0) + 1
    candidates = sorted_by_id(features.filter(pa.array(is_candidate)))
    centre_rows = sorted_by_id(features.filter(pa.array(np.isin(reasons, [LABELED_REASON, PREVIOUS_REASON]))))
    labeled = embedding_matrix(centre_rows) if centre_rows.num_rows else None
    n_select = target_count(selection, candidates.num_rows)
    if plan.auto is not None:
        labeled_given = excluded is not None and LABELED_REASON in set(excluded.values())
        columns, n_classes = model_figures(features)
        plan = resolve_auto(plan, Budget(n_labeled=counts.get(LABELED_REASON, 0) if labeled_given else None,
                                         n_classes=n_classes, n_candidates=candidates.num_rows, n_select=n_select,
                                         columns=columns))
    result = SelectResult(n_features=features.num_rows, n_candidates=candidates.num_rows, n_selected=0,
                          n_filtered=int((~is_candidate).sum()), filtered_by_reason=counts,
                          n_labeled_in_pool=counts.get(LABELED_REASON, 0), strategy=plan.label,
                          strategy_reason=plan.auto_reason)
    parts = spark_partitions(candidates, selection.n_partitions, seed)
    cut = spark_batches(parts, selection.n_partitions, seed)
    source = TableCandidates(candidates, features, seed, cut, parts, selection.n_partitions, selection.oversample)
    batches = with_objectives(cut, plan, source)
    candidates = pa.concat_tables(batches) if batches else with_objectives([candidates], plan, source)[0]
    available: dict[str, int] = {}
    if plan.balance_column is not None:
        for value in class_labels(candidates.column(plan.balance_column)):
            available[value] = available.get(value, 0) + 1
    quotas = quotas_for(plan, available, n_select)
    spec = GreedySpec(n_select=n_select, oversample=selection.oversample, seed=seed, labeled=labeled,
                      group_index=quotas[0] if quotas else None, quotas=quotas[1] if quotas else None,
                      min_distance=plan.min_distance or None)
    embeddings = embedding_matrix(candidates)
    position = {i: j for j, i in enumerate(candidates.column("id").to_pylist())}
    if plan.selector is not None and n_select:
        entry, selector = plan.selector
        chosen = selector.select(entry, source, n_select, labeled)
        picked_ids, picked = kept_apart(chosen.ids, chosen.embeddings, labeled, plan.min_distance)
        result.details = chosen.details
    elif plan.diversity is not None and n_select:
        rows = greedy_table(candidates, plan)
        if plan.top_m is not None:
            weight = candidates.column("_weight").to_numpy()
            by_id = np.array(candidates.column("id").to_pylist(), dtype=object)
            keep = np.lexsort((by_id, -weight))[: plan.top_m]
            rows = rows.take(pa.array(np.sort(keep), pa.int64()))
        picked_ids, picked = two_stage(rows, selection.n_partitions, spec)
    elif n_select:
        by_id = np.array(candidates.column("id").to_pylist(), dtype=object)
        ordered = np.lexsort((by_id, -candidates.column("_weight").to_numpy()))
        rows = greedy_table(candidates, plan).append_column("_weight", candidates.column("_weight"))
        picked_ids, picked, _ = by_weight_round(rows.take(pa.array(ordered, pa.int64())), spec)
    else:
        picked_ids, picked = [], np.zeros((0, 0), dtype=np.float32)
    result.n_selected = len(picked_ids)
    if len(picked_ids) < n_select:
        result.stop_reason = "min_distance" if plan.min_distance else "quotas or candidates exhausted"
    pick_rows = np.array([position[i] for i in picked_ids], dtype=np.int64)
    ranking, result.coverage_radius = score_candidates(candidates, embeddings, pick_rows, picked, labeled, plan,
                                                      batch_sizes=[b.num_rows for b in batches])
    return ranking_table(ranking, run_id, plan.label, run_time), result


def model_figures(features: pa.Table) -> tuple[list[str], int]:
    """The :data:`~alray.strategies.auto.MODEL_COLUMNS` of ``features`` that hold a value, and the model's
    classes (the widest ``probs`` entry; 0 without one)."""
    columns = [c for c in MODEL_COLUMNS
               if c in features.column_names and features.column(c).null_count < features.num_rows]
    if "probs" not in columns or pa.types.is_null(features.schema.field("probs").type):
        return columns, 0
    return columns, int(pc.max(pc.list_value_length(features.column("probs"))).as_py() or 0)


def score_candidates(candidates: pa.Table, embeddings: np.ndarray, pick_rows: np.ndarray, picked: np.ndarray,
                     labeled: np.ndarray | None, plan: Plan, *, batch_sizes: Sequence[int] = ()
                     ) -> tuple[pa.Table, float | None]:
    """Every candidate's score, weight, diversity and parts, in ranking order; and the coverage radius.

    The candidates are scored batch by batch (``batch_sizes``, the whole table when empty) with
    the :class:`~alray.selection.ranking.RankingPass` the Spark stage's ranking pass runs.
    """
    n = candidates.num_rows
    greedy = candidates.column("_greedy_weight").to_numpy()
    weight = candidates.column("_weight").to_numpy()
    ids = [str(i) for i in candidates.column("id").to_pylist()]
    diversity = plan.ranks_by_distance
    reach = first_pick_reach(embeddings, picked[0]) if diversity and len(pick_rows) else None
    ranking = RankingPass.of([ids[r] for r in pick_rows], picked, (greedy if diversity else weight)[pick_rows],
                             labeled, diversity=diversity, reach=reach)
    parts_of = [ranking.score_batch(ids[a:b], embeddings[a:b], greedy[a:b], weight[a:b])
                for a, b in itertools.pairwise(np.cumsum([0, *(batch_sizes or [n])]))]
    score, div, nearest, pick_order = (np.concatenate([p[k] for p in parts_of]) if parts_of else np.zeros(0)
                                       for k in range(4))
    order = np.lexsort((np.array(ids, dtype=object), -score, np.nan_to_num(pick_order, nan=np.inf)))
    values = [(o.label, candidates.column(o.name).to_pylist()) for o in plan.objectives]
    parts = [[(label, float(column[i])) for label, column in values] for i in range(n)]
    radius = float(np.nanmax(nearest)) if n and not np.isnan(nearest).all() else None
    table = pa.table({
        "id": pa.array([ids[i] for i in order], pa.string()), "rank": pa.array(np.arange(1, n + 1), pa.int64()),
        "selected": pa.array(~np.isnan(pick_order[order]) if n else np.zeros(0, bool)),
        "score": pa.array(score[order], pa.float64()), "weight": pa.array(weight[order], pa.float64()),
        "diversity": pa.array(div[order], pa.float64(), from_pandas=True),
        "parts": pa.array([parts[i] for i in order], pa.map_(pa.string(), pa.float64())),
    })
    return table, radius


def ranking_table(ranking: pa.Table, run_id: str | None, strategy: str, run_time: dt.datetime) -> pa.Table:
    """The ranking with the constant columns, in RANKING_SCHEMA's order."""
    n = ranking.num_rows
    constants = {"run_id": pa.array([run_id] * n, pa.string()), "strategy": pa.array([strategy] * n, pa.string()),
                 "created_at": pa.array([run_time] * n, pa.timestamp("us", tz="UTC"))}
    return pa.table({f.name: constants[f.name] if f.name in constants else ranking.column(f.name).cast(f.type)
                     for f in RANKING_SCHEMA}, schema=RANKING_SCHEMA)
