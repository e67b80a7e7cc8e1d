"""The Spark selection stage on synthetic features tables: filters, strategies, stops, ranking."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from alray.config import config_from_dict
from alray.coreset import coverage_radius, k_center_greedy, nearest_centre_distances
from alray.errors import ConfigError, InputError
from alray.lake import Lake, read_run, replace_run
from alray.progress import Progress
from alray.stages.select import run_select
from alray.strategies import minmax_objective

RUN_TIME = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.timezone.utc)
# BALD-weighted diversity, the default before `auto`
UD = [{"input": "embeddings", "strategy": "diversity"}, {"input": "bald", "strategy": "weights"}]
_counter = itertools.count()


def make_features(n: int = 240, *, seed: int = 0, duplicates: int = 0) -> pa.Table:
    """A features table of ``n`` rows in 6 clusters with scores and metadata of every type."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, size=(6, 8))
    cluster = np.arange(n) % 6
    embedding = (centres[cluster] + rng.normal(0, 1, size=(n, 8))).astype(np.float32)
    if duplicates:
        embedding[n - duplicates :] = embedding[:duplicates]
    probs = rng.dirichlet(np.ones(3) * 0.5, size=n).astype(np.float32)
    bald = rng.random(n)
    bald[rng.random(n) < 0.1] = np.nan
    return pa.table({
        "run_id": pa.array(["r"] * n),
        "id": pa.array([f"s{i:04d}" for i in range(n)]),
        "embedding": pa.array(list(embedding), pa.list_(pa.float32())),
        "probs": pa.array(list(probs), pa.list_(pa.float32())),
        "pred": pa.array(probs.argmax(axis=1).astype(np.int32)),
        "bald": pa.array(bald, pa.float64(), from_pandas=True),
        "entropy": pa.array(rng.random(n)),
        "sharpness": pa.array(rng.uniform(0, 100, n)),
        "camera_id": pa.array([["cam-0", "cam-1", None][i % 3] for i in range(n)], pa.string()),
        "n_objects": pa.array(rng.integers(0, 10, n).astype(np.int64)),
        "flagged": pa.array(rng.random(n) < 0.5),
        "captured_at": pa.array([RUN_TIME - dt.timedelta(days=float(d)) for d in rng.uniform(0, 30, n)],
                                pa.timestamp("us", tz="UTC")),
        "cluster": pa.array(cluster.astype(np.int64)),
    })


def select(tmp_path, features: pa.Table, labeled_ids: list[str] | None = None, **selection):
    run_id = f"t{next(_counter)}"
    lake = Lake(str(tmp_path / "lake"))
    replace_run(lake.table("features"), features.set_column(0, "run_id", pa.array([run_id] * features.num_rows)),
                run_id)
    labeled = None
    if labeled_ids:
        labeled = str(tmp_path / f"labeled-{run_id}.parquet")
        pq.write_table(pa.table({"id": labeled_ids}), labeled)
    config = config_from_dict({
        "run": {"seed": 0, "run_id": run_id},
        "pool": {"path": "unused"},
        "labeled": {"path": labeled},
        "model": {"checkpoint": "unused"},
        "selection": {"n_partitions": 3, "engine": "spark", **selection},  # the Spark stage unless told
        "output": {"path": lake.root},
    })
    result = run_select(config.selection, config.labeled, config.spark, seed=config.run.seed, run_id=run_id,
                        lake=lake, progress=Progress(quiet=True), run_time=RUN_TIME,
                        labeled_storage_options=config.labeled_storage_options(), source=f"pool {config.pool.path}")
    ranking = read_run(lake.table("ranking"), run_id).sort_by("rank")
    return result, ranking


def selected_ids(ranking: pa.Table) -> list[str]:
    return ranking.filter(pc.field("selected")).sort_by("rank").column("id").to_pylist()


def rows_of(features: pa.Table, ids: list[str]) -> np.ndarray:
    index = {i: k for k, i in enumerate(features.column("id").to_pylist())}
    return np.array([index[i] for i in ids], dtype=np.int64)


def embeddings(features: pa.Table) -> np.ndarray:
    return np.stack(features.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)


