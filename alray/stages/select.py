"""The selection stage on Spark: filters, strategies, the two-stage k-center coreset, the ranking.

Filters and thresholds run as column expressions. Objectives (weights, typicality,
similarity) become columns, multiplied into one weight per candidate. Round one of the coreset
runs a local weighted k-center greedy in every random partition (``mapInArrow``); round two
merges the small union of local centres on the driver; a last distributed pass measures each
candidate's distance to the chosen centres (the coverage radius is its maximum) and ranks the
rest. All arithmetic lives in :mod:`alray.coreset` and :mod:`alray.strategies`.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema

from alray.config import PREDICTIONS, THRESHOLD_OPS, Config, FilterConfig, StrategyConfig
from alray.coreset import UNION_CAP, k_center_greedy, local_k, nearest_centre_distances
from alray.engines import spark_session
from alray.errors import ConfigError, InputError
from alray.faults import fail_once
from alray.lake import Lake, filesystem_for, previously_selected_ids, read_ids
from alray.progress import Progress
from alray.stages.spark_filters import rejection_reason
from alray.strategies import (
    balance_quotas,
    cluster_typicality,
    first_pick,
    knn_typicality,
    local_quotas,
    minmax_objective,
    select_by_rank,
    similarity_objective,
)

LABELED_REASON = "labeled"
PREVIOUS_REASON = "selected_before"

RANKING_SCHEMA = pa.schema([
    pa.field("run_id", pa.string()), pa.field("id", pa.string()), pa.field("rank", pa.int64()),
    pa.field("selected", pa.bool_()), pa.field("score", pa.float64()), pa.field("weight", pa.float64()),
    pa.field("diversity", pa.float64()), pa.field("parts", pa.map_(pa.string(), pa.float64())),
    pa.field("strategy", pa.string()), pa.field("created_at", pa.timestamp("us", tz="UTC")),
])


@dataclass
class SelectResult:
    """Counts and figures of the selection stage."""

    n_features: int
    n_candidates: int
    n_selected: int
    n_filtered: int
    filtered_by_reason: dict[str, int] = field(default_factory=dict)
    n_labeled_in_pool: int = 0
    coverage_radius: float | None = None
    strategy: str = ""
    stop_reason: str = ""


@dataclass
class Plan:
    """What the strategies ask of the stage, resolved against the features table."""

    diversity: StrategyConfig | None
    objectives: list[tuple[str, StrategyConfig]]  # (column holding the objective, entry)
    balance: StrategyConfig | None
    balance_column: str | None
    min_distance: float


def _matrix(batch: pa.RecordBatch | pa.Table, column: str) -> np.ndarray:
    values = batch.column(column)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    n = len(values)
    flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(n, -1) if n else np.zeros((0, 0), dtype=np.float32)


def strategy_name(config: Config) -> str:
    """The ranking's strategy label, e.g. ``diversity+weights:bald^1``."""
    selection = config.selection
    parts = [f"{s.label()}^{s.strength:g}" if s.strategy != "threshold" else
             f"threshold:{s.input}{THRESHOLD_OPS[s.operation or 'bigger']}{s.threshold:g}"
             for s in selection.strategies]
    prefix = f"top_m({selection.top_m})+" if selection.mode == "top_m" else ""
    return prefix + "+".join(parts)


def _input_column(entry: StrategyConfig, key: str, schema: T.StructType) -> str:
    column = "pred" if entry.input == PREDICTIONS else entry.input
    if column not in schema.fieldNames():
        raise ConfigError(f"{key}: no column {entry.input!r} in the features table")
    return column


