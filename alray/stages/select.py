"""The selection stage on Spark: filters, the two-stage k-center coreset, the ranking.

Round one runs a local uncertainty-weighted k-center greedy in every random partition
(``mapInArrow``); round two merges the small union of local centres on the driver; a last
distributed pass measures each candidate's distance to the chosen centres (the coverage radius
is its maximum) and ranks the rest. All arithmetic lives in :mod:`alray.coreset`.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from alray.config import Config
from alray.coreset import k_center_greedy, local_k, nearest_centre_distances
from alray.engines import spark_session
from alray.errors import InputError
from alray.lake import Lake, ensure_dir, iter_batches, read_ids, reader_from_batches, replace_run, run_files
from alray.progress import Progress
from alray.stages.spark_filters import rejection_reason

# Keeps a zero-uncertainty candidate selectable: weights scale distances, they must not erase them.
WEIGHT_FLOOR = 1e-6
LABELED_REASON = "labeled"

RANKING_SCHEMA = pa.schema([
    pa.field("run_id", pa.string()), pa.field("id", pa.string()), pa.field("rank", pa.int64()),
    pa.field("selected", pa.bool_()), pa.field("score", pa.float64()),
    pa.field("uncertainty", pa.float64()), pa.field("weight", pa.float64()),
    pa.field("diversity", pa.float64()), pa.field("strategy", pa.string()),
    pa.field("created_at", pa.timestamp("us", tz="UTC")),
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


def _matrix(batch: pa.RecordBatch | pa.Table, column: str) -> np.ndarray:
    values = batch.column(column)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    n = len(values)
    flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(n, -1) if n else np.zeros((0, 0), dtype=np.float32)


def strategy_name(config: Config) -> str:
    """The ranking's strategy label, e.g. ``uncertainty_weighted_diversity(bald^1)``."""
    selection = config.selection
    if selection.uncertainty == "none":
        return "diversity"
    return f"uncertainty_weighted_diversity({selection.uncertainty}^{selection.strength:g})"


def _weights(config: Config) -> tuple[F.Column, F.Column]:
    selection = config.selection
    if selection.uncertainty == "none":
        return F.lit(0.0), F.lit(1.0)
    uncertainty = F.col(selection.uncertainty).cast("double")
    weight = F.pow(F.greatest(uncertainty, F.lit(0.0)) + F.lit(WEIGHT_FLOOR), F.lit(selection.strength))
    return uncertainty, weight