FILTER_CASES = [
    ({"column": "sharpness", "op": ">", "value": 50.0}, lambda t: t["sharpness"] > 50),
    ({"column": "sharpness", "op": ">=", "value": 50.0}, lambda t: t["sharpness"] >= 50),
    ({"column": "n_objects", "op": "<", "value": 3}, lambda t: t["n_objects"] < 3),
    ({"column": "n_objects", "op": "<=", "value": 3}, lambda t: t["n_objects"] <= 3),
    ({"column": "camera_id", "op": "==", "value": "cam-1"}, lambda t: t["camera_id"] == "cam-1"),
    ({"column": "camera_id", "op": "!=", "value": "cam-1"},
     lambda t: (t["camera_id"] != "cam-1") & t["camera_id"].notna()),  # null never passes
    ({"column": "n_objects", "op": "in", "value": [1, 2]}, lambda t: np.isin(t["n_objects"], [1, 2])),
    ({"column": "n_objects", "op": "not_in", "value": [1, 2]}, lambda t: ~np.isin(t["n_objects"], [1, 2])),
    ({"column": "sharpness", "op": "between", "value": [20, 60]},
     lambda t: (t["sharpness"] >= 20) & (t["sharpness"] <= 60)),
    ({"column": "camera_id", "op": "is_null"}, lambda t: t["camera_id"].isna()),
    ({"column": "camera_id", "op": "not_null"}, lambda t: t["camera_id"].notna()),
    ({"column": "flagged", "op": "==", "value": True}, lambda t: t["flagged"]),
    ({"column": "captured_at", "op": "within_last", "value": "7d"},
     lambda t: t["captured_at"] >= np.datetime64(RUN_TIME.replace(tzinfo=None) - dt.timedelta(days=7))),
    ({"column": "captured_at", "op": ">", "value": "2026-10-20T00:00:00"},
     lambda t: t["captured_at"] > np.datetime64("2026-10-20T00:00:00")),
]


@pytest.fixture(scope="module")
def features():
    return make_features()


@pytest.fixture(scope="module")
def features_frame(spark, features):
    return spark.createDataFrame(features.drop_columns(["run_id"]).to_pandas())


@pytest.mark.parametrize(("spec", "expected"), FILTER_CASES,
                         ids=[c[0]["op"] + ":" + c[0]["column"] for c in FILTER_CASES])
def test_every_filter_op(features, features_frame, spec, expected):

    from alray.config import FilterConfig
    from alray.stages.spark_filters import rejection_reason

    frame = features.to_pandas()
    frame["captured_at"] = frame["captured_at"].dt.tz_localize(None)
    keep = np.asarray(expected(frame), dtype=bool)
    reason = rejection_reason([(FilterConfig(**spec), "selection.filters.0")], features_frame.schema, RUN_TIME)
    rows = features_frame.select("id", reason.alias("reason")).collect()
    kept = {row["id"] for row in rows if row["reason"] is None}
    assert kept == set(frame["id"][keep])
    assert {row["reason"] for row in rows if row["reason"] is not None} <= {
        f"selection.filters.0: {_describe(spec)}"}


def test_filters_in_the_stage_count_reasons_in_order(spark, tmp_path, features):
    filters = [{"column": "sharpness", "op": ">", "value": 50.0}, {"column": "camera_id", "op": "not_null"}]
    result, ranking = select(tmp_path, features, n_samples=5, filters=filters)
    sharp = features.column("sharpness").to_numpy() > 50
    camera = np.array([c is not None for c in features.column("camera_id").to_pylist()])
    assert result.n_candidates == int((sharp & camera).sum()) == ranking.num_rows
    assert result.filtered_by_reason == {
        "selection.filters.0: sharpness > 50.0": int((~sharp).sum()),
        "selection.filters.1: camera_id not_null": int((sharp & ~camera).sum()),
    }


