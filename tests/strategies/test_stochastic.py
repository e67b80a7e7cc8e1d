"""Stochastic batch acquisition: Gumbel-top-k draws follow power, softmax and softrank probabilities."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import chisquare

from alray.strategies.stochastic import competition_ranks, gumbel_noise, gumbel_top_k

IDS = [f"s{i}" for i in range(6)]
SCORES = np.array([0.05, 0.1, 0.2, 0.4, 0.8, 1.6])
N_DRAWS = 4000


def _probabilities(sampling: str, temperature: float) -> np.ndarray:
    beta = 1.0 / temperature
    if sampling == "power":
        weights = SCORES ** beta
    elif sampling == "softmax":
        weights = np.exp(beta * SCORES)
    else:
        weights = competition_ranks(SCORES, np.sort(SCORES)) ** -beta
    return weights / weights.sum()


def _pair_inclusion(p: np.ndarray) -> np.ndarray:
    """Probability (N,) that each item is among the first two of a sample without replacement."""
    inclusion = p.copy()
    for a, b in itertools.permutations(range(len(p)), 2):
        inclusion[b] += p[a] * p[b] / (1.0 - p[a])
    return inclusion


@pytest.mark.parametrize(("sampling", "temperature"), [("power", 1.0), ("power", 0.5), ("softmax", 0.5),
                                                       ("softrank", 1.0)])
def test_draws_follow_the_intended_distribution(sampling, temperature):
    p = _probabilities(sampling, temperature)
    first = np.zeros(len(IDS))
    pairs = np.zeros(len(IDS))
    for seed in range(N_DRAWS):
        rows = gumbel_top_k(IDS, SCORES, 2, sampling=sampling, temperature=temperature, seed=seed)
        first[rows[0]] += 1
        pairs[rows] += 1
    assert chisquare(first, p * N_DRAWS).pvalue > 0.001
    inclusion = _pair_inclusion(p)
    assert np.allclose(inclusion.sum(), 2.0)
    # each item's inclusion in the pair is a Bernoulli: within 4 standard errors of the exact value
    assert np.all(np.abs(pairs / N_DRAWS - inclusion) < 4 * np.sqrt(inclusion * (1 - inclusion) / N_DRAWS))


def test_a_wrong_distribution_is_rejected_by_the_same_check():
    # the check above can fail: power draws do not follow softmax probabilities
    first = np.zeros(len(IDS))
    for seed in range(N_DRAWS):
        first[gumbel_top_k(IDS, SCORES, 1, sampling="power", seed=seed)[0]] += 1
    assert chisquare(first, _probabilities("softmax", 1.0) * N_DRAWS).pvalue < 1e-6


def test_temperature_moves_from_top_k_to_uniform():
    rng = np.random.default_rng(0)
    ids = [f"r{i:04d}" for i in range(2000)]
    scores = rng.gamma(2.0, 0.1, size=2000)
    top = set(np.argsort(-scores)[:50].tolist())
    cold = gumbel_top_k(ids, scores, 50, sampling="softmax", temperature=1e-4, seed=1)
    assert set(cold.tolist()) == top
    hot = gumbel_top_k(ids, scores, 50, sampling="softmax", temperature=1e4, seed=1)
    assert len(top & set(hot.tolist())) < 10  # about 50 x 50 / 2000 = 1.25 expected by chance
    warm = gumbel_top_k(ids, scores, 50, sampling="power", temperature=1.0, seed=1)
    # favours high scores without taking only them: probability ~ score tilts the mean to E[s^2] / E[s]
    assert scores.mean() < scores[warm].mean() < scores[sorted(top)].mean()
    assert scores[warm].mean() == pytest.approx((scores ** 2).mean() / scores.mean(), rel=0.25)


def test_seeded_independent_of_order_and_nulls_last():
    scores = np.array([0.3, np.nan, 0.1, 0.9, np.nan])
    ids = ["a", "b", "c", "d", "e"]
    rows = gumbel_top_k(ids, scores, 5, sampling="power", seed=3)
    assert set(rows[:3].tolist()) == {0, 2, 3} and set(rows[3:].tolist()) == {1, 4}
    # nulls last, in the order of their noise (which is not their ids' order here)
    null_ids = [f"n{i}" for i in range(8)]
    null_rows = gumbel_top_k(["x", *null_ids], np.array([0.5] + [np.nan] * 8), 9, sampling="power", seed=3)
    by_noise = (np.argsort(-gumbel_noise(null_ids, 3), kind="stable") + 1).tolist()
    assert null_rows[0] == 0 and null_rows[1:].tolist() == by_noise != sorted(by_noise)
    assert (gumbel_top_k(ids, scores, 5, sampling="power", seed=3) == rows).all()
    reversed_rows = gumbel_top_k(ids[::-1], scores[::-1], 5, sampling="power", seed=3)
    assert [ids[::-1][r] for r in reversed_rows] == [ids[r] for r in rows]
    assert gumbel_noise(["d"], 3)[0] == gumbel_noise(ids, 3)[3]  # a row's noise is its id's and the seed's
    assert not np.array_equal(gumbel_noise(ids, 3), gumbel_noise(ids, 4))


def test_equal_scores_share_a_rank():
    values = np.array([0.5, 0.9, 0.5, 0.1])
    assert competition_ranks(values, np.sort(values)).tolist() == [2.0, 1.0, 2.0, 4.0]


def test_the_selection_takes_the_gumbel_top_k_and_ranks_the_rest_by_key():
    import alray
    from alray.errors import ConfigError
    from tests.selection.features import clustered_features

    features = clustered_features(n=300)
    ids = features.column("id").to_pylist()
    bald = features.column("bald").to_numpy()
    ranking = alray.select(features, n_samples=20, seed=5, strategies=[{"input": "bald", "strategy": "power",
                                                                         "temperature": 0.5}])
    expected = gumbel_top_k(ids, bald, 300, sampling="power", temperature=0.5, seed=5)
    assert ranking.id.tolist() == [ids[r] for r in expected]  # the whole ranking is one draw of every row
    assert ranking.selected.sum() == 20 and ranking.selected.iloc[:20].all()
    assert (np.diff(ranking.score.to_numpy()) <= 0).all()
    with pytest.raises(ConfigError, match=r"selection.strategies.0: power draws the batch at random"):
        alray.select(features, n_samples=5, strategies=[{"input": "bald", "strategy": "power"}, "diversity"])
