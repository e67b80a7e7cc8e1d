"""Selection objectives, balance quotas and the single-machine selection."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import alray
from alray.coreset import k_center_greedy, nearest_centre_distances
from alray.selection.greedy import select_by_weight
from alray.strategies import (
    OBJECTIVE_FLOOR,
    balance_quotas,
    cluster_typicality,
    combine,
    knn_typicality,
    local_quotas,
    minmax_objective,
    similarity_objective,
)


def test_minmax_objective_is_scale_and_offset_free():
    values = np.array([1.0, 2.0, 3.0, np.nan])
    objective = minmax_objective(values, 1.0, 3.0)
    np.testing.assert_allclose(objective, np.array([0.0, 0.5, 1.0, 0.0]) + OBJECTIVE_FLOOR)
    np.testing.assert_allclose(minmax_objective(values * 10 + 5, 15.0, 35.0), objective)
    np.testing.assert_allclose(minmax_objective(values, 2.0, 2.0), 1.0 + OBJECTIVE_FLOOR)


def test_combine_is_a_product_of_powers():
    a, b = np.array([1.0, 2.0, 4.0]), np.array([3.0, 1.0, 0.5])
    np.testing.assert_allclose(combine([(a, 2.0), (b, 0.5)], 3), a**2 * np.sqrt(b))
    np.testing.assert_allclose(combine([], 2), [1.0, 1.0])
    # the argmax of a product does not depend on each objective's scale
    assert np.argmax(combine([(a, 1.0), (b, 1.0)], 3)) == np.argmax(combine([(a * 100, 1.0), (b / 7, 1.0)], 3))


def test_knn_typicality_prefers_dense_regions():
    rng = np.random.default_rng(0)
    dense = rng.normal(0, 0.1, size=(200, 2))
    outliers = rng.uniform(5, 10, size=(5, 2))
    X = np.vstack([dense, outliers])
    typicality = knn_typicality(X, X, n_neighbors=10, is_reference=np.ones(len(X), dtype=bool))
    assert typicality[:200].min() > typicality[200:].max()
    # a row of the reference does not count itself as its own neighbour
    single = knn_typicality(X[:1], X[:2], n_neighbors=1, is_reference=np.array([True]))
    assert single[0] == pytest.approx(1 / (np.linalg.norm(X[0] - X[1]) + 1e-6), rel=1e-4)


def test_cluster_typicality_and_similarity():
    values = cluster_typicality([0.0, 1.0, 1.0], [0.5, 0.5, 0.1], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(values, [0.5, 0.25, 0.05])
    X = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    sim = similarity_objective(X, np.array([[0.5, 0.0]]))
    assert sim[0] == pytest.approx(sim[1]) and sim[1] > sim[2]


def test_balance_quotas_targets():
    assert balance_quotas({"a": 100, "b": 100, "c": 100}, 10, "uniform") == {"a": 4, "b": 3, "c": 3}
    assert balance_quotas({"a": 60, "b": 30, "c": 10}, 10, "input") == {"a": 6, "b": 3, "c": 1}
    assert balance_quotas({"a": 50, "b": 50}, 10, {"a": 0.8, "b": 0.2}) == {"a": 8, "b": 2}
    # a class missing from the target gets nothing
    assert balance_quotas({"a": 50, "b": 50}, 4, {"a": 1.0}) == {"a": 4, "b": 0}
    # a class short of candidates gives its remainder to the others
    assert balance_quotas({"a": 2, "b": 100, "c": 100}, 12, "uniform") == {"a": 2, "b": 5, "c": 5}
    assert balance_quotas({"a": 2, "b": 3}, 10, "uniform") == {"a": 2, "b": 3}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=6), st.integers(0, 60), st.integers(0, 1000))
def test_balance_quotas_properties(counts, n_select, seed):
    available = {f"c{i}": n for i, n in enumerate(counts)}
    shares = np.random.default_rng(seed).random(len(counts)) + 0.01
    target = {f"c{i}": float(s) for i, s in enumerate(shares)}
    quotas = balance_quotas(available, n_select, target)
    assert all(0 <= quotas[c] <= available[c] for c in available)
    assert sum(quotas.values()) == min(n_select, sum(counts))
    if all(available[c] >= n_select for c in available):
        total = shares.sum()
        for i, c in enumerate(available):
            assert abs(quotas[c] - n_select * shares[i] / total) <= 1


def test_local_quotas_scale_down():
    np.testing.assert_array_equal(local_quotas([10, 5, 0], 4, 15), [3, 2, 0])


def test_select_by_weight_skips_near_duplicates_and_full_classes():
    X = np.array([[0.0], [0.01], [1.0], [2.0], [3.0]])
    weights = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    assert select_by_weight(X, weights, 3, min_distance=0.1) == [0, 2, 3]
    groups = np.array([0, 0, 0, 1, 1])
    assert select_by_weight(X, weights, 3, groups=groups, quotas=np.array([1, 2])) == [0, 3, 4]
    assert select_by_weight(X, weights, 2, min_distance=0.5, labeled=np.array([[1.1]])) == [0, 3]


def _table(X: np.ndarray, **columns: np.ndarray) -> pa.Table:
    return pa.table({"id": [f"{i:04d}" for i in range(len(X))],
                     "embedding": pa.array(list(X.astype(np.float32)), pa.list_(pa.float32())), **columns})


def _rows(ranking) -> np.ndarray:
    return ranking[ranking.selected].id.astype(int).to_numpy()


def test_one_partition_weighted_diversity_matches_the_greedy():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    score = rng.random(300)
    # one partition keeping every row as a local centre: the two rounds are one greedy
    chosen = alray.select(_table(X, score=score), n_samples=20, strategies=["diversity", "weights:score"],
                          n_partitions=1, oversample=300 / 20 + 1)
    weights = minmax_objective(score, score.min(), score.max())
    expected, _ = k_center_greedy(X, 20, weights=weights, first=int(np.argmax(weights)))
    np.testing.assert_array_equal(_rows(chosen), expected)


def test_top_m_and_quotas_and_min_distance():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 3)).astype(np.float32)
    weights = rng.random(400)
    groups = (X[:, 0] > 0).astype(np.int64)
    table = _table(X, w=weights, side=groups)
    top = _rows(alray.select(table, n_samples=10, strategies=["diversity", "weights:w"], mode="top_m", top_m=50))
    top50 = set(np.argsort(-weights)[:50].tolist())
    assert set(top.tolist()) <= top50 and len(top) == 10
    balanced = _rows(alray.select(table, n_samples=12, strategies=["diversity", "weights:w", "balance:side"]))
    assert np.bincount(groups[balanced], minlength=2).tolist() == [6, 6]
    spaced = _rows(alray.select(table, strategies=[{"input": "embeddings", "strategy": "diversity",
                                                    "min_distance": 1.5}]))
    picked = X[spaced]
    assert 1 < len(picked) < 400
    for j in range(1, len(picked)):
        assert nearest_centre_distances(picked[j : j + 1], picked[:j])[0] >= 1.5 - 1e-5