def _read_features(spark: SparkSession, lake: Lake, run_id: str) -> DataFrame:
    """This run's features as a DataFrame, read by Python in the Spark tasks.

    Spark gets Arrow batches from pyarrow, which reads local paths and object stores alike
    (no Hadoop file-system connector or Delta reader on the classpath).
    """
    files = lake.run_files("features", run_id)
    if not files:
        raise InputError(f"features table {lake.table('features')}: no rows for run {run_id}; run the score stage")
    options = dict(lake.storage_options or {})
    filesystem, first = filesystem_for(files[0], options)
    schema = pq.read_schema(first, filesystem=filesystem)
    names = [n for n in schema.names if n != "run_id"]  # Iceberg files hold it; Delta keeps it in the path
    arrow_schema = pa.schema([schema.field(n) for n in names])

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for path in batch.column("path").to_pylist():
                fs, inner = filesystem_for(path, options)
                parquet = pq.ParquetFile(inner, filesystem=fs)
                for part in parquet.iter_batches(batch_size=8192, columns=names):
                    yield pa.RecordBatch.from_arrays(
                        [part.column(n).cast(arrow_schema.field(n).type) for n in names], schema=arrow_schema)

    paths = spark.createDataFrame([(f,) for f in files], "path string")
    paths = paths.repartition(min(len(files), spark.sparkContext.defaultParallelism * 4))
    return paths.mapInArrow(read, from_arrow_schema(arrow_schema))


def run_select(config: Config, run_id: str, lake: Lake, progress: Progress,
               *, run_time: dt.datetime | None = None) -> SelectResult:
    """Select on Spark from this run's features and replace this run's ranking rows."""
    run_time = run_time or dt.datetime.now(dt.timezone.utc)
    selection = config.selection
    spark = spark_session(config.spark)
    features = _read_features(spark, lake, run_id)
    duplicates = features.groupBy("id").count().filter(F.col("count") > 1).limit(3).collect()
    if duplicates:
        shown = ", ".join(repr(row["id"]) for row in duplicates)
        raise InputError(f"pool {config.pool.path}: duplicate ids ({shown}); ids must be unique")

    excluded = _excluded_ids(config, lake, run_id)
    before: list[tuple[Column, str]] = []
    if excluded is not None:
        features = features.join(F.broadcast(spark.createDataFrame(excluded.to_pandas())), "id", "left")
        before = [(F.col("_excluded") == F.lit(reason), reason) for reason in (LABELED_REASON, PREVIOUS_REASON)]
    checks = [(spec, f"selection.filters.{i}") for i, spec in enumerate(selection.filters)]
    checks += [
        (FilterConfig(column=_input_column(s, f"selection.strategies.{i}", features.schema),
                      op=THRESHOLD_OPS[s.operation or "bigger"], value=s.threshold), f"selection.strategies.{i}")
        for i, s in enumerate(selection.strategies) if s.strategy == "threshold"
    ]
    reason = rejection_reason(checks, features.schema, run_time, before=before)
    annotated = features.withColumn("_reason", reason).cache()
    counts = {row["_reason"]: row["count"] for row in annotated.groupBy("_reason").count().collect()}
    n_features = sum(counts.values())
    n_candidates = counts.pop(None, 0)
    progress.say(f"select: {n_features} scored, {n_candidates} candidates; filtered {counts or 'none'}")

    labeled = None  # embeddings of labeled and earlier-selected samples: centres that already exist
    if excluded is not None:
        rows = _sorted_by_id(annotated.filter(F.col("_reason").isin(LABELED_REASON, PREVIOUS_REASON)))
        labeled = _matrix(rows, "embedding") if rows.num_rows else None
    result = SelectResult(
        n_features=n_features, n_candidates=n_candidates, n_selected=0,
        n_filtered=sum(counts.values()), filtered_by_reason={str(k): int(v) for k, v in counts.items()},
        n_labeled_in_pool=int(counts.get(LABELED_REASON, 0)), strategy=strategy_name(config),
    )
    if selection.n_samples is not None:
        n_select = min(selection.n_samples, n_candidates)
        if n_select < selection.n_samples:
            progress.say(f"select: only {n_candidates} candidates for n_samples={selection.n_samples}; "
                         "selecting all of them")
    elif selection.proportion_samples is not None:
        n_select = min(n_candidates, math.ceil(selection.proportion_samples * n_candidates))
    else:
        n_select = n_candidates  # a diversity min_distance is the stop

    plan = _plan(config, annotated.schema)
    # Hash partitions sorted by id: every later pass sees the same Arrow batches whatever the
    # layout of the features files, so float results do not move by a bit between reruns.
    partitioned = annotated.filter(F.col("_reason").isNull()).repartition(
        selection.n_partitions, F.xxhash64(F.col("id"), F.lit(config.run.seed))).sortWithinPartitions("id")
    candidates = _with_objectives(spark, partitioned, plan, config, features)
    candidates = candidates.cache()
    quotas = _quotas(candidates, plan, n_select)
    if plan.diversity is not None:
        selected_ids, pick_distances = _two_stage(spark, candidates, n_select, config, plan, labeled, quotas)
    else:
        selected_ids, pick_distances = _by_rank(candidates, n_candidates, n_select, plan, labeled, quotas)
    result.n_selected = len(selected_ids)
    if len(selected_ids) < n_select:
        result.stop_reason = "min_distance" if plan.min_distance else "quotas or candidates exhausted"
        progress.say(f"select: stopped at {len(selected_ids)} of {n_select} ({result.stop_reason})")
    centres = _centre_embeddings(candidates, selected_ids, labeled)
    with global_rank(_rank(spark, candidates, selected_ids, pick_distances, centres, plan), ranking_order()) as ranked:
        result.coverage_radius = _write_ranking(ranked.drop("pick_rank"), run_id, lake, result.strategy, run_time)
    candidates.unpersist()
    annotated.unpersist()
    return result


