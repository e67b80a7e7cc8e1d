"""The selection on one machine: the Spark stage's plan, strategies and rounds, over an Arrow table.

Every step calls the functions the Spark stage calls, with the same partition hash
(:func:`alray.selection.partitions.partition_of`), so for the same features and config the
picks are the Spark stage's, pick for pick. Only the k-means of ``typicality: kmeans`` differs
(scikit-learn here, Spark ML there). Used by :func:`alray.select`, the simulator and the benchmarks.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from alray.config import QueryConfig, SelectionConfig
from alray.coreset import nearest_centre_distances
from alray.errors import InputError
from alray.selection.filters import rejection_reasons
from alray.selection.partitions import partition_of, spark_xxhash64
from alray.selection.plan import Plan, PlannedObjective, plan_selection, target_count
from alray.selection.ranking import RankingPass, first_pick_reach
from alray.selection.result import LABELED_REASON, PREVIOUS_REASON, SelectResult
from alray.selection.rounds import GreedySpec, by_weight_round, local_centres, merge_round, reduce_levels, sorted_by_id
from alray.strategies.balance import class_labels
from alray.strategies.base import CandidateBatch, combine, embedding_matrix
from alray.strategies.registry import get_strategy
from alray.tables import RANKING_SCHEMA


def read_query_embeddings(query: QueryConfig, features: pa.Table | Callable[[list[str]], pa.Table]) -> np.ndarray:
    """Embeddings of a similarity query: a table's ``embedding`` column, or the features rows of ``query.ids``."""
    if query.path:
        from alray.lake import read_column

        table = pa.table({"embedding": read_column(query.path, query.format, "embedding", name="query.path",
                                                   storage_options=query.storage_options or None)})
    elif callable(features):
        table = features(list(query.ids))
    else:
        table = sorted_by_id(features.filter(pc.is_in(features.column("id"), value_set=pa.array(query.ids))))
    if table.num_rows == 0:
        raise InputError("query: no query embeddings found (check query.path or query.ids)")
    return embedding_matrix(table)


@dataclass
class TableCandidates:
    """:class:`~alray.strategies.base.Candidates` over an in-memory table of candidates.

    ``batches`` are the candidates as the Spark stage's tasks see them (:func:`spark_batches`):
    sums over batches add up in the same order as there.
    """

    table: pa.Table
    features: pa.Table
    seed: int
    batches: Sequence[pa.Table] = ()

    def column_range(self, column: str) -> tuple[float | None, float | None]:
        values = pc.cast(self.table.column(column), pa.float64())
        stats = pc.min_max(values)
        return stats["min"].as_py(), stats["max"].as_py()

    def reference(self, size: int, seed: int) -> CandidateBatch:
        ids = [str(i) for i in self.table.column("id").to_pylist()]
        order = np.lexsort((np.array(ids, dtype=object), spark_xxhash64(ids, seed)))[:size]
        return CandidateBatch.of(self.table.take(pa.array(order, pa.int64())))

    def query_embeddings(self, query: QueryConfig) -> np.ndarray:
        return read_query_embeddings(query, self.features)

    def kmeans_centroids(self, n_clusters: int, seed: int) -> np.ndarray:
        from sklearn.cluster import KMeans

        x = embedding_matrix(self.table)
        if not len(x):
            return np.zeros((0, 0), dtype=np.float32)
        model = KMeans(n_clusters=min(n_clusters, len(x)), random_state=seed, n_init=1, max_iter=20).fit(x)
        return np.asarray(model.cluster_centers_, dtype=np.float32)

    def batch_sum(self, fn: Callable[[CandidateBatch], np.ndarray]) -> np.ndarray:
        parts = [np.asarray(fn(CandidateBatch.of(b)), dtype=np.float64) for b in self.batches if b.num_rows]
        return np.sum(parts, axis=0) if parts else np.asarray(fn(CandidateBatch.of(self.table)))


# Spark's default spark.sql.execution.arrow.maxRecordsPerBatch: the rows of one Arrow batch.
ARROW_BATCH_ROWS = 10_000