def _describe(spec: dict) -> str:
    from alray.config import FilterConfig

    return FilterConfig(**spec).describe()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"column": "nope", "op": ">", "value": 1}, "selection.filters.0 (nope > 1): no column 'nope'"),
        ({"column": "camera_id", "op": ">", "value": 1}, "expected a string for a string column, got 1"),
        ({"column": "sharpness", "op": "in", "value": ["a"]}, "expected a number for a double column"),
        ({"column": "sharpness", "op": "within_last", "value": "7d"}, "within_last needs a timestamp"),
        ({"column": "captured_at", "op": ">", "value": "yesterday"}, "expected an ISO date or time"),
    ],
)
def test_filter_errors_name_the_filter(spark, tmp_path, features, spec, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        select(tmp_path, features, n_samples=5, filters=[spec])


def test_single_partition_equals_the_greedy_on_the_driver(spark, tmp_path, features):
    result, ranking = select(tmp_path, features, n_samples=12, n_partitions=1, strategies=UD)
    bald = features.column("bald").to_numpy(zero_copy_only=False)
    weights = minmax_objective(bald, np.nanmin(bald), np.nanmax(bald))
    expected, _ = k_center_greedy(embeddings(features), 12, weights=weights, first=int(np.argmax(weights)))
    assert selected_ids(ranking) == [features.column("id")[int(i)].as_py() for i in expected]
    assert result.n_selected == 12
    assert sorted(ranking.column("rank").to_pylist()) == list(range(1, features.num_rows + 1))


def test_labeled_embeddings_are_existing_centres(spark, tmp_path, features):
    labeled = [f"s{i:04d}" for i in range(0, 240, 6)]  # all of cluster 0
    result, ranking = select(tmp_path, features, labeled_ids=labeled, n_samples=5)
    chosen = selected_ids(ranking)
    assert not set(chosen) & set(labeled)
    assert result.filtered_by_reason == {"labeled": 40}
    clusters = features.column("cluster").to_numpy()[rows_of(features, chosen)]
    assert 0 not in clusters[:5]  # the labeled cluster is already covered
    x = embeddings(features)
    candidates = x[np.array([i not in set(labeled) for i in features.column("id").to_pylist()])]
    centres = np.vstack([x[rows_of(features, labeled)], x[rows_of(features, chosen)]])
    assert result.coverage_radius == pytest.approx(coverage_radius(candidates, centres), rel=1e-4)


def test_ranking_rows_and_parts(spark, tmp_path, features):
    result, ranking = select(tmp_path, features, n_samples=10, strategies=UD)
    assert ranking.num_rows == features.num_rows
    top = ranking.slice(0, 10)
    assert top.column("selected").to_pylist() == [True] * 10
    rest = ranking.slice(10).column("score").to_numpy()
    assert np.all(np.diff(rest) <= 1e-12)  # the rest follow by combined score
    parts = ranking.column("parts").to_pylist()
    assert all(dict(p).keys() == {"weights:bald"} for p in parts)
    assert set(ranking.column("strategy").to_pylist()) == {"diversity^1+weights:bald^1"}
    assert result.strategy == "diversity^1+weights:bald^1"


def test_global_rank_numbers_rows_in_order_across_partitions(spark):
    from pyspark.sql import functions as F

    from alray.stages.select import global_rank

    rng = np.random.default_rng(3)
    n = 3_000
    scores = rng.integers(0, 40, size=n).astype(float)  # many ties, broken by id
    picks = [int(p) if p < 25 else None for p in rng.permutation(n)]
    rows = [(f"s{i:05d}", float(scores[i]), picks[i]) for i in rng.permutation(n)]
    frame = spark.createDataFrame(rows, "id string, score double, pick_order int").repartition(7)
    order = [F.col("pick_order").asc_nulls_last(), F.desc("score"), F.asc("id")]
    # Small data: without this, Spark merges the sort's partitions into one and nothing is offset.
    spark.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "false")
    try:
        assert frame.orderBy(*order).select(F.spark_partition_id()).distinct().count() > 1
        with global_rank(frame, order) as ranked:
            got = sorted((r["rank"], r["id"]) for r in ranked.collect())
    finally:
        spark.conf.unset("spark.sql.adaptive.coalescePartitions.enabled")
    expected = sorted(rows, key=lambda r: (r[2] is None, r[2] or 0, -r[1], r[0]))
    assert [rank for rank, _ in got] == list(range(1, n + 1))
    assert [i for _, i in got] == [r[0] for r in expected]
    with global_rank(frame.limit(0), order) as ranked:
        assert ranked.count() == 0


def test_balance_targets_are_met_within_one_sample(spark, tmp_path, features):
    target = {"0": 0.5, "1": 0.3, "2": 0.2}
    _result, ranking = select(tmp_path, features, n_samples=20, strategies=[
        {"input": "embeddings", "strategy": "diversity"},
        {"input": "predictions", "strategy": "balance", "target": target},
    ])
    preds = features.column("pred").to_numpy()[rows_of(features, selected_ids(ranking))]
    counts = np.bincount(preds, minlength=3)
    for c, share in target.items():
        assert abs(counts[int(c)] - 20 * share) <= 1
    _, ranking = select(tmp_path, features, n_samples=21, strategies=[
        {"input": "embeddings", "strategy": "diversity"},
        {"input": "camera_id", "strategy": "balance", "target": "uniform"},
    ])
    cams = [features.column("camera_id")[int(i)].as_py() for i in rows_of(features, selected_ids(ranking))]
    assert sorted(np.unique([str(c) for c in cams], return_counts=True)[1].tolist()) == [7, 7, 7]