def _sorted_by_id(frame: DataFrame) -> pa.Table:
    """``id`` and ``embedding`` of a small DataFrame on the driver, in id order.

    The order of rows fixes the order of float sums over them, so it must not depend on how
    the features files happen to be laid out.
    """
    table = frame.select("id", "embedding").toArrow()
    return table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))


def _excluded_ids(config: Config, lake: Lake, run_id: str) -> pa.Table | None:
    """Ids kept out of the candidates with their reason: the labeled set, earlier selections."""
    parts = []
    if config.labeled.path:
        ids = read_ids(config.labeled.path, config.labeled.format, name="labeled.path",
                       storage_options=config.labeled_storage_options())
        parts.append(pa.table({"id": ids, "_excluded": pa.array([LABELED_REASON] * len(ids), pa.string())}))
    if config.labeled.exclude_previous_runs:
        ids = previously_selected_ids(lake, run_id)
        parts.append(pa.table({"id": ids, "_excluded": pa.array([PREVIOUS_REASON] * len(ids), pa.string())}))
    if not parts or not sum(p.num_rows for p in parts):
        return None
    table = pa.concat_tables(parts)
    # an id both labeled and selected before counts once, as labeled
    first = pc.equal(pc.index_in(table.column("id"), value_set=table.column("id").combine_chunks()),
                     pa.array(np.arange(table.num_rows)))
    return table.filter(first)


def _plan(config: Config, schema: T.StructType) -> Plan:
    selection = config.selection
    diversity = next((s for s in selection.strategies if s.strategy == "diversity"), None)
    balance = next((s for s in selection.strategies if s.strategy == "balance"), None)
    objectives = [(f"_objective_{i}", s) for i, s in enumerate(selection.strategies)
                  if s.strategy in ("weights", "typicality", "similarity")]
    for i, s in enumerate(selection.strategies):
        if s.strategy in ("weights", "balance"):
            _input_column(s, f"selection.strategies.{i}", schema)
    balance_column = None
    if balance is not None:
        balance_column = _input_column(balance, f"selection.strategies.{selection.strategies.index(balance)}", schema)
    min_distance = max(selection.near_duplicate_distance, (diversity.min_distance or 0.0) if diversity else 0.0)
    return Plan(diversity=diversity, objectives=objectives, balance=balance, balance_column=balance_column,
                min_distance=min_distance)


