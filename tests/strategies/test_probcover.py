"""probcover: greedy maximum coverage of delta-balls, delta from k-means purity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import alray
from alray.errors import ConfigError
from alray.strategies.probcover import ball_graph, covered_by, probcover, purity_delta
from tests.strategies.test_typiclust import _blobs


def test_purity_delta_is_the_quantile_of_the_distance_to_another_label():
    X = np.array([[0.0], [1.0], [3.0], [10.0], [10.5], [20.0]], dtype=np.float32)
    labels = np.array([0, 0, 0, 1, 1, 2])
    other = np.array([10.0, 9.0, 7.0, 7.0, 7.5, 9.5])  # each row's distance to the nearest other label
    assert purity_delta(X, labels, purity=0.5) == pytest.approx(np.quantile(other, 0.5))
    assert purity_delta(X, np.zeros(6)) == np.inf


def test_the_ball_graph_holds_every_row_closer_than_delta():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3)).astype(np.float32)
    offsets, columns = ball_graph(X, 0.6)
    distances = np.linalg.norm(X[:, None] - X[None], axis=2)
    for i in (0, 17, 299):
        assert set(columns[offsets[i]:offsets[i + 1]].tolist()) == set(np.flatnonzero(distances[i] < 0.6).tolist())
    with pytest.raises(ConfigError, match="lower the strategy's sample_size or delta"):
        ball_graph(X, 10.0, max_edges=1000)


def test_each_pick_covers_the_most_uncovered_rows():
    X = np.array([[0.0], [0.1], [0.2], [0.3], [5.0], [5.1], [9.0]], dtype=np.float32)
    rows, share = probcover(X, 2, delta=0.25)
    assert rows.tolist() == [1, 4] and share == pytest.approx(6 / 7)  # 1 covers 0-3, 4 covers 4 and 5
    rows, share = probcover(X, 1, delta=0.25, labeled=np.array([[0.25]], dtype=np.float32))
    assert rows.tolist() == [4] and share == pytest.approx(5 / 7)  # the labeled sample covers 0.1-0.3
    rows, share = probcover(X, 5, delta=0.25)
    assert rows.tolist()[:3] == [1, 4, 6] and share == 1.0  # all covered: the rest in order
    assert rows.tolist()[3:] == [0, 2]


def test_probcover_covers_more_of_the_pool_than_random_at_the_same_budget():
    X, _, _ = _blobs([200, 150, 100, 60, 40, 20], spread=2.0, seed=3)
    delta = 3.0
    rows, share = probcover(X, 12, delta=delta)
    assert share == pytest.approx(covered_by(X, X[rows], delta).mean())
    rng = np.random.default_rng(0)
    random = np.mean([covered_by(X, X[rng.choice(len(X), 12, replace=False)], delta).mean() for _ in range(20)])
    assert share > random + 0.1


def test_the_api_runs_probcover_and_reports_delta_and_coverage():
    X, _, _ = _blobs([80, 60, 40])
    ranking = alray.select(pd.DataFrame({"id": [f"s{i:03d}" for i in range(len(X))], "embedding": list(X)}),
                           n_samples=6, strategies=[{"input": "embeddings", "strategy": "probcover",
                                                     "n_clusters": 3}])
    details = ranking.attrs["summary"]["details"]
    assert ranking.selected.sum() == 6 and details["delta"] > 0 and 0 < details["coverage"] <= 1
    assert details["coverage"] == pytest.approx(details["sample_coverage"])  # the sample is the whole pool


def test_a_selector_refuses_to_be_combined_with_objectives():
    features = pd.DataFrame({"id": ["a", "b"], "embedding": [[0.0], [1.0]], "bald": [0.1, 0.2]})
    with pytest.raises(ConfigError, match=r"selection.strategies.0: probcover picks the batch itself"):
        alray.select(features, n_samples=1, strategies=[{"input": "embeddings", "strategy": "probcover"},
                                                        {"input": "bald", "strategy": "weights"}])
