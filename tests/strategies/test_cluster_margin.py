"""cluster_margin: the most uncertain candidates, round-robin over average-linkage clusters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import alray
from alray.strategies.cluster_margin import average_linkage, round_robin


def test_average_linkage_recovers_separated_groups_and_weighs_by_size():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    points = np.vstack([c + rng.normal(size=(7, 2)) for c in centres])
    labels = average_linkage(points, 3)
    assert [len(set(labels[i * 7:(i + 1) * 7])) for i in range(3)] == [1, 1, 1]
    assert len(set(labels)) == 3
    # average linkage by weight: b joins the heavy a (mean distance 1) before c (distance 1.5 to b alone)
    line = np.array([[0.0], [1.0], [2.5]])
    assert average_linkage(line, 2, weights=[100, 1, 1]).tolist() == [0, 0, 1]
    # a nearby heavy group pulls the average away: c's mean distance to {a, b} is what decides
    assert average_linkage(np.array([[0.0], [2.0], [3.5]]), 2, weights=[1, 1, 1]).tolist() == [0, 1, 1]


def test_round_robin_takes_one_per_cluster_per_pass_smallest_first():
    clusters = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    priority = np.array([3, 1, 2, 0, 5, 4, 8, 6, 7])
    rows = round_robin(clusters, priority, 7)
    # cluster 1 (2 rows) first, then 2 (3 rows), then 0 (4 rows); within a cluster by priority
    assert rows.tolist() == [5, 7, 3, 4, 8, 1, 6]
    passes = [clusters[rows[i:i + 3]] for i in range(0, 6, 3)]
    assert all(len(set(p)) == len(p) for p in passes)  # at most one per cluster per pass


def _pool(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=20.0, size=(5, 4))
    blob = np.repeat(np.arange(5), [200, 100, 60, 30, 10])
    x = centres[blob] + rng.normal(size=(len(blob), 4))
    margin = rng.random(len(blob))
    margin[blob == 0] += 0.5  # the big blob is the most uncertain: top-k would fill the batch from it
    return pd.DataFrame({"id": [f"s{i:04d}" for i in range(len(blob))], "embedding": list(x.astype(np.float32)),
                         "margin": margin}), blob, margin


def test_the_batch_comes_from_the_uncertain_candidates_spread_across_clusters():
    frame, blob, margin = _pool()
    ranking = alray.select(frame, n_samples=20, strategies=[
        {"input": "margin", "strategy": "cluster_margin", "n_clusters": 5, "max_clusters": 50,
         "margin_candidates": 150}])
    picks = ranking[ranking.selected].id.str[1:].astype(int).to_numpy()
    assert len(picks) == 20
    assert (margin[picks] >= np.sort(margin)[-150]).all()  # only margin candidates
    # top-20 by margin would all be blob 0; round-robin reaches every blob among the candidates
    top = np.argsort(-margin)[:150]
    assert (blob[np.argsort(-margin)[:20]] == 0).all()
    assert set(blob[picks]) == set(blob[top]) and len(set(blob[top])) >= 4
    assert ranking.attrs["summary"]["details"]["margin_candidates"] == 150


def test_cluster_margin_names_a_missing_column():
    frame, _, _ = _pool()
    with pytest.raises(alray.errors.ConfigError, match="nothere"):
        alray.select(frame, n_samples=3, strategies=[{"input": "nothere", "strategy": "cluster_margin"}])