def run_select(config: Config, run_id: str, lake: Lake, progress: Progress,
               *, run_time: dt.datetime | None = None) -> SelectResult:
    """Select on Spark from this run's features and replace this run's ranking rows."""
    run_time = run_time or dt.datetime.now(dt.timezone.utc)
    files = run_files(lake.table("features"), run_id)
    if not files:
        raise InputError(f"features table {lake.table('features')}: no rows for run {run_id}; run the score stage")
    spark = spark_session(config.spark)
    features = spark.read.parquet(*files)
    duplicates = features.groupBy("id").count().filter(F.col("count") > 1).limit(3).collect()
    if duplicates:
        shown = ", ".join(repr(row["id"]) for row in duplicates)
        raise InputError(f"pool {config.pool.path}: duplicate ids ({shown}); ids must be unique")

    labeled_ids = (read_ids(config.labeled.path, config.labeled.format, name="labeled.path")
                   if config.labeled.path else pa.array([], pa.string()))
    labeled_df = spark.createDataFrame(pa.table({"id": labeled_ids}).to_pandas()).withColumn(
        "_labeled", F.lit(True)) if len(labeled_ids) else None
    if labeled_df is not None:
        features = features.join(F.broadcast(labeled_df), "id", "left")
        first = (F.coalesce(F.col("_labeled"), F.lit(False)), LABELED_REASON)
    else:
        first = None
    reason = rejection_reason(config.selection.filters, features.schema, run_time, first=first)
    uncertainty, weight = _weights(config)
    annotated = features.withColumn("_reason", reason).withColumn("_uncertainty", uncertainty).withColumn(
        "_weight", weight).cache()
    counts = {row["_reason"]: row["count"] for row in annotated.groupBy("_reason").count().collect()}
    n_features = sum(counts.values())
    n_candidates = counts.pop(None, 0)
    progress.say(f"select: {n_features} scored, {n_candidates} candidates; filtered {counts or 'none'}")

    labeled_rows = (annotated.filter(F.col("_reason") == LABELED_REASON).select("embedding").toArrow()
                    if labeled_df is not None else pa.table({"embedding": pa.array([], pa.list_(pa.float32()))}))
    labeled_embeddings = _matrix(labeled_rows, "embedding") if labeled_rows.num_rows else None
    candidates = annotated.filter(F.col("_reason").isNull()).select(
        "id", "embedding", F.col("_uncertainty").alias("uncertainty"), F.col("_weight").alias("weight"))

    result = SelectResult(
        n_features=n_features, n_candidates=n_candidates, n_selected=0,
        n_filtered=sum(counts.values()), filtered_by_reason={str(k): int(v) for k, v in counts.items()},
        n_labeled_in_pool=int(counts.get(LABELED_REASON, 0)), strategy=strategy_name(config),
    )
    n_select = min(config.selection.n_samples, n_candidates)
    if n_select < config.selection.n_samples:
        progress.say(f"select: only {n_candidates} candidates for n_samples={config.selection.n_samples}; "
                     "selecting all of them")
    selected_ids, pick_distances = _two_stage(spark, candidates, n_select, config, labeled_embeddings)
    result.n_selected = len(selected_ids)
    staging = lake.staging(run_id, "ranking")
    ensure_dir(os.path.dirname(staging))
    centres = _centre_embeddings(candidates, selected_ids, labeled_embeddings)
    _rank(spark, candidates, selected_ids, pick_distances, centres).write.mode("overwrite").parquet(staging)
    result.coverage_radius = _commit_ranking(staging, run_id, lake, result.strategy, run_time)
    annotated.unpersist()
    return result


def _two_stage(spark: SparkSession, candidates: DataFrame, n_select: int, config: Config,
               labeled: np.ndarray | None) -> tuple[list[str], list[float | None]]:
    """Round one per partition on the executors, round two on the driver; picks in order."""
    if n_select == 0:
        return [], []
    selection, seed = config.selection, config.run.seed
    n_partitions = selection.n_partitions

    def local_centres(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = pa.Table.from_batches(list(batches))
        if table.num_rows == 0:
            return
        # Sorting by id makes a partition's result independent of the order rows arrived in.
        table = table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))
        embeddings, weights = _matrix(table, "embedding"), table.column("weight").to_numpy()
        k = local_k(n_select, n_partitions, selection.oversample, table.num_rows)
        picks, _ = k_center_greedy(embeddings, k, weights=weights, already_selected=labeled,
                                   first=_first_pick(weights, labeled), seed=seed)
        yield from table.take(pa.array(picks)).select(["id", "embedding", "weight"]).to_batches()

    partitioned = candidates.repartition(n_partitions, F.xxhash64(F.col("id"), F.lit(seed)))
    union = partitioned.mapInArrow(local_centres, "id string, embedding array<float>, weight double").toArrow()
    union = union.take(pc.sort_indices(union, sort_keys=[("id", "ascending")]))
    embeddings, weights = _matrix(union, "embedding"), union.column("weight").to_numpy()
    picks, _ = k_center_greedy(embeddings, n_select, weights=weights, already_selected=labeled,
                               first=_first_pick(weights, labeled), seed=seed)
    ids = union.column("id").to_pylist()
    return [ids[i] for i in picks], _pick_distances(embeddings[picks], labeled)