def _with_objectives(spark: SparkSession, candidates: DataFrame, plan: Plan, config: Config,
                     features: DataFrame) -> DataFrame:
    """Candidates with one column per objective and ``_weight``, their product of powers."""
    seed = config.run.seed
    embedding_steps: list[tuple[str, Callable[[pa.RecordBatch, np.ndarray], np.ndarray]]] = []
    weights = [(name, s) for name, s in plan.objectives if s.strategy == "weights"]
    if weights:
        stats = candidates.agg(*[F.min(F.col(s.input).cast("double")).alias(f"lo{i}")
                                 for i, (_, s) in enumerate(weights)],
                               *[F.max(F.col(s.input).cast("double")).alias(f"hi{i}")
                                 for i, (_, s) in enumerate(weights)]).collect()[0]
        for i, (name, s) in enumerate(weights):
            def scaled(batch: pa.RecordBatch, x: np.ndarray, column: str = s.input,
                       low: float | None = stats[f"lo{i}"], high: float | None = stats[f"hi{i}"]) -> np.ndarray:
                values = pc.cast(batch.column(column), pa.float64()).to_numpy(zero_copy_only=False)
                return minmax_objective(values, low, high)
            embedding_steps.append((name, scaled))
    for name, s in plan.objectives:
        if s.strategy == "typicality" and s.method == "knn":
            reference = candidates.select("id", "embedding").orderBy(F.xxhash64("id", F.lit(seed)), "id").limit(
                s.reference_size).toArrow()
            ref_matrix, ref_ids = _matrix(reference, "embedding"), set(reference.column("id").to_pylist())

            def knn(batch: pa.RecordBatch, x: np.ndarray, ref: np.ndarray = ref_matrix,
                    ids: set[str] = ref_ids, k: int = s.n_neighbors) -> np.ndarray:
                mask = np.array([i in ids for i in batch.column("id").to_pylist()], dtype=bool)
                return knn_typicality(x, ref, n_neighbors=k, is_reference=mask)
            embedding_steps.append((name, knn))
        elif s.strategy == "similarity":
            queries = _query_embeddings(s, features)

            def similar(batch: pa.RecordBatch, x: np.ndarray, q: np.ndarray = queries) -> np.ndarray:
                return similarity_objective(x, q)
            embedding_steps.append((name, similar))
    if embedding_steps:
        candidates = _map_embeddings(candidates, embedding_steps)
    for name, s in plan.objectives:
        if s.strategy == "typicality" and s.method == "kmeans":
            candidates = _kmeans_typicality(candidates, name, s, seed)
    weight: Column = F.lit(1.0)
    for name, s in plan.objectives:
        weight = weight * F.pow(F.col(name), F.lit(s.strength))
    candidates = candidates.withColumn("_weight", weight)
    # The greedy maximises weight x distance^strength, i.e. weight^(1/strength) x distance.
    strength = plan.diversity.strength if plan.diversity is not None else 1.0
    greedy = F.lit(1.0) if config.selection.mode == "top_m" else F.pow(F.col("_weight"), F.lit(1.0 / strength))
    return candidates.withColumn("_greedy_weight", greedy)