def spark_batches(table: pa.Table, n_partitions: int, seed: int, *,
                  batch_rows: int = ARROW_BATCH_ROWS) -> list[pa.Table]:
    """``table`` cut as the Spark stage's Arrow tasks see it: hash partitions, id order, batches of ``batch_rows``.

    Per-batch arithmetic (matrix products over a batch, sums over batches) then runs on the same
    rows in the same order as on Spark. ``batch_rows`` is Spark's default
    ``spark.sql.execution.arrow.maxRecordsPerBatch``; a session that changes it cuts otherwise.
    """
    ids = [str(i) for i in table.column("id").to_pylist()]
    part = partition_of(ids, n_partitions, seed)
    batches: list[pa.Table] = []
    for p in range(n_partitions):
        rows = sorted_by_id(table.filter(pa.array(part == p)))
        batches.extend(rows.slice(start, batch_rows) for start in range(0, rows.num_rows, batch_rows))
    return batches


def with_objectives(batches: list[pa.Table], plan: Plan, source: TableCandidates) -> list[pa.Table]:
    """Each batch with one float64 column per objective, ``_weight`` and ``_greedy_weight``."""
    states = [(o, o.strategy.prepare(o.entry, o.column, source)) for o in plan.objectives]
    return [pa.table(add_objective_columns(b, CandidateBatch.of(b), plan, states)) for b in batches]


def add_objective_columns(table: pa.Table | pa.RecordBatch, batch: CandidateBatch, plan: Plan,
                          states: Sequence[tuple[PlannedObjective, Any]]) -> pa.Table | pa.RecordBatch:
    """One batch with its objective values, the weight (their product) and the greedy weight.

    The greedy maximises weight x distance^strength, i.e. weight^(1/strength) x distance; in
    top_m mode the greedy is unweighted among the top_m rows.
    """
    values = [(o.strategy.evaluate(o.entry, o.column, state, batch), o.entry.strength) for o, state in states]
    weight = combine(values, len(batch))
    greedy = np.ones(len(batch)) if plan.top_m is not None else np.power(weight, 1.0 / plan.diversity_strength)
    columns = [*table.columns, *[pa.array(v, pa.float64()) for v, _ in values],
               pa.array(weight, pa.float64()), pa.array(greedy, pa.float64())]
    names = [*table.schema.names, *[o.name for o, _ in states], "_weight", "_greedy_weight"]
    if isinstance(table, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(columns, names=names)
    return pa.Table.from_arrays(columns, names=names)


def quotas_for(plan: Plan, available: Mapping[str, int], n_select: int) -> tuple[dict[str, int], np.ndarray] | None:
    """Class index per label and quota per class, when a balance strategy is configured."""
    if plan.balance is None:
        return None
    quotas = get_strategy(plan.balance.strategy).quotas(plan.balance, available, n_select)  # type: ignore[attr-defined]
    labels = sorted(quotas)
    return {label: i for i, label in enumerate(labels)}, np.array([quotas[label] for label in labels])


def greedy_table(candidates: pa.Table, plan: Plan) -> pa.Table:
    """The columns the rounds read: id, embedding, the greedy weight and the class."""
    columns = {"id": candidates.column("id"), "embedding": candidates.column("embedding"),
               "weight": candidates.column("_greedy_weight")}
    if plan.balance_column is not None:
        columns["_group"] = pa.array(class_labels(candidates.column(plan.balance_column)), pa.string())
    return pa.table(columns)


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
        raise InputError("features: duplicate ids; ids must be unique")
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
    result = SelectResult(n_features=features.num_rows, n_candidates=candidates.num_rows, n_selected=0,
                          n_filtered=int((~is_candidate).sum()), filtered_by_reason=counts,
                          n_labeled_in_pool=counts.get(LABELED_REASON, 0), strategy=plan.label)
    cut = spark_batches(candidates, selection.n_partitions, seed)
    source = TableCandidates(candidates, features, seed, cut)
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
    if plan.diversity is not None and n_select:
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
    diversity = plan.diversity is not None
    reach = first_pick_reach(embeddings, picked[0]) if diversity and len(pick_rows) else None
    ranking = RankingPass.of([ids[r] for r in pick_rows], picked, (greedy if diversity else weight)[pick_rows],
                             labeled, diversity=diversity, reach=reach)
    parts_of = [ranking.score_batch(ids[a:b], embeddings[a:b], greedy[a:b], weight[a:b])
                for a, b in itertools.pairwise(np.cumsum([0, *(batch_sizes or [n])]))]
    score, div, nearest, pick_order = (np.concatenate([p[k] for p in parts_of]) if parts_of else np.zeros(0)
                                       for k in range(4))
    order = np.lexsort((np.array(ids, dtype=object), -score, np.nan_to_num(pick_order, nan=np.inf)))
    parts = [[(o.label, float(v)) for o in plan.objectives for v in [candidates.column(o.name)[i].as_py()]]
             for i in range(n)]
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