def _first_pick(weights: np.ndarray, labeled: np.ndarray | None) -> int | None:
    # With no labeled centre to measure from, start at the most uncertain candidate.
    return None if labeled is not None and len(labeled) else int(np.argmax(weights))


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
    rows = candidates.filter(F.col("id").isin(selected_ids)).select("embedding").toArrow() if selected_ids else None
    parts = [m for m in (labeled, _matrix(rows, "embedding") if rows is not None else None)
             if m is not None and len(m)]
    return np.vstack(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def _rank(spark: SparkSession, candidates: DataFrame, selected_ids: list[str],
          pick_distances: list[float | None],
          centres: np.ndarray) -> DataFrame:
    """Every candidate with its distance to the centres, selected rows first in pick order."""

    def distances(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            embeddings = _matrix(batch, "embedding")
            if len(centres) and batch.num_rows:
                diversity = nearest_centre_distances(embeddings, centres).astype(np.float64)
            else:
                diversity = np.zeros(batch.num_rows)
            weight = batch.column("weight").to_numpy(zero_copy_only=False)
            yield pa.RecordBatch.from_arrays(
                [batch.column("id"), batch.column("uncertainty"), batch.column("weight"),
                 pa.array(diversity), pa.array(weight * diversity)],
                names=["id", "uncertainty", "weight", "diversity", "score"],
            )

    measured = candidates.mapInArrow(
        distances, "id string, uncertainty double, weight double, diversity double, score double")
    picks = spark.createDataFrame(
        [(i, r + 1, d) for r, (i, d) in enumerate(zip(selected_ids, pick_distances, strict=True))],
        "id string, pick_rank int, pick_distance double")
    # A pick's score is weight x its distance to the centres before it; the very first pick,
    # with no centre before it, scores its weight alone.
    selected = F.col("pick_rank").isNotNull()
    joined = measured.join(F.broadcast(picks), "id", "left")
    order = Window.orderBy(F.col("pick_rank").asc_nulls_last(), F.desc("score"), F.asc("id"))
    return joined.select(
        "id",
        F.row_number().over(order).cast("long").alias("rank"),
        selected.alias("selected"),
        F.when(selected, F.col("weight") * F.coalesce(F.col("pick_distance"), F.lit(1.0)))
        .otherwise(F.col("score")).alias("score"),
        "uncertainty", "weight",
        F.when(selected, F.col("pick_distance")).otherwise(F.col("diversity")).alias("diversity"),
        F.col("diversity").alias("_nearest"),
    )


def _commit_ranking(staging: str, run_id: str, lake: Lake, strategy: str, run_time: dt.datetime) -> float | None:
    """Commit Spark's ranking files to the ranking table; return the coverage radius."""
    dataset = pads.dataset(staging, format="parquet")
    nearest = dataset.to_table(columns=["_nearest"]).column("_nearest")
    radius = pc.max(nearest).as_py() if len(nearest) else None
    created = pa.scalar(run_time, type=pa.timestamp("us", tz="UTC"))

    def rows() -> Iterator[pa.RecordBatch]:
        reader = dataset.scanner(columns=[n for n in RANKING_SCHEMA.names if n in dataset.schema.names],
                                 batch_size=65536).to_reader()
        for batch in iter_batches(reader):
            n = batch.num_rows
            extra = {
                "run_id": pa.array([run_id] * n, pa.string()),
                "strategy": pa.array([strategy] * n, pa.string()),
                "created_at": pa.array([created.value] * n, pa.timestamp("us", tz="UTC")),
            }
            yield pa.RecordBatch.from_arrays(
                [extra[f.name] if f.name in extra else batch.column(f.name).cast(f.type) for f in RANKING_SCHEMA],
                schema=RANKING_SCHEMA,
            )

    replace_run(lake.table("ranking"), reader_from_batches(RANKING_SCHEMA, rows()), run_id)
    return float(radius) if radius is not None else None