def _map_embeddings(candidates: DataFrame,
                    steps: list[tuple[str, Callable[[pa.RecordBatch, np.ndarray], np.ndarray]]]) -> DataFrame:
    schema = T.StructType([*candidates.schema.fields, *[T.StructField(n, T.DoubleType()) for n, _ in steps]])

    def compute(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            x = _matrix(batch, "embedding")
            columns = [*batch.columns, *[pa.array(fn(batch, x), pa.float64()) for _, fn in steps]]
            yield pa.RecordBatch.from_arrays(columns, names=[*batch.schema.names, *[n for n, _ in steps]])

    return candidates.mapInArrow(compute, schema)


def _query_embeddings(entry: StrategyConfig, features: DataFrame) -> np.ndarray:
    query = entry.query
    assert query is not None  # the config validator requires it
    if query.path:
        from alray.lake import read_column

        table = pa.table({"embedding": read_column(query.path, query.format, "embedding", name="query.path",
                                                   storage_options=query.storage_options or None)})
    else:
        table = _sorted_by_id(features.filter(F.col("id").isin(query.ids)))
    if table.num_rows == 0:
        raise InputError("query: no query embeddings found (check query.path or query.ids)")
    return _matrix(table, "embedding")


def _kmeans_typicality(candidates: DataFrame, name: str, entry: StrategyConfig, seed: int) -> DataFrame:
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.functions import array_to_vector

    vectors = candidates.select(array_to_vector(F.col("embedding")).alias("_vector"))
    model = KMeans(k=entry.n_clusters, seed=seed, featuresCol="_vector", maxIter=20).fit(vectors)
    centroids = np.array([np.asarray(c) for c in model.clusterCenters()], dtype=np.float32)
    schema = T.StructType([*candidates.schema.fields, T.StructField("_cluster", T.IntegerType()),
                           T.StructField("_cluster_distance", T.DoubleType())])

    def assign(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            x = _matrix(batch, "embedding")
            squared = (np.sum(x * x, axis=1)[:, None] - 2 * x @ centroids.T + np.sum(centroids ** 2, axis=1)[None])
            nearest = np.argmin(squared, axis=1) if len(x) else np.zeros(0, dtype=np.int64)
            distance = np.sqrt(np.maximum(squared[np.arange(len(x)), nearest], 0.0)) if len(x) else np.zeros(0)
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, pa.array(nearest.astype(np.int32)), pa.array(distance.astype(np.float64))],
                names=[*batch.schema.names, "_cluster", "_cluster_distance"])

    assigned = candidates.mapInArrow(assign, schema)
    # One row per cluster: the shares come from these counts, not from another pass over the rows.
    rows = assigned.groupBy("_cluster").agg(F.count("*").alias("n"), F.avg("_cluster_distance").alias("d")).collect()
    total = max(sum(int(row["n"]) for row in rows), 1)
    stats = candidates.sparkSession.createDataFrame(
        [(int(row["_cluster"]), int(row["n"]) / total, float(row["d"])) for row in rows],
        "_cluster int, _share double, _mean_distance double")
    joined = assigned.join(F.broadcast(stats), "_cluster")
    out_schema = T.StructType([*candidates.schema.fields, T.StructField(name, T.DoubleType())])
    keep = candidates.schema.fieldNames()

    def typicality(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            values = cluster_typicality(batch.column("_cluster_distance").to_numpy(zero_copy_only=False),
                                        batch.column("_share").to_numpy(zero_copy_only=False),
                                        batch.column("_mean_distance").to_numpy(zero_copy_only=False))
            yield pa.RecordBatch.from_arrays([*(batch.column(c) for c in keep), pa.array(values, pa.float64())],
                                             names=[*keep, name])

    return joined.mapInArrow(typicality, out_schema)


def _quotas(candidates: DataFrame, plan: Plan, n_select: int) -> tuple[dict[str, int], np.ndarray] | None:
    """Class index per label and quota per class, when a balance strategy is configured."""
    if plan.balance is None or plan.balance_column is None:
        return None
    counts = candidates.groupBy(F.col(plan.balance_column).cast("string").alias("g")).count().collect()
    available = {str(row["g"]): int(row["count"]) for row in counts}
    quotas = balance_quotas(available, n_select, plan.balance.target)
    labels = sorted(quotas)
    return {label: i for i, label in enumerate(labels)}, np.array([quotas[label] for label in labels])


def _groups(batch: pa.RecordBatch | pa.Table, index: dict[str, int]) -> np.ndarray:
    values = batch.column("_group").to_pylist()
    return np.array([index[str(v)] for v in values], dtype=np.int64)


def _candidate_columns(plan: Plan) -> list[Column]:
    columns = [F.col("id"), F.col("embedding"), F.col("_greedy_weight").alias("weight")]
    if plan.balance_column is not None:
        columns.append(F.col(plan.balance_column).cast("string").alias("_group"))
    return columns


def _two_stage(spark: SparkSession, candidates: DataFrame, n_select: int, config: Config, plan: Plan,
               labeled: np.ndarray | None, quotas: tuple[dict[str, int], np.ndarray] | None,
               ) -> tuple[list[str], list[float | None]]:
    """Round one per partition on the executors, round two on the driver; picks in order."""
    if n_select == 0:
        return [], []
    selection, seed = config.selection, config.run.seed
    n_partitions = selection.n_partitions
    pool = candidates
    if selection.mode == "top_m" and selection.top_m is not None:
        pool = candidates.orderBy(F.desc("_weight"), F.asc("id")).limit(selection.top_m)
    columns = _candidate_columns(plan)
    min_distance = plan.min_distance or None
    index, quota = quotas if quotas is not None else (None, None)

    def greedy(table: pa.Table, k: int, group_quota: np.ndarray | None) -> np.ndarray:
        embeddings, weights = _matrix(table, "embedding"), table.column("weight").to_numpy()
        groups = _groups(table, index) if index is not None else None
        has_labeled = labeled is not None and len(labeled) > 0
        picks, _ = k_center_greedy(
            embeddings, k, weights=weights, already_selected=labeled if has_labeled else None,
            first=None if has_labeled else first_pick(weights, groups, group_quota),
            seed=seed, min_distance=min_distance, groups=groups, quotas=group_quota)
        return picks

    def local_round(partitions: int) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
        def local_centres(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            table = pa.Table.from_batches(list(batches))
            fail_once("select.local_centres")
            if table.num_rows == 0:
                return
            # Sorting by id makes a partition's result independent of the order rows arrived in.
            table = table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))
            k = local_k(n_select, partitions, selection.oversample, table.num_rows)
            picks = greedy(table, k, local_quotas(quota, k, n_select) if quota is not None else None)
            yield from table.take(pa.array(picks, pa.int64())).to_batches()
        return local_centres

    rows = pool.select(*columns)
    if pool is not candidates:  # top_m's limit gathered the rows: spread them again
        rows = rows.repartition(n_partitions, F.xxhash64(F.col("id"), F.lit(seed)))
    schema = rows.schema
    union = rows.mapInArrow(local_round(n_partitions), schema)
    # Further reduce levels keep the driver's merge small when k x partitions is large; each
    # level must shrink the bound on the union, else the driver merges what there is.
    bound = n_partitions * local_k(n_select, n_partitions, selection.oversample, 2**62)
    for level in range(1, 4):
        partitions = math.ceil(bound / UNION_CAP)
        next_bound = partitions * local_k(n_select, partitions, selection.oversample, 2**62)
        if bound <= UNION_CAP or next_bound >= bound:
            break
        union = union.repartition(partitions, F.xxhash64(F.col("id"), F.lit(seed + level))).mapInArrow(
            local_round(partitions), schema)
        bound = next_bound
    table = union.toArrow()
    table = table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))
    picks = greedy(table, n_select, quota)
    ids = table.column("id").to_pylist()
    return [ids[i] for i in picks], _pick_distances(_matrix(table, "embedding")[picks], labeled)


