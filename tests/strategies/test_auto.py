"""auto: the budget-aware default chooses by the labeled set per class and the batch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import alray
from alray.errors import ConfigError
from alray.strategies.auto import COLD_START_PER_CLASS, LARGE_BATCH_ROWS, LARGE_BATCH_SHARE, Budget, choose

SCORED = ["id", "embedding", "probs", "bald", "margin", "entropy"]


def _chosen(**budget):
    entries, reason = choose(Budget(**{"n_labeled": 100, "n_classes": 10, "n_candidates": 10_000,
                                       "n_select": 100, "columns": SCORED, **budget}))
    return [(e["strategy"], e["input"]) for e in entries], reason


def test_the_rule_in_order():
    assert _chosen(columns=["id", "embedding"])[0] == [("typiclust", "embeddings")]
    cold = int(COLD_START_PER_CLASS * 10) - 1
    assert _chosen(n_labeled=cold)[0] == [("typiclust", "embeddings")]
    assert "cold start" in _chosen(n_labeled=cold)[1]
    assert _chosen(n_labeled=cold + 1)[0] == [("weights", "margin")]  # small batches: the top of margin
    assert _chosen(n_labeled=None)[0] == [("weights", "margin")]  # no labeled set: the model is taken as informed
    assert _chosen(n_select=LARGE_BATCH_ROWS, n_candidates=10**7)[0] == [("cluster_margin", "margin")]
    share = int(LARGE_BATCH_SHARE * 10_000)
    assert _chosen(n_select=share)[0] == [("badge", "embeddings")]
    assert _chosen(n_select=share - 1)[0] == [("weights", "margin")]
    # without probs a large batch is uncertainty-weighted diversity; without margin the next score's top
    assert _chosen(n_select=share, columns=["id", "embedding", "bald"])[0] == [("diversity", "embeddings"),
                                                                                ("weights", "bald")]
    assert _chosen(columns=["id", "embedding", "probs", "entropy"])[0] == [("weights", "entropy")]


def _frame(n=400, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    logits = rng.normal(size=(n, classes))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return pd.DataFrame({"id": [f"s{i:04d}" for i in range(n)], "embedding": list(x), "probs": list(p),
                         "bald": rng.random(n), "margin": rng.random(n)})


@pytest.mark.parametrize(("labeled", "n_samples", "expected"), [
    (None, 10, "auto(weights:margin^1)"),  # no labeled set: the model's scores are taken as informed
    (2, 10, "auto(typiclust^1)"),  # 2 labeled samples for 4 classes: cold start
    (40, 10, "auto(weights:margin^1)"),
    (40, 60, "auto(badge^1)"),
])
def test_the_api_records_what_auto_chose_and_why(labeled, n_samples, expected):
    frame = _frame()
    ranking = alray.select(frame, n_samples=n_samples, labeled=None if labeled is None else list(frame.id[:labeled]),
                           strategies=[{"input": "embeddings", "strategy": "auto"}])
    summary = ranking.attrs["summary"]
    assert summary["strategy"] == expected
    assert summary["strategy_reason"]
    assert ranking.selected.sum() == n_samples


def test_auto_takes_filters_and_thresholds_but_not_other_strategies():
    frame = _frame()
    ranking = alray.select(frame, n_samples=5, strategies=[
        {"input": "embeddings", "strategy": "auto"},
        {"input": "bald", "strategy": "threshold", "threshold": 0.5, "operation": "bigger"}])
    assert (frame.set_index("id").loc[ranking[ranking.selected].id, "bald"] > 0.5).all()
    with pytest.raises(ConfigError, match="auto chooses the strategies itself"):
        alray.select(frame, n_samples=5, strategies=[{"input": "embeddings", "strategy": "auto"},
                                                     {"input": "bald", "strategy": "weights"}])
