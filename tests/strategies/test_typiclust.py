"""typiclust: one typical sample per cluster, the largest uncovered clusters first."""

from __future__ import annotations

import numpy as np

import alray
from alray.strategies.typiclust import cluster_typicality, typiclust, typiclust_picks


def _blobs(sizes, *, seed=0, spread=1.0, dim=6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim)) * 20
    X = np.vstack([c + rng.normal(size=(n, dim)) * spread for c, n in zip(centres, sizes, strict=True)])
    return X.astype(np.float32), np.repeat(np.arange(len(sizes)), sizes), centres


def test_one_pick_per_separated_blob_the_largest_first_and_the_most_typical():
    X, blob, centres = _blobs([120, 90, 60, 40, 30])
    rows, _ = typiclust(X, 5, seed=0)
    assert blob[rows].tolist() == [0, 1, 2, 3, 4]  # one per blob, by size
    for r in rows:
        members = np.flatnonzero(blob == blob[r])
        typical = cluster_typicality(X[members], np.zeros(len(members), int), n_neighbors=20)
        assert r == members[np.argmax(typical)]  # the densest sample of its blob
        # and it lies near the blob's centre: closer than most of its blob
        distance = np.linalg.norm(X[members] - centres[blob[r]], axis=1)
        assert np.linalg.norm(X[r] - centres[blob[r]]) <= np.quantile(distance, 0.25)


def test_labeled_clusters_are_covered_and_picks_go_elsewhere():
    X, blob, _ = _blobs([100, 100, 100, 100])
    labeled = X[blob == 0][:3]
    rows, _ = typiclust(X, 3, labeled=labeled, seed=1)
    assert sorted(blob[rows].tolist()) == [1, 2, 3]


def test_a_budget_larger_than_the_clusters_picks_again_from_the_least_covered():
    clusters = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    typicality = np.array([1, 5, 3, 2, 4, 6, 9, 1, 2, 3, 4], dtype=float)
    rows = typiclust_picks(clusters, typicality, 4, sizes=np.array([6, 5]), covered=np.array([0, 0]))
    assert rows.tolist() == [5, 6, 1, 10]


def test_small_clusters_wait_while_larger_ones_have_samples():
    clusters = np.array([0, 0, 0, 0, 0, 1, 1])
    rows = typiclust_picks(clusters, np.arange(7, dtype=float), 3, sizes=np.array([5, 2]), covered=np.zeros(2))
    assert rows.tolist() == [4, 3, 2]


def test_typiclust_beats_random_on_digits_at_ten_labels():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    train, test = np.arange(0, 1400), np.arange(1400, len(y))
    rows, _ = typiclust(x[train].astype(np.float32), 10, seed=0)

    def accuracy(picks):
        if len(set(y[train][picks])) < 2:
            return 0.0
        model = LogisticRegression(max_iter=2000).fit(x[train][picks], y[train][picks])
        return model.score(x[test], y[test])

    rng = np.random.default_rng(0)
    random = np.mean([accuracy(rng.choice(len(train), 10, replace=False)) for _ in range(10)])
    assert accuracy(rows) > random + 0.05


def test_the_api_runs_typiclust_with_no_scores():
    X, blob, _ = _blobs([50, 40, 30])
    features = {"id": [f"s{i:03d}" for i in range(len(X))], "embedding": list(X)}
    import pandas as pd

    ranking = alray.select(pd.DataFrame(features), n_samples=3,
                           strategies=[{"input": "embeddings", "strategy": "typiclust"}])
    picks = ranking[ranking.selected].id.str[1:].astype(int).to_numpy()
    assert sorted(blob[picks].tolist()) == [0, 1, 2]
    assert ranking.attrs["summary"]["details"]["clusters"] == 3
