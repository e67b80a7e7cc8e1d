"""The selection stage on Spark: DataFrame plumbing around the selection core.

Filters run as column expressions; everything else is :mod:`alray.selection` and
:mod:`alray.strategies` called from Arrow tasks (``mapInArrow``) and on the driver: objectives per
batch, round one of the coreset in every hash partition, the reduce levels, the merge round in
one task, the ranking pass. :mod:`alray.selection.local` runs the same calls on one machine.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema

from alray.config import LabeledConfig, QueryConfig, SelectionConfig, SparkConfig
from alray.engines import spark_session
from alray.errors import InputError
from alray.faults import fail_once
from alray.lake import Lake, filesystem_for
from alray.progress import Progress
from alray.selection.batches import read_query_embeddings
from alray.selection.objectives import add_objective_columns, prepare_objectives, quotas_for
from alray.selection.plan import Plan, needed_columns, plan_selection, resolve_auto, target_count
from alray.selection.ranking import RankingPass, first_pick_reach
from alray.selection.result import LABELED_REASON, PREVIOUS_REASON, SelectResult
from alray.selection.rounds import (
    GreedySpec,
    by_weight_round,
    kept_apart,
    local_centres,
    merged_rows,
    picks_of,
    reduce_levels,
    sorted_by_id,
)
from alray.stages.select_local import LOCAL_MAX_ROWS, choose_engine, excluded_ids, run_select_local
from alray.stages.spark_filters import rejection_reason
from alray.strategies.auto import MODEL_COLUMNS, Budget
from alray.strategies.base import (
    CandidateBatch,
    ascending_non_null,
    embedding_matrix,
    float_lists,
    numeric_column,
    packed_floats,
)
from alray.tables import RANKING_SCHEMA, without_run_id

__all__ = ["SelectResult", "global_rank", "ranking_order", "run_select", "select_dataframe"]


def _hash_partitions(frame: DataFrame, n_partitions: int, seed: int) -> DataFrame:
    """``frame`` in the hash partitions :func:`alray.selection.partitions.partition_of` reproduces."""
    return frame.repartition(n_partitions, F.xxhash64(F.col("id"), F.lit(seed)))


@dataclass
class SparkCandidates:
    """:class:`~alray.strategies.base.Candidates` over a DataFrame of candidates."""

    frame: DataFrame
    features: DataFrame
    seed: int
    n_partitions: int = 1
    oversample: float = 4.0

    @property
    def columns(self) -> list[str]:
        return list(self.frame.columns)

    def column_range(self, column: str) -> tuple[float | None, float | None]:
        value = F.col(column).cast("double")
        finite = F.when(~F.isnan(value), value)  # NaN counts as missing, as in pyarrow's min_max
        row = self.frame.agg(F.min(finite).alias("lo"), F.max(finite).alias("hi")).collect()[0]
        return row["lo"], row["hi"]

    def reference(self, size: int, seed: int) -> CandidateBatch:
        table = self.frame.select("id", "embedding").orderBy(F.xxhash64("id", F.lit(seed)), "id").limit(
            size).toArrow()
        return CandidateBatch.of(table)

    def query_embeddings(self, query: QueryConfig) -> np.ndarray:
        return read_query_embeddings(
            query, lambda ids: _sorted_by_id(self.features.filter(F.col("id").isin(ids))))

    def kmeans_centroids(self, n_clusters: int, seed: int) -> np.ndarray:
        from pyspark.ml.clustering import KMeans
        from pyspark.ml.functions import array_to_vector

        def unpacked(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                yield pa.RecordBatch.from_arrays([float_lists(batch.column("embedding"))], names=["embedding"])

        lists = self.frame.select("embedding").mapInArrow(unpacked, "embedding array<float>")
        vectors = lists.select(array_to_vector(F.col("embedding")).alias("_vector"))
        model = KMeans(k=n_clusters, seed=seed, featuresCol="_vector", maxIter=20).fit(vectors)
        return np.array([np.asarray(c) for c in model.clusterCenters()], dtype=np.float32)

    def batch_sum(self, fn: Callable[[CandidateBatch], np.ndarray]) -> np.ndarray:
        def sums(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            total: np.ndarray | None = None
            for batch in batches:
                if batch.num_rows:
                    value = np.asarray(fn(CandidateBatch.of(batch)), dtype=np.float64)
                    total = value if total is None else total + value
            if total is not None:
                yield pa.RecordBatch.from_arrays([pa.array([total.ravel().tolist()], pa.list_(pa.float64())),
                                                  pa.array([list(total.shape)], pa.list_(pa.int64()))],
                                                 names=["values", "shape"])

        rows = self.frame.mapInArrow(
            sums, "values array<double>, shape array<bigint>").collect()
        parts = [np.asarray(r["values"], dtype=np.float64).reshape(r["shape"]) for r in rows]
        if not parts:
            return np.asarray(fn(CandidateBatch.of(self.frame.limit(0).toArrow())))
        return np.sum(parts, axis=0)

    def sorted_values(self, column: str) -> np.ndarray:
        return ascending_non_null(numeric_column(self.frame.select(column).toArrow(), column))

    def partition_map(self, fn: Callable[[pa.Table], pa.Table], schema: pa.Schema) -> pa.Table:
        def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            received = [b for b in batches if b.num_rows]
            if received:  # the frame is in hash partitions, each sorted by id
                yield from fn(pa.Table.from_batches(received)).cast(schema).to_batches()

        return self.frame.mapInArrow(run, from_arrow_schema(schema)).toArrow().cast(schema)


def run_select(selection_config: SelectionConfig, labeled: LabeledConfig, spark_config: SparkConfig, *, seed: int,
               run_id: str, lake: Lake, progress: Progress, run_time: dt.datetime | None = None,
               labeled_storage_options: dict[str, str] | None = None, source: str = "features") -> SelectResult:
    """Select from this run's features and replace this run's ranking rows: on Spark, or in this process
    (:mod:`alray.stages.select_local`) as ``selection.engine`` says.

    Takes the config's ``selection``, ``labeled`` and ``spark`` sections and the run seed;
    ``source`` names the input in error messages (e.g. ``pool PATH``).
    """
    run_time = run_time or dt.datetime.now(dt.timezone.utc)
    engine, rows = choose_engine(selection_config, lake, run_id)
    if rows is not None:
        progress.say(f"select: engine auto: {engine} ({rows:,} feature rows; local below {LOCAL_MAX_ROWS:,})")
    if engine == "local":
        return run_select_local(selection_config, labeled, seed=seed, run_id=run_id, lake=lake, progress=progress,
                                run_time=run_time, labeled_storage_options=labeled_storage_options)
    spark = spark_session(spark_config)
    features = _read_features(spark, lake, run_id, lambda names: needed_columns(
        plan_selection(selection_config, names), names))
    excluded = excluded_ids(labeled, labeled_storage_options, lake, run_id, now=run_time)
    with select_dataframe(features, selection_config, seed=seed, excluded=excluded,
                          run_time=run_time, progress=progress, source=source) as selection:
        _write_ranking(selection.ranking, run_id, lake, selection.result.strategy, run_time, progress)
    return selection.result


@dataclass
class SparkSelection:
    """The ranking DataFrame (rank, selected, score, ... ; cached while the block runs) and the counts."""

    ranking: DataFrame
    result: SelectResult


@contextmanager
def select_dataframe(features: DataFrame, selection: SelectionConfig, *, seed: int = 0,
                     excluded: pa.Table | None = None, run_time: dt.datetime | None = None,
                     progress: Progress | None = None, source: str = "features") -> Iterator[SparkSelection]:
    """Select from a features DataFrame (``id``, ``embedding``, scores, metadata) on Spark.

    ``excluded`` holds ``id`` and ``_excluded`` (``labeled`` or ``selected_before``): ids kept out
    of the candidates, whose embeddings count as existing centres. Yields the ranking (columns of
    the ranking table but run_id, strategy and created_at) with the counts; the cached frames are
    released when the block ends.
    """
    run_time = run_time or dt.datetime.now(dt.timezone.utc)
    progress = progress or Progress(quiet=True)
    spark = features.sparkSession
    if "id" not in features.columns or not isinstance(features.schema["id"].dataType, T.StringType):
        raise InputError(f"{source}: expected a string column 'id'")
    plan = plan_selection(selection, features.schema.fieldNames())
    features = _packed_embeddings(features)
    before: list[tuple[Column, str]] = []
    if excluded is not None and excluded.num_rows:
        unique = excluded.to_pandas().drop_duplicates("id")  # an id labeled and selected before counts once
        features = features.join(F.broadcast(spark.createDataFrame(unique)), "id", "left")
        before = [(F.col("_excluded") == F.lit(reason), reason) for reason in (LABELED_REASON, PREVIOUS_REASON)]
    reason = rejection_reason(plan.filters, features.schema, run_time, before=before)
    annotated = features.withColumn("_reason", reason).cache()
    cached = [annotated]
    try:
        # One read of the features (it fills the cache): the counts per reason and the model's figures
        # for auto; the duplicate check then reads the cache.
        figures = _model_figures(annotated) if plan.auto is not None else None
        with progress.phase("select", "read_filter_count"):
            per_reason = annotated.groupBy("_reason").agg(F.count(F.lit(1)).alias("count"),
                                                          *(figures.aggregates if figures else [])).collect()
        with progress.phase("select", "duplicate_check"):
            duplicates = annotated.groupBy("id").count().filter(F.col("count") > 1).limit(3).collect()
        if duplicates:
            shown = ", ".join(repr(row["id"]) for row in duplicates)
            raise InputError(f"{source}: duplicate ids ({shown}); ids must be unique")
        counts = {row["_reason"]: row["count"] for row in per_reason}
        n_features = sum(counts.values())
        n_candidates = counts.pop(None, 0)
        progress.say(f"select: {n_features} scored, {n_candidates} candidates; filtered {counts or 'none'}")
        labeled = None  # embeddings of labeled and earlier-selected samples: centres that already exist
        if before:
            with progress.phase("select", "labeled_centres"):
                rows = _sorted_by_id(annotated.filter(F.col("_reason").isin(LABELED_REASON, PREVIOUS_REASON)))
                labeled = embedding_matrix(rows) if rows.num_rows else None
        result = SelectResult(
            n_features=n_features, n_candidates=n_candidates, n_selected=0,
            n_filtered=sum(counts.values()), filtered_by_reason={str(k): int(v) for k, v in counts.items()},
            n_labeled_in_pool=int(counts.get(LABELED_REASON, 0)), strategy=plan.label)
        n_select = target_count(selection, n_candidates)
        if plan.auto is not None:
            given = excluded is not None and LABELED_REASON in set(excluded.column("_excluded").to_pylist())
            assert figures is not None
            columns, n_classes = figures.read(per_reason)
            plan = resolve_auto(plan, Budget(n_labeled=result.n_labeled_in_pool if given else None,
                                             n_classes=n_classes, n_candidates=n_candidates, n_select=n_select,
                                             columns=columns))
            result.strategy, result.strategy_reason = plan.label, plan.auto_reason
            progress.say(f"select: auto chose {plan.label} ({plan.auto_reason})")
        if selection.n_samples is not None and n_select < selection.n_samples:
            progress.say(f"select: only {n_candidates} candidates for n_samples={selection.n_samples}; "
                         "selecting all of them")
        # Hash partitions sorted by id: every later pass sees the same Arrow batches whatever the
        # layout of the features files, so float results do not move by a bit between reruns.
        partitioned = _hash_partitions(annotated.filter(F.col("_reason").isNull()), selection.n_partitions,
                                       seed).sortWithinPartitions("id")
        with progress.phase("select", "objectives"):
            candidates = _with_objectives(partitioned, plan, features, seed).cache()
            cached.append(candidates)
        with progress.phase("select", "partition"):  # fills the cache: the shuffle, the sort, the objectives
            candidates.count()
        quotas = _quotas(candidates, plan, n_select)
        spec = GreedySpec(n_select=n_select, oversample=selection.oversample, seed=seed, labeled=labeled,
                          group_index=quotas[0] if quotas else None, quotas=quotas[1] if quotas else None,
                          min_distance=plan.min_distance or None)
        if plan.selector is not None:
            entry, selector = plan.selector
            with progress.phase("select", entry.strategy):
                chosen = selector.select(entry, SparkCandidates(candidates, features, seed, selection.n_partitions,
                                                                selection.oversample), n_select, labeled)
                picked_ids, picked = kept_apart(chosen.ids, chosen.embeddings, labeled, plan.min_distance)
            result.details = chosen.details
            pick_weights = np.ones(len(picked_ids))
            progress.say(f"select: {entry.strategy} " + ", ".join(f"{k} {v:.4g}" for k, v in chosen.details.items()))
        elif plan.diversity is not None:
            picked_ids, picked, pick_weights = _two_stage(candidates, plan, spec, progress)
        else:
            with progress.phase("select", "by_weight"):
                picked_ids, picked, pick_weights = _by_weight(candidates, n_candidates, plan, spec)
        result.n_selected = len(picked_ids)
        if len(picked_ids) < n_select:
            result.stop_reason = "min_distance" if plan.min_distance else "quotas or candidates exhausted"
            progress.say(f"select: stopped at {len(picked_ids)} of {n_select} ({result.stop_reason})")
        with progress.phase("select", "reach"):
            scored = _score_candidates(candidates, picked_ids, picked, pick_weights, labeled, plan).cache()
            cached.append(scored)
        with progress.phase("select", "distances"):  # fills the cache: the sort's sample and shuffle read it
            radius = scored.agg(F.max("_nearest")).collect()[0][0]
            result.coverage_radius = float(radius) if radius is not None and math.isfinite(radius) else None
        with ExitStack() as ranks:  # the numbered frame stays cached while the caller writes it
            with progress.phase("select", "rank"):
                numbered = ranks.enter_context(global_rank(scored, ranking_order()))
            yield SparkSelection(_with_parts(numbered, plan), result)
    finally:
        for frame in cached:
            frame.unpersist()


@dataclass
class _ModelFigures:
    """What ``auto`` reads of the features, as aggregates over the groups of one ``groupBy``: the
    :data:`~alray.strategies.auto.MODEL_COLUMNS` that hold a value, and the model's classes (the
    widest ``probs`` entry; 0 without one)."""

    present: list[str]
    with_probs: bool

    @property
    def aggregates(self) -> list[Column]:
        counts = [F.count(F.col(c)).alias(f"_count_{c}") for c in self.present]
        return [*counts, F.max(F.size("probs")).alias("_widest")] if self.with_probs else counts

    def read(self, groups: Sequence[Row]) -> tuple[list[str], int]:
        columns = [c for c in self.present if sum(int(g[f"_count_{c}"]) for g in groups)]
        widest = max((int(g["_widest"]) for g in groups if g["_widest"] is not None), default=0)
        return columns, max(0, widest) if self.with_probs else 0


def _packed_embeddings(features: DataFrame) -> DataFrame:
    """``features`` with its ``embedding`` array column packed into bytes (:func:`packed_floats`), once."""
    if "embedding" not in features.columns or isinstance(features.schema["embedding"].dataType, T.BinaryType):
        return features
    names = features.columns
    schema = T.StructType([T.StructField("embedding", T.BinaryType()) if f.name == "embedding" else f
                           for f in features.schema.fields])

    def pack(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield pa.RecordBatch.from_arrays([packed_floats(batch.column(n)) if n == "embedding" else batch.column(n)
                                              for n in names], names=names)

    return features.mapInArrow(pack, schema)


def _model_figures(features: DataFrame) -> _ModelFigures:
    present = [c for c in MODEL_COLUMNS if c in features.columns]
    return _ModelFigures(present, "probs" in present and not isinstance(features.schema["probs"].dataType,
                                                                           T.NullType))


def _with_objectives(candidates: DataFrame, plan: Plan, features: DataFrame, seed: int) -> DataFrame:
    """Candidates with one column per objective, ``_weight`` and ``_greedy_weight`` (computed per Arrow batch)."""
    source = SparkCandidates(candidates, features, seed, plan.selection.n_partitions, plan.selection.oversample)
    states = prepare_objectives(plan, source)
    names = [*[o.name for o in plan.objectives], "_weight", "_greedy_weight"]
    schema = T.StructType([*candidates.schema.fields, *[T.StructField(n, T.DoubleType()) for n in names]])

    def compute(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield add_objective_columns(batch, CandidateBatch.of(batch), plan, states)

    return candidates.mapInArrow(compute, schema)


def _quotas(candidates: DataFrame, plan: Plan, n_select: int) -> tuple[dict[str, int], np.ndarray] | None:
    if plan.balance_column is None:
        return None
    counts = candidates.groupBy(F.col(plan.balance_column).cast("string").alias("g")).count().collect()
    return quotas_for(plan, {str(row["g"]): int(row["count"]) for row in counts}, n_select)


def _candidate_columns(plan: Plan) -> list[Column]:
    columns = [F.col("id"), F.col("embedding"), F.col("_greedy_weight").alias("weight")]
    if plan.balance_column is not None:
        columns.append(F.col(plan.balance_column).cast("string").alias("_group"))
    return columns


def _two_stage(candidates: DataFrame, plan: Plan, spec: GreedySpec, progress: Progress,
               ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Round one per hash partition on the executors, the reduce levels, the merge round in one task."""
    if spec.n_select == 0:
        return [], np.zeros((0, 0), dtype=np.float32), np.zeros(0)
    n_partitions = plan.selection.n_partitions
    pool = candidates
    if plan.top_m is not None:
        pool = candidates.orderBy(F.desc("_weight"), F.asc("id")).limit(plan.top_m)

    def local_round(partitions: int) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
        def centres(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            received = list(batches)
            fail_once("select.local_centres")
            if not received:  # an empty hash partition
                return
            table = pa.Table.from_batches(received)
            yield from local_centres(table, partitions, spec).to_batches()
        return centres

    rows = pool.select(*_candidate_columns(plan))
    if pool is not candidates:  # top_m's limit gathered the rows: spread them again
        rows = _hash_partitions(rows, n_partitions, spec.seed)
    union = rows.mapInArrow(local_round(n_partitions), rows.schema)
    for level, partitions in enumerate(reduce_levels(spec.n_select, n_partitions, spec.oversample), start=1):
        union = _hash_partitions(union, partitions, spec.seed + level).mapInArrow(local_round(partitions),
                                                                                   rows.schema)
    def merge(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        received = list(batches)
        if received:
            picked = merged_rows(pa.Table.from_batches(received), spec)
            yield from picked.append_column("_pick", pa.array(range(picked.num_rows), pa.int64())).to_batches()

    union = union.persist()
    try:
        with progress.phase("select", "local_rounds"):
            union.count()
        # The merge runs in one task, so the driver holds the picks, never the union (up to
        # UNION_CAP rows: 160,000 x 64 took 170 MiB to gather and merge on the driver).
        with progress.phase("select", "merge_round"):
            table = union.repartition(1).mapInArrow(
                merge, T.StructType([*rows.schema.fields, T.StructField("_pick", T.LongType())])).toArrow()
    finally:
        union.unpersist()
    return picks_of(table.sort_by("_pick"))


def _by_weight(candidates: DataFrame, n_candidates: int, plan: Plan, spec: GreedySpec,
               ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """No diversity: the heaviest candidates, gathered in growing prefixes until enough are picked."""
    if spec.n_select == 0:
        return [], np.zeros((0, 0), dtype=np.float32), np.zeros(0)
    ordered = candidates.select(*_candidate_columns(plan), F.col("_weight")).orderBy(F.desc("_weight"), F.asc("id"))
    limit = min(n_candidates, 2 * spec.n_select + 64)
    while True:
        ids, picked, weights = by_weight_round(ordered.limit(limit).toArrow(), spec)
        if len(ids) >= spec.n_select or limit >= n_candidates:
            return ids, picked, weights
        limit = min(n_candidates, limit * 4)


def _score_candidates(candidates: DataFrame, picked_ids: list[str], picked: np.ndarray, pick_weights: np.ndarray,
                      labeled: np.ndarray | None, plan: Plan) -> DataFrame:
    """Every candidate with its score, weight, diversity, parts, distance to the centres and pick order."""
    diversity = plan.ranks_by_distance
    reach = None
    if diversity and picked_ids:
        first = picked[0]

        def farthest(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            yield pa.RecordBatch.from_arrays([pa.array([max(
                (first_pick_reach(embedding_matrix(b), first) for b in batches if b.num_rows), default=0.0)])],
                names=["reach"])
        reach = max(r["reach"] for r in candidates.select("embedding").mapInArrow(farthest, "reach double").collect())
    ranking = RankingPass.of(picked_ids, picked, pick_weights, labeled, diversity=diversity, reach=reach)
    objective_names = [o.name for o in plan.objectives]
    keep = ["id", "_weight", *objective_names]

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            values, div, nearest, order = ranking.score_batch(
                [str(i) for i in batch.column("id").to_pylist()], embedding_matrix(batch),
                batch.column("_greedy_weight").to_numpy(zero_copy_only=False),
                batch.column("_weight").to_numpy(zero_copy_only=False))
            yield pa.RecordBatch.from_arrays(
                [*(batch.column(c) for c in keep), pa.array(~np.isnan(order)), pa.array(values, pa.float64()),
                 pa.array(div, pa.float64(), from_pandas=True), pa.array(nearest, pa.float64()),
                 pa.array(order, pa.int64(), from_pandas=True)],
                names=[*keep, "selected", "score", "diversity", "_nearest", "pick_order"])

    out = T.StructType([*(candidates.schema[c] for c in keep), T.StructField("selected", T.BooleanType()),
                        T.StructField("score", T.DoubleType()), T.StructField("diversity", T.DoubleType()),
                        T.StructField("_nearest", T.DoubleType()), T.StructField("pick_order", T.LongType())])
    scored = candidates.select("embedding", "_greedy_weight", *keep).mapInArrow(score, out)
    return scored.select("id", "selected", "score", F.col("_weight").alias("weight"), "diversity",
                         *objective_names, "_nearest", "pick_order")


def _with_parts(ranked: DataFrame, plan: Plan) -> DataFrame:
    """The ranking's columns, each objective's value gathered into ``parts`` (built after the sort,
    so that the shuffle moves plain doubles, not maps)."""
    names = [o.name for o in plan.objectives]
    labels = [o.label for o in plan.objectives]
    parts = F.create_map(*[item for name, label in zip(names, labels, strict=True)
                           for item in (F.lit(label), F.col(name))]) if labels else F.create_map().cast(
        "map<string,double>")
    return ranked.select("id", "selected", "score", "weight", "diversity", parts.alias("parts"), "rank")


def _read_features(spark: SparkSession, lake: Lake, run_id: str,
                   columns: Callable[[list[str]], list[str]] | None = None, table: str = "features") -> DataFrame:
    """This run's features (or another of its tables, e.g. a detection run's ``objects``) as a DataFrame,
    read by Python in the Spark tasks.

    Spark gets Arrow batches from pyarrow, which reads local paths and object stores alike
    (no Hadoop file-system connector or Delta reader on the classpath). ``columns`` picks the
    columns to read from the table's names (every one without it); the embeddings come packed
    (:func:`~alray.strategies.base.packed_floats`), as the selection carries them.
    """
    files = lake.run_files(table, run_id)
    if not files:
        raise InputError(f"{table} table {lake.table(table)}: no rows for run {run_id}; run the score stage")
    options = dict(lake.storage_options or {})
    filesystem, first = filesystem_for(files[0], options)
    schema = pq.read_schema(first, filesystem=filesystem)
    names = [n for n in schema.names if n != "run_id"]  # Iceberg files hold it; Delta keeps it in the path
    if columns is not None:
        names = columns(names)
    arrow_schema = pa.schema([pa.field(n, pa.binary()) if n == "embedding" else schema.field(n) for n in names])

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for path in batch.column("path").to_pylist():
                fs, inner = filesystem_for(path, options)
                parquet = pq.ParquetFile(inner, filesystem=fs)
                for part in parquet.iter_batches(batch_size=8192, columns=names):
                    yield pa.RecordBatch.from_arrays(
                        [packed_floats(part.column(n)) if n == "embedding" else part.column(n).cast(
                            arrow_schema.field(n).type) for n in names], schema=arrow_schema)

    paths = spark.createDataFrame([(f,) for f in files], "path string")
    paths = paths.repartition(read_partitions(len(files), spark.sparkContext.defaultParallelism))
    return paths.mapInArrow(read, from_arrow_schema(arrow_schema))


# Features files a Spark read task takes (about: they are dealt round-robin): the score stage
# writes files of 20,000 to 40,000 rows, so a task reads some 320,000 rows, which it caches.
# At 10M rows in 8 tasks (1.25M rows each, cached as they were counted) Spark's hash aggregation
# of the filter counts found no memory left in a 4g JVM and failed.
FILES_PER_READ_TASK = 8


def read_partitions(n_files: int, parallelism: int) -> int:
    """Spark read tasks for ``n_files`` features files: four per core, more when a task would read more
    than ``FILES_PER_READ_TASK`` files on average, never more than one per file."""
    return max(1, min(n_files, max(parallelism * 4, math.ceil(n_files / FILES_PER_READ_TASK))))



def _sorted_by_id(frame: DataFrame) -> pa.Table:
    """``id`` and ``embedding`` of a small DataFrame on the driver, in id order.

    The order of rows fixes the order of float sums over them, so it must not depend on how
    the features files happen to be laid out.
    """
    return sorted_by_id(frame.select("id", "embedding").toArrow())



def ranking_order() -> list[Column]:
    """The ranking's order: the picks in the order they were made, then the rest by score."""
    return [F.col("pick_order").asc_nulls_last(), F.desc("score"), F.asc("id")]


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



def _write_ranking(ranked: DataFrame, run_id: str, lake: Lake, strategy: str, run_time: dt.datetime,
                   progress: Progress, table: str = "ranking", table_schema: pa.Schema = RANKING_SCHEMA) -> None:
    """Spark tasks write the ranking's parquet files; the driver commits them in one transaction."""
    staging = lake.staging(run_id, table)
    options = dict(lake.storage_options or {})
    keep_run_id = lake.keeps_run_id_in_files()
    schema = without_run_id(table_schema, keep_run_id)
    created = pa.scalar(run_time, type=pa.timestamp("us", tz="UTC"))

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        writer, path, rows = None, "", 0
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
        if writer is not None:
            writer.close()
            yield pa.RecordBatch.from_arrays([pa.array([path]), pa.array([rows], pa.int64())],
                                             names=["path", "rows"])

    with progress.phase("select", "write"):
        written = ranked.mapInArrow(write, "path string, rows long").toArrow()
    files = written.column("path").to_pylist()
    with progress.phase("select", "commit"):
        lake.commit_files(table, files, run_id, schema=schema)