def _by_rank(candidates: DataFrame, n_candidates: int, n_select: int, plan: Plan, labeled: np.ndarray | None,
             quotas: tuple[dict[str, int], np.ndarray] | None) -> tuple[list[str], list[float | None]]:
    """No diversity: the heaviest candidates, in order, skipping near-duplicates and full classes."""
    if n_select == 0:
        return [], []
    ordered = candidates.select(*_candidate_columns(plan), F.col("_weight")).orderBy(F.desc("_weight"), F.asc("id"))
    limit = min(n_candidates, 2 * n_select + 64)
    while True:
        table = ordered.limit(limit).toArrow()
        groups = _groups(table, quotas[0]) if quotas is not None else None
        picks = select_by_rank(_matrix(table, "embedding"), table.column("_weight").to_numpy(), n_select,
                               groups=groups, quotas=quotas[1] if quotas is not None else None,
                               min_distance=plan.min_distance, labeled=labeled)
        if len(picks) >= n_select or limit >= n_candidates:
            break
        limit = min(n_candidates, limit * 4)
    ids = table.column("id").to_pylist()
    return [ids[i] for i in picks], [None] * len(picks)


def _pick_distances(picked: np.ndarray, labeled: np.ndarray | None) -> list[float | None]:
    """Distance of each pick to the centres chosen before it and the labeled set (None: no centre yet)."""
    if labeled is not None and len(labeled):
        running = nearest_centre_distances(picked, labeled).astype(np.float64)
    else:
        running = np.full(len(picked), np.inf)
    distances: list[float | None] = []
    for j in range(len(picked)):
        distances.append(float(running[j]) if np.isfinite(running[j]) else None)
        running = np.minimum(running, nearest_centre_distances(picked, picked[j : j + 1]))
    return distances


