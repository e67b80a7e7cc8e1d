"""The single-machine selection agrees with the Spark stage pick for pick, and its ranking means one thing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import alray
import alray.errors
from alray.api import selection_config
from alray.coreset import k_center_greedy, local_k, nearest_centre_distances
from alray.selection.local import two_stage_k_center
from alray.stages.select import select_dataframe
from tests.selection.features import clustered_features
from tests.test_coreset import _pairwise, clustered

DIVERSITY = {"input": "embeddings", "strategy": "diversity"}
BALD = {"input": "bald", "strategy": "weights"}

CONFIGS = {
    "weighted diversity, 4 partitions": dict(n_samples=40, strategies=[DIVERSITY, BALD], n_partitions=4),
    "weighted diversity, 7 partitions, oversample 1.5": dict(
        n_samples=60, strategies=[DIVERSITY, {**BALD, "strength": 2.0}], n_partitions=7, oversample=1.5),
    "diversity strength 0.5 with entropy": dict(
        n_samples=30, strategies=[{**DIVERSITY, "strength": 0.5}, {"input": "entropy", "strategy": "weights"}],
        n_partitions=3),
    "class quotas": dict(n_samples=40, strategies=[DIVERSITY, BALD, {"input": "predictions", "strategy": "balance",
                                                                   "target": {"0": 0.5, "1": 0.3, "2": 0.2}}],
                         n_partitions=5),
    "threshold, filter and min distance": dict(
        n_samples=50, strategies=[{**DIVERSITY, "min_distance": 1.5}, BALD,
                                  {"input": "bald", "strategy": "threshold", "threshold": 0.05,
                                   "operation": "bigger"}],
        filters=[{"column": "size", "op": ">=", "value": 10}], n_partitions=2),
    "knn typicality": dict(n_samples=25, strategies=[DIVERSITY, {"input": "embeddings", "strategy": "typicality",
                                                                 "reference_size": 300}], n_partitions=4),
    "similarity to ids": dict(n_samples=20, strategies=[DIVERSITY, {"input": "embeddings", "strategy": "similarity",
                                                                    "query": {"ids": ["row-00003"]}}]),
    "top_m then diversify": dict(n_samples=20, strategies=[DIVERSITY, BALD], mode="top_m", top_m=120,
                                 n_partitions=3),
    "typiclust on a sample": dict(n_samples=12, strategies=[{"input": "embeddings", "strategy": "typiclust",
                                                              "sample_size": 300}], n_partitions=3),
    "probcover with a threshold": dict(
        n_samples=15, strategies=[{"input": "embeddings", "strategy": "probcover", "n_clusters": 6},
                                  {"input": "bald", "strategy": "threshold", "threshold": 0.01,
                                   "operation": "bigger"}], n_partitions=2),
    "power sampling of bald": dict(n_samples=25, strategies=[{"input": "bald", "strategy": "power",
                                                              "temperature": 0.5}], n_partitions=3),
    "softmax with a threshold": dict(
        n_samples=20, strategies=[{"input": "entropy", "strategy": "softmax", "temperature": 0.2},
                                  {"input": "size", "strategy": "threshold", "threshold": 50,
                                   "operation": "smaller"}], n_partitions=4),
    "softrank of bald": dict(n_samples=30, strategies=[{"input": "bald", "strategy": "softrank"}]),
    "power x weights with quotas": dict(
        n_samples=24, strategies=[{"input": "bald", "strategy": "power"}, {"input": "entropy", "strategy": "weights"},
                                  {"input": "predictions", "strategy": "balance"}], n_partitions=2),
    "badge, merged by k-means++": dict(n_samples=30, strategies=[{"input": "embeddings", "strategy": "badge"}],
                                       n_partitions=4),
    "badge with a filter, 1 partition": dict(n_samples=20, strategies=[{"input": "embeddings", "strategy": "badge"}],
                                             filters=[{"column": "size", "op": ">=", "value": 30}], n_partitions=1),
    "cluster_margin of entropy": dict(n_samples=40, strategies=[{"input": "entropy", "strategy": "cluster_margin",
                                                                 "n_clusters": 6, "max_clusters": 40,
                                                                 "sample_size": 500}], n_partitions=3),
    "cluster_margin, few candidates, a filter": dict(
        n_samples=15, strategies=[{"input": "bald", "strategy": "cluster_margin", "margin_candidates": 30}],
        filters=[{"column": "size", "op": "<", "value": 60}], n_partitions=2),
    "auto (typiclust cold, diversity x bald with labels)": dict(
        n_samples=40, strategies=[{"input": "embeddings", "strategy": "auto"}], n_partitions=3),
    "by weight, quotas, near duplicates": dict(
        n_samples=35, strategies=[BALD, {"input": "predictions", "strategy": "balance"}],
        near_duplicate_distance=1.0),
}


@pytest.fixture(scope="module")
def features() -> pa.Table:
    table = clustered_features()
    # similarity queries name an id of the table
    ids = table.column("id").to_pylist()
    ids[3] = "row-00003"
    return table.set_column(0, "id", pa.array(ids, pa.string()))


def _spark_ranking(spark, features: pa.Table, labeled: list[str], seed: int, **selection) -> pa.Table:
    excluded = pa.table({"id": labeled, "_excluded": ["labeled"] * len(labeled)}) if labeled else None
    with select_dataframe(spark.createDataFrame(features), selection_config(**selection), seed=seed,
                          excluded=excluded) as result:
        ranking = result.ranking.toArrow()
    return ranking.sort_by("rank")


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("labeled", [False, True], ids=["no labeled", "labeled centres"])
def test_python_api_and_spark_stage_agree_pick_for_pick(spark, features, name, labeled):
    seed = 3 if labeled else 0
    labeled_ids = features.column("id").to_pylist()[100:130] if labeled else []
    ours = alray.select(features, labeled=labeled_ids or None, seed=seed, **CONFIGS[name])
    theirs = _spark_ranking(spark, features, labeled_ids, seed, **CONFIGS[name])
    picks = ours[ours.selected].id.tolist()
    assert picks, "the config must select something"
    assert picks == [i for i, s in zip(theirs.column("id").to_pylist(), theirs.column("selected").to_pylist(),
                                       strict=True) if s]
    assert ours.id.tolist() == theirs.column("id").to_pylist()
    np.testing.assert_allclose(ours.score.to_numpy(), theirs.column("score").to_numpy(), rtol=1e-12)
    diversity = theirs.column("diversity").to_numpy(zero_copy_only=False)
    np.testing.assert_allclose(ours.diversity.to_numpy(dtype=float), diversity.astype(float), rtol=1e-12)
    assert set(ours.id).isdisjoint(labeled_ids)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_score_never_increases_with_rank(features, name):
    ranking = alray.select(features, **CONFIGS[name])
    scores = ranking.score.to_numpy()
    assert (np.diff(scores) <= 0).all(), f"rank {int(np.argmax(np.diff(scores) > 0)) + 2} scores above its elder"
    assert ranking["rank"].tolist() == list(range(1, len(ranking) + 1))
    n_selected = int(ranking.selected.sum())
    assert ranking.selected.tolist() == [True] * n_selected + [False] * (len(ranking) - n_selected)


def test_the_first_pick_scores_its_reach_not_its_weight(features):
    ranking = alray.select(features, n_samples=10, strategies=["diversity", "weights:bald"])
    first, second = ranking.iloc[0], ranking.iloc[1]
    embeddings = np.stack(features.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    ids = features.column("id").to_pylist()
    reach = np.linalg.norm(embeddings - embeddings[ids.index(first.id)], axis=1).max()
    assert first.diversity == pytest.approx(reach, rel=1e-5)
    assert first.score == pytest.approx(first.diversity * first.weight, rel=1e-9)  # strength 1: greedy weight
    assert first.score >= second.score > 0


EDGES = {
    "every candidate labeled": (dict(n_samples=5, strategies=[DIVERSITY, BALD]), "all"),
    "more partitions than candidates": (dict(n_samples=4, strategies=[DIVERSITY, BALD], n_partitions=16), 10),
    "near duplicates block every pick but labeled": (
        dict(n_samples=5, strategies=[DIVERSITY], near_duplicate_distance=1e6), "some"),
    "NaN in the weights column": (dict(n_samples=8, strategies=[DIVERSITY, {"input": "nan_score",
                                                                          "strategy": "weights"}]), None),
    "balance over a float column": (
        dict(n_samples=12, strategies=[DIVERSITY, {"input": "pred_float", "strategy": "balance",
                                                  "target": {"1.0": 0.5, "2.0": 0.5}}]), None),
}


@pytest.mark.parametrize("name", list(EDGES))
def test_edge_cases_agree_and_do_not_crash(spark, features, name):
    config, case = EDGES[name]
    table = features.slice(0, 10) if isinstance(case, int) else features
    nan = np.linspace(0, 1, table.num_rows)
    nan[::5] = np.nan
    table = table.append_column("nan_score", pa.array(nan, pa.float64())).append_column(
        "pred_float", pa.array(table.column("pred").to_numpy().astype(np.float64)))
    ids = table.column("id").to_pylist()
    labeled = ids if case == "all" else ids[:20] if case == "some" else []
    ours = alray.select(table, labeled=labeled or None, **config)
    theirs = _spark_ranking(spark, table, labeled, 0, **config)
    assert ours.id.tolist() == theirs.column("id").to_pylist()
    assert ours.selected.tolist() == theirs.column("selected").to_pylist()
    if case == "all":
        assert len(ours) == 0
    elif case == "some":
        assert not ours.selected.any()
    else:
        assert ours.selected.sum() == config["n_samples"] or isinstance(case, int)
    if name == "balance over a float column":
        picked = table.filter(pa.array(np.isin(ids, ours[ours.selected].id))).column("pred_float").to_numpy()
        assert sorted(np.unique(picked, return_counts=True)[1].tolist()) == [6, 6]


def test_ids_must_be_strings(spark):
    table = pa.table({"id": [1, 2, 3], "embedding": [[0.0], [1.0], [2.0]]})
    with pytest.raises(alray.errors.InputError, match="expected a string column 'id'"):
        alray.select(table, n_samples=1)
    with pytest.raises(alray.errors.InputError, match="expected a string column 'id'"):
        _spark_ranking(spark, table, [], 0, n_samples=1)


# --------------------------------------------------------------------------- two_stage_k_center on arrays


def test_two_stage_radius_close_to_single_machine():
    X = clustered(5000, 16, 20, seed=22)
    _, single_dist = k_center_greedy(X, 50, seed=0)
    indices, min_distances = two_stage_k_center(X, 50, 8, seed=0)
    assert indices.size == 50 and np.unique(indices).size == 50
    assert min_distances.shape == (5000,) and np.all(min_distances[indices] == 0)
    np.testing.assert_allclose(min_distances, nearest_centre_distances(X, X[indices]), atol=1e-5)
    assert min_distances.max() / single_dist.max() <= 1.25


def test_two_stage_with_one_partition_equals_single_machine():
    X = np.random.default_rng(23).normal(size=(300, 4))
    local_all = 300 / 20 + 1  # oversample with local_k >= N
    assert local_k(20, 1, local_all, 300) == 300
    indices, min_distances = two_stage_k_center(X, 20, 1, oversample=local_all, seed=5)
    # the stage starts from the heaviest row, the first in id order without weights
    expected, expected_dist = k_center_greedy(X, 20, first=0)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(min_distances, expected_dist, atol=1e-5)

    weights = np.random.default_rng(24).uniform(size=300)
    indices, _ = two_stage_k_center(X, 20, 1, oversample=local_all, weights=weights)
    expected, _ = k_center_greedy(X, 20, weights, first=int(np.argmax(weights)))
    np.testing.assert_array_equal(indices, expected)


def test_two_stage_weights_and_already_selected():
    rng = np.random.default_rng(25)
    X = clustered(2000, 8, 10, seed=25)
    existing = rng.normal(scale=3.0, size=(20, 8))
    weights = rng.uniform(size=2000)
    indices, min_distances = two_stage_k_center(
        X, 30, 4, weights=weights, already_selected=existing, seed=1
    )
    assert indices.size == 30 and np.unique(indices).size == 30
    centres = np.concatenate([existing, X[indices]])
    np.testing.assert_allclose(min_distances, _pairwise(X, centres).min(axis=1), atol=1e-4)
    again, _ = two_stage_k_center(X, 30, 4, weights=weights, already_selected=existing, seed=1)
    np.testing.assert_array_equal(indices, again)


def test_two_stage_more_partitions_than_rows_and_k_zero():
    X = np.random.default_rng(26).normal(size=(10, 2))
    indices, _ = two_stage_k_center(X, 5, 64)
    assert indices.size == 5 and np.unique(indices).size == 5
    indices, min_distances = two_stage_k_center(X, 0, 3)
    assert indices.size == 0 and np.all(np.isinf(min_distances))