def test_min_distance_stops_and_spaces_the_selection(spark, tmp_path, features):
    result, ranking = select(tmp_path, features, strategies=[
        {"input": "embeddings", "strategy": "diversity", "min_distance": 6.0}])
    chosen = embeddings(features)[rows_of(features, selected_ids(ranking))]
    assert 1 < len(chosen) < features.num_rows
    for j in range(1, len(chosen)):
        assert nearest_centre_distances(chosen[j : j + 1], chosen[:j])[0] >= 6.0 - 1e-4
    assert result.stop_reason == "min_distance"


def test_near_duplicates_are_never_both_selected(spark, tmp_path):
    features = make_features(60, duplicates=30)  # rows 30..59 duplicate rows 0..29 (not their probs)
    _result, ranking = select(tmp_path, features, n_samples=40, near_duplicate_distance=1e-3, strategies=UD)
    chosen = selected_ids(ranking)
    assert len(chosen) == 30
    x = embeddings(features)[rows_of(features, chosen)]
    for j in range(1, len(x)):
        assert nearest_centre_distances(x[j : j + 1], x[:j])[0] > 1e-3
    # a selector (badge: the duplicates' gradient embeddings differ) keeps the rule too, its batch short
    result, ranking = select(tmp_path, features, n_samples=40, near_duplicate_distance=1e-3,
                             strategies=[{"input": "embeddings", "strategy": "badge"}])
    chosen = selected_ids(ranking)
    assert 20 <= len(chosen) <= 30 and result.stop_reason
    assert len({int(i[1:]) % 30 for i in chosen}) == len(chosen)  # never a row and its duplicate


def test_threshold_and_proportion(spark, tmp_path, features):
    result, _ranking = select(tmp_path, features, proportion_samples=0.1, strategies=[
        {"input": "sharpness", "strategy": "threshold", "threshold": 50, "operation": "bigger_equal"},
        {"input": "embeddings", "strategy": "diversity"},
    ])
    keep = int((features.column("sharpness").to_numpy() >= 50).sum())
    assert result.n_candidates == keep
    assert result.n_selected == int(np.ceil(0.1 * keep))
    assert list(result.filtered_by_reason) == ["selection.strategies.0: sharpness >= 50.0"]


def test_weights_only_ranks_by_weight(spark, tmp_path, features):
    _result, ranking = select(tmp_path, features, n_samples=8, strategies=[
        {"input": "entropy", "strategy": "weights"}])
    entropy = features.column("entropy").to_numpy()
    assert selected_ids(ranking) == [features.column("id")[int(i)].as_py() for i in np.argsort(-entropy)[:8]]


def test_top_m_then_diversify(spark, tmp_path, features):
    result, ranking = select(tmp_path, features, n_samples=6, mode="top_m", top_m=30, strategies=[
        {"input": "embeddings", "strategy": "diversity"}, {"input": "entropy", "strategy": "weights"}])
    entropy = features.column("entropy").to_numpy()
    by_entropy = [features.column("id")[int(i)].as_py() for i in np.argsort(-entropy)]
    picks = selected_ids(ranking)
    assert set(picks) <= set(by_entropy[:30]) and result.n_selected == 6
    # diversified, not the plain top 6: the picks lie farther apart than the six most uncertain rows
    x = embeddings(features)

    def closest_pair(ids: list[str]) -> float:
        rows = x[rows_of(features, ids)]
        gaps = np.linalg.norm(rows[:, None] - rows[None], axis=2)
        return float(gaps[np.triu_indices(len(rows), 1)].min())

    assert set(picks) != set(by_entropy[:6])
    assert closest_pair(picks) > 2 * closest_pair(by_entropy[:6])