def _centre_embeddings(candidates: DataFrame, selected_ids: list[str], labeled: np.ndarray | None) -> np.ndarray:
    rows = _sorted_by_id(candidates.filter(F.col("id").isin(selected_ids))) if selected_ids else None
    parts = [m for m in (labeled, _matrix(rows, "embedding") if rows is not None else None)
             if m is not None and len(m)]
    return np.vstack(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def _rank(spark: SparkSession, candidates: DataFrame, selected_ids: list[str],
          pick_distances: list[float | None], centres: np.ndarray, plan: Plan) -> DataFrame:
    """Every candidate with its score, distance to the centres and, if selected, pick rank (1 first)."""

    objective_names = [name for name, _ in plan.objectives]
    keep = ["id", "_weight", "_greedy_weight", *objective_names]

    def distances(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            embeddings = _matrix(batch, "embedding")
            if len(centres) and batch.num_rows:
                nearest = nearest_centre_distances(embeddings, centres).astype(np.float64)
            else:
                nearest = np.full(batch.num_rows, np.nan)
            yield pa.RecordBatch.from_arrays([*(batch.column(c) for c in keep), pa.array(nearest, pa.float64())],
                                             names=[*keep, "_nearest"])

    source = candidates.select("embedding", *keep)
    out_schema = T.StructType([*(source.schema[c] for c in keep), T.StructField("_nearest", T.DoubleType())])
    base = source.mapInArrow(distances, out_schema)
    picks = spark.createDataFrame(
        [(i, r + 1, d) for r, (i, d) in enumerate(zip(selected_ids, pick_distances, strict=True))],
        "id string, pick_rank int, pick_distance double")
    joined = base.join(F.broadcast(picks), "id", "left")
    selected = F.col("pick_rank").isNotNull()
    if plan.diversity is not None:
        # What the greedy maximised: the greedy weight x the distance to the centres before the
        # pick (the very first pick, with no centre before it, scores its weight alone); for the
        # rest, the same product at the end of the selection.
        score = F.when(selected, F.col("_greedy_weight") * F.coalesce(F.col("pick_distance"), F.lit(1.0))).otherwise(
            F.col("_greedy_weight") * F.coalesce(F.col("_nearest"), F.lit(1.0)))
        diversity = F.when(selected, F.col("pick_distance")).otherwise(F.col("_nearest"))
    else:
        score, diversity = F.col("_weight"), F.col("_nearest")
    labels = [s.label() for _, s in plan.objectives]
    parts = F.create_map(*[item for name, label in zip(objective_names, labels, strict=True)
                           for item in (F.lit(label), F.col(name))]) if labels else F.create_map().cast(
        "map<string,double>")
    return joined.select("id", selected.alias("selected"), score.alias("score"), F.col("_weight").alias("weight"),
                         diversity.alias("diversity"), parts.alias("parts"), "_nearest", "pick_rank")


def ranking_order() -> list[Column]:
    """The ranking's order: the picks in the order they were made, then the rest by score."""
    return [F.col("pick_rank").asc_nulls_last(), F.desc("score"), F.asc("id")]


@contextmanager
def global_rank(frame: DataFrame, order: Sequence[Column]) -> Iterator[DataFrame]:
    """``frame`` with ``rank``, 1 to N in ``order`` (a total order: its last key is unique).

    A window over the whole frame would sort every row in one task. Instead, a range-partitioned
    sort gives each row its partition and its place within it (``monotonically_increasing_id``
    holds both: the partition in the upper 31 bits, the row number in the lower 33), and each
    partition's rows are offset by the count of the partitions before it. The numbered frame
    is cached while the block runs, so the counts and the ranks come from the same partitions.
    """
    numbered = (frame.orderBy(*order).withColumn("_row", F.monotonically_increasing_id())
                .withColumn("_part", F.shiftright("_row", 33)).persist())
    try:
        offsets, total = [], 0
        for part, count in sorted((r["_part"], r["count"]) for r in numbered.groupBy("_part").count().collect()):
            offsets.append((part, total - (part << 33) + 1))
            total += count
        offset_frame = frame.sparkSession.createDataFrame(offsets, "_part long, _offset long")
        yield (numbered.join(F.broadcast(offset_frame), "_part")
               .withColumn("rank", F.col("_row") + F.col("_offset"))
               .drop("_part", "_row", "_offset"))
    finally:
        numbered.unpersist()


def _write_ranking(ranked: DataFrame, run_id: str, lake: Lake, strategy: str, run_time: dt.datetime) -> float | None:
    """Spark tasks write the ranking's parquet files; the driver commits them in one transaction.

    Returns the coverage radius (the largest distance of a candidate to its nearest centre),
    gathered from the same pass.
    """
    staging = lake.staging(run_id, "ranking")
    options = dict(lake.storage_options or {})
    keep_run_id = lake.keeps_run_id_in_files()
    schema = pa.schema([f for f in RANKING_SCHEMA if keep_run_id or f.name != "run_id"])
    created = pa.scalar(run_time, type=pa.timestamp("us", tz="UTC"))

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        writer, path, rows, radius = None, "", 0, float("-inf")
        for batch in batches:
            n = batch.num_rows
            if n == 0:
                continue
            constants = {"run_id": pa.array([run_id] * n, pa.string()),
                         "strategy": pa.array([strategy] * n, pa.string()),
                         "created_at": pa.array([created.value] * n, pa.timestamp("us", tz="UTC"))}
            out = pa.RecordBatch.from_arrays(
                [constants[f.name] if f.name in constants else batch.column(f.name).cast(f.type) for f in schema],
                schema=schema)
            if writer is None:
                fs, folder = filesystem_for(staging, options)
                fs.create_dir(folder, recursive=True)
                name = f"part-{uuid.uuid4().hex}.parquet"
                path = f"{staging}/{name}"
                writer = pq.ParquetWriter(f"{folder}/{name}", schema, filesystem=fs)
            writer.write_batch(out)
            rows += n
            nearest = pc.max(batch.column("_nearest")).as_py()
            if nearest is not None and not math.isnan(nearest):
                radius = max(radius, nearest)
        if writer is not None:
            writer.close()
            yield pa.RecordBatch.from_arrays([pa.array([path]), pa.array([rows], pa.int64()),
                                              pa.array([radius], pa.float64())], names=["path", "rows", "radius"])

    written = ranked.mapInArrow(write, "path string, rows long, radius double").toArrow()
    files = written.column("path").to_pylist()
    lake.commit_files("ranking", files, run_id, schema=schema)
    radii = [r for r in written.column("radius").to_pylist() if r is not None and math.isfinite(r)]
    return max(radii) if radii else None