@pytest.mark.parametrize("method", ["knn", "kmeans"])
def test_typicality_prefers_dense_samples(spark, tmp_path, method):
    rng = np.random.default_rng(3)
    features = make_features(200)
    x = embeddings(features)
    x[:20] = rng.uniform(-40, 40, size=(20, 8))  # sparse outliers
    features = features.set_column(2, "embedding", pa.array(list(x), pa.list_(pa.float32())))
    _result, ranking = select(tmp_path, features, n_samples=10, strategies=[
        {"input": "embeddings", "strategy": "typicality", "method": method, "n_neighbors": 5, "n_clusters": 6}])
    chosen = rows_of(features, selected_ids(ranking))
    assert (chosen < 20).sum() == 0  # no outlier is typical
    # the picks are the densest rows: mean distance to the 5 nearest other rows, measured here
    gaps = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(gaps, np.inf)
    spread = np.sort(gaps, axis=1)[:, :5].mean(axis=1)
    if method == "knn":  # exactly the measure ranked: the 10 densest rows
        assert set(chosen.tolist()) == set(np.argsort(spread)[:10].tolist())
    else:  # small clusters far from their centroid rank last: no outlier among half the rows (random: ~1e-6)
        _result, ranking = select(tmp_path, features, n_samples=100, strategies=[
            {"input": "embeddings", "strategy": "typicality", "method": method, "n_clusters": 6}])
        assert (rows_of(features, selected_ids(ranking)) >= 20).all()


def test_similarity_to_query_ids(spark, tmp_path, features):
    _result, ranking = select(tmp_path, features, n_samples=10, strategies=[
        {"input": "embeddings", "strategy": "similarity", "query": {"ids": ["s0001"]}}])
    clusters = features.column("cluster").to_numpy()[rows_of(features, selected_ids(ranking))]
    assert (clusters == 1).all()  # s0001 is in cluster 1


def test_n_samples_above_candidates_selects_all(spark, tmp_path):
    features = make_features(12)
    result, ranking = select(tmp_path, features, n_samples=50)
    assert result.n_selected == 12 and ranking.num_rows == 12


@pytest.mark.parametrize("engine", ["spark", "local"])
def test_duplicate_ids_are_a_clear_error(spark, tmp_path, engine):
    features = make_features(10)
    features = pa.concat_tables([features, features.slice(0, 1)])
    with pytest.raises(InputError, match=r"duplicate ids \('s0000'\)"):
        select(tmp_path, features, n_samples=3, engine=engine)


def test_unknown_strategy_input_is_a_config_error(spark, tmp_path, features):
    with pytest.raises(ConfigError, match=r"selection\.strategies\.1: no column 'nonsense'"):
        select(tmp_path, features, n_samples=3, strategies=[
            {"input": "embeddings", "strategy": "diversity"}, {"input": "nonsense", "strategy": "weights"}])


def test_a_query_table_without_embeddings_is_a_clear_error(tmp_path):
    from alray.config import StrategyConfig
    from alray.selection.batches import read_query_embeddings

    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "q.parquet")
    entry = StrategyConfig(input="embeddings", strategy="similarity", query={"path": str(tmp_path / "q.parquet")})
    with pytest.raises(InputError, match=r"query\.path: .*q\.parquet: missing required column 'embedding'"):
        read_query_embeddings(entry.query, features=lambda ids: pa.table({"embedding": []}))


def test_the_default_is_auto_and_says_what_it_chose(spark, tmp_path, features):
    result, ranking = select(tmp_path, features, n_samples=10)  # no labeled set: the model taken as informed
    assert result.strategy == "auto(weights:entropy^1)"  # small batch, no margin column: the top of entropy
    assert "no labeled set" in result.strategy_reason
    assert set(ranking.column("strategy").to_pylist()) == {result.strategy}
    few = [f"s{i:04d}" for i in range(3)]  # 3 labeled for 3 classes: cold start
    result, ranking = select(tmp_path, features, labeled_ids=few, n_samples=10)
    assert result.strategy == "auto(typiclust^1)" and "cold start" in result.strategy_reason
    assert ranking.filter(pc.field("selected")).num_rows == 10


def test_a_spark_read_task_takes_a_bounded_number_of_features_files():
    from alray.stages.select import FILES_PER_READ_TASK, read_partitions

    assert read_partitions(3, 2) == 3  # never more tasks than files
    assert read_partitions(33, 2) == 8  # a 1M-row run: four tasks per core
    tasks = read_partitions(330, 2)  # a 10M-row run: 8 tasks would read 1.25M rows each
    assert tasks == 42 and -(-330 // tasks) <= FILES_PER_READ_TASK
    assert read_partitions(0, 2) == 1
