"""Tests of greedy k-center selection against brute-force float64 references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import pairwise_distances

from alray import coreset
from alray.coreset import (
    coverage_radius,
    k_center_greedy,
    local_k,
    nearest_centre_distances,
)


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = a[:, None, :].astype(np.float64) - b[None, :, :].astype(np.float64)
    return np.sqrt((diff**2).sum(axis=-1))


def brute_force_k_center(X, k, weights=None, already_selected=None, first=None, min_distance=None):
    """Naive greedy k-center on the full float64 distance matrix (the semantics to match)."""
    X = np.asarray(X, dtype=np.float64)
    dist = _pairwise(X, X)
    min_dist = np.full(len(X), np.inf)
    if already_selected is not None and len(already_selected):
        min_dist = _pairwise(X, np.asarray(already_selected)).min(axis=1)
    picks: list[int] = []
    if k > 0 and len(X) and (already_selected is None or not len(already_selected)):
        picks.append(first)
        min_dist = np.minimum(min_dist, dist[first])
    while len(picks) < min(k, len(X)):
        score = min_dist.copy() if weights is None else weights * min_dist
        if min_distance is not None:
            score[min_dist < min_distance] = 0.0
        best = int(np.argmax(score))
        if score[best] <= 0:
            break
        picks.append(best)
        min_dist = np.minimum(min_dist, dist[best])
    return np.array(picks, dtype=np.int64), min_dist


def sklearn_per_step_k_center(X, k, first):
    """Greedy k-center updating min distances with sklearn's pairwise_distances each step."""
    X = np.asarray(X, dtype=np.float64)
    min_dist = pairwise_distances(X, X[[first]]).ravel()
    picks = [first]
    while len(picks) < k:
        best = int(np.argmax(min_dist))
        if min_dist[best] <= 0:
            break
        picks.append(best)
        min_dist = np.minimum(min_dist, pairwise_distances(X, X[[best]]).ravel())
    return np.array(picks), min_dist


def clustered(n_rows, n_features, n_clusters, *, seed, spread=0.3):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=3.0, size=(n_clusters, n_features))
    labels = rng.integers(n_clusters, size=n_rows)
    return means[labels] + rng.normal(scale=spread, size=(n_rows, n_features))


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    ("n_rows", "n_features", "k", "seed"),
    [(1, 3, 1, 0), (7, 1, 7, 1), (40, 2, 10, 2), (60, 8, 25, 3), (200, 5, 60, 4)],
)
def test_matches_brute_force(n_rows, n_features, k, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features)) + 5.0
    first = int(rng.integers(n_rows))
    indices, min_distances = k_center_greedy(X, k, first=first)
    expected, expected_dist = brute_force_k_center(X, k, first=first)
    np.testing.assert_array_equal(indices, expected)
    assert indices.dtype == np.int64
    assert min_distances.dtype == np.float32 and min_distances.shape == (n_rows,)
    np.testing.assert_allclose(min_distances, expected_dist, atol=1e-4)


def test_matches_sklearn_per_step_reference():
    X = np.random.default_rng(5).normal(size=(2000, 32))
    indices, min_distances = k_center_greedy(X, 40, first=17)
    expected, expected_dist = sklearn_per_step_k_center(X, 40, 17)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(min_distances, expected_dist, atol=1e-4)


def test_float32_and_int_inputs_are_accepted():
    X = np.random.default_rng(6).integers(-50, 50, size=(80, 4))
    indices, _ = k_center_greedy(X, 10, first=0)
    expected, _ = brute_force_k_center(X.astype(np.float64), 10, first=0)
    np.testing.assert_array_equal(indices, expected)
    indices32, _ = k_center_greedy(X.astype(np.float32), 10, first=0)
    np.testing.assert_array_equal(indices32, expected)


# --------------------------------------------------------------------------- weights


def test_weighted_matches_brute_force():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(150, 6))
    weights = rng.uniform(0.0, 3.0, size=150)
    indices, min_distances = k_center_greedy(X, 40, weights, first=3)
    expected, expected_dist = brute_force_k_center(X, 40, weights=weights, first=3)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(min_distances, expected_dist, atol=1e-4)


def test_zero_weight_rows_are_never_picked():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(100, 4))
    weights = np.where(np.arange(100) % 2 == 0, 1.0, 0.0)
    # Odd rows have zero weight: once every even row is a centre the best score is 0 and
    # selection stops, however large k is.
    indices, min_distances = k_center_greedy(X, 100, weights, first=0)
    assert sorted(indices.tolist()) == list(range(0, 100, 2))
    assert np.all(min_distances[indices] == 0)


def test_all_zero_weights_stop_after_first_pick():
    X = np.random.default_rng(9).normal(size=(30, 3))
    indices, _ = k_center_greedy(X, 10, np.zeros(30), first=4)
    np.testing.assert_array_equal(indices, [4])


def test_huge_and_tiny_weights_do_not_overflow():
    rng = np.random.default_rng(10)
    X = rng.normal(size=(60, 3))
    weights = rng.uniform(0.5, 1.0, size=60)
    expected, _ = k_center_greedy(X, 20, weights, first=1)
    for scale in (1e-30, 1e30):
        indices, _ = k_center_greedy(X, 20, weights * scale, first=1)
        np.testing.assert_array_equal(indices, expected)


# --------------------------------------------------------------------------- already_selected


def test_already_selected_is_covered_and_counted():
    rng = np.random.default_rng(11)
    existing = np.array([[4.0, 4.0], [-4.0, 4.0]])
    near_existing = existing[rng.integers(2, size=100)] + rng.normal(scale=0.3, size=(100, 2))
    elsewhere = rng.normal(size=(100, 2))
    X = np.concatenate([near_existing, elsewhere])
    indices, min_distances = k_center_greedy(X, 5, already_selected=existing)
    assert np.all(indices >= 100), "rows next to an existing centre must not be picked first"
    expected, expected_dist = brute_force_k_center(X, 5, already_selected=existing)
    np.testing.assert_array_equal(indices, expected)
    # The float32 norm trick's absolute error is about eps * |x|^2 / distance, which exceeds
    # 1e-4 for the rows a few tenths away from a centre at distance ~5.7 from the mean.
    np.testing.assert_allclose(min_distances, expected_dist, atol=1e-3)


def test_already_selected_alone_gives_distances_to_it():
    rng = np.random.default_rng(12)
    X = rng.normal(size=(50, 3))
    existing = rng.normal(size=(4, 3))
    indices, min_distances = k_center_greedy(X, 0, already_selected=existing)
    assert indices.size == 0
    np.testing.assert_allclose(min_distances, _pairwise(X, existing).min(axis=1), atol=1e-4)


def test_already_selected_in_blocks(monkeypatch):
    rng = np.random.default_rng(13)
    X = rng.normal(size=(300, 5))
    existing = rng.normal(size=(70, 5))
    whole = k_center_greedy(X, 20, already_selected=existing)
    # Tiny blocks exercise the chunking over both rows and existing centres.
    monkeypatch.setattr(coreset, "_BLOCK_ELEMENTS", 64)
    blocked = k_center_greedy(X, 20, already_selected=existing, chunk_rows=16)
    np.testing.assert_array_equal(blocked[0], whole[0])
    np.testing.assert_allclose(blocked[1], whole[1], atol=1e-5)


def test_empty_already_selected_is_none():
    X = np.random.default_rng(14).normal(size=(40, 2))
    with_empty = k_center_greedy(X, 5, already_selected=np.empty((0, 2)), seed=3)
    without = k_center_greedy(X, 5, seed=3)
    np.testing.assert_array_equal(with_empty[0], without[0])


# --------------------------------------------------------------------------- first / seed


def test_first_is_honoured():
    X = np.random.default_rng(15).normal(size=(50, 3))
    for first in (0, 13, 49):
        assert k_center_greedy(X, 3, first=first)[0][0] == first


def test_seeded_first_pick_is_reproducible():
    X = np.random.default_rng(16).normal(size=(500, 3))
    a = k_center_greedy(X, 10, seed=42)[0]
    np.testing.assert_array_equal(a, k_center_greedy(X, 10, seed=42)[0])
    firsts = {int(k_center_greedy(X, 1, seed=s)[0][0]) for s in range(10)}
    assert len(firsts) > 1


# --------------------------------------------------------------------------- min_distance


def test_min_distance_keeps_picks_apart():
    rng = np.random.default_rng(17)
    base = rng.normal(size=(150, 4))
    near = base[:50] + rng.normal(scale=0.01, size=(50, 4))
    X = np.concatenate([base, near, base[:30]])  # near-duplicates and exact duplicates
    existing = rng.normal(size=(5, 4))
    min_distance = 0.8
    indices, min_distances = k_center_greedy(
        X, len(X), already_selected=existing, min_distance=min_distance
    )
    assert 0 < indices.size < len(X)
    picked = X[indices]
    gaps = _pairwise(picked, picked) + np.eye(len(picked)) * 1e9
    assert gaps.min() >= min_distance
    assert _pairwise(picked, existing).min() >= min_distance
    # It stopped because every remaining row is within min_distance of a centre.
    assert min_distances.max() < min_distance
    expected, _ = brute_force_k_center(
        X, len(X), already_selected=existing, min_distance=min_distance
    )
    np.testing.assert_array_equal(indices, expected)


def test_min_distance_with_weights_skips_covered_rows():
    rng = np.random.default_rng(18)
    X = rng.normal(size=(120, 3))
    weights = rng.uniform(size=120)
    indices, _ = k_center_greedy(X, 120, weights, first=0, min_distance=0.5)
    expected, _ = brute_force_k_center(X, 120, weights=weights, first=0, min_distance=0.5)
    np.testing.assert_array_equal(indices, expected)
    picked = X[indices]
    assert (_pairwise(picked, picked) + np.eye(len(picked)) * 1e9).min() >= 0.5


def test_exact_duplicates_are_never_both_picked():
    rng = np.random.default_rng(19)
    unique = rng.normal(size=(40, 3)) * 1000.0 + 5000.0  # large offset: float32 cancellation
    X = np.concatenate([unique, unique, unique[:10]])
    indices, min_distances = k_center_greedy(X, len(X), first=0)
    assert indices.size == 40
    assert len({tuple(row) for row in X[indices]}) == 40
    assert np.all(min_distances == 0)


# --------------------------------------------------------------------------- edge cases


def test_k_larger_than_n_is_clipped():
    X = np.random.default_rng(20).normal(size=(12, 2))
    indices, min_distances = k_center_greedy(X, 100, first=0)
    assert sorted(indices.tolist()) == list(range(12))
    assert np.all(min_distances == 0)


def test_k_zero_returns_empty():
    X = np.random.default_rng(21).normal(size=(12, 2))
    indices, min_distances = k_center_greedy(X, 0)
    assert indices.shape == (0,) and indices.dtype == np.int64
    assert np.all(np.isinf(min_distances)) and min_distances.shape == (12,)


def test_empty_x():
    indices, min_distances = k_center_greedy(np.empty((0, 3)), 5)
    assert indices.size == 0 and min_distances.shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"X": np.zeros(5)}, "X"),
        ({"X": np.zeros((5, 2, 1))}, "X"),
        ({"X": np.array([[0.0, np.nan]])}, "X"),
        ({"X": np.array([[0.0, np.inf]])}, "X"),
        ({"X": np.array([[1e39, 0.0], [-1e39, 0.0]])}, "X"),
        ({"X": np.array([[1e20, 0.0], [-1e20, 0.0]])}, "X"),
        ({"X": np.array([["a", "b"]])}, "X"),
        ({"k": -1}, "k"),
        ({"k": 2.5}, "k"),
        ({"weights": np.ones(4)}, "weights"),
        ({"weights": -np.ones(5)}, "weights"),
        ({"weights": np.array([1.0, 1.0, np.nan, 1.0, 1.0])}, "weights"),
        ({"already_selected": np.ones((2, 3))}, "already_selected"),
        ({"already_selected": np.ones(2)}, "already_selected"),
        ({"already_selected": np.array([[np.nan, 0.0]])}, "already_selected"),
        ({"first": 5}, "first"),
        ({"first": -1}, "first"),
        ({"first": 0, "already_selected": np.ones((1, 2))}, "first"),
        ({"min_distance": -1.0}, "min_distance"),
        ({"min_distance": float("nan")}, "min_distance"),
        ({"chunk_rows": 0}, "chunk_rows"),
    ],
)
def test_invalid_inputs_name_the_argument(kwargs, name):
    args = {"X": np.arange(10.0).reshape(5, 2), "k": 2, **kwargs}
    with pytest.raises(ValueError, match=rf"^{name}:"):
        k_center_greedy(**args)


# --------------------------------------------------------------------------- two-stage


def test_local_k():
    assert local_k(50, 4, 4.0, 1000) == 50
    assert local_k(50, 16, 4.0, 1000) == 50  # k per partition while the union stays small
    assert local_k(50, 16, 4.0, 1000, union_cap=0) == 13  # ceil(12.5): the oversampled share
    assert local_k(50, 16, 4.0, 1000, union_cap=320) == 20  # union capped at 320 rows
    assert local_k(100, 11, 1.1, 1000, union_cap=0) == 10  # not 11 from 10.000000000000002
    assert local_k(50, 4, 4.0, 7) == 7
    assert local_k(0, 4, 4.0, 7) == 0
    with pytest.raises(ValueError, match=r"^oversample:"):
        local_k(5, 2, 0.0, 10)
    with pytest.raises(ValueError, match=r"^n_partitions:"):
        local_k(5, 0, 1.0, 10)


# --------------------------------------------------------------------------- coverage


def test_coverage_radius_matches_brute_force(monkeypatch):
    rng = np.random.default_rng(27)
    X = rng.normal(size=(500, 6)) + 100.0
    centres = rng.normal(size=(37, 6)) + 100.0
    expected = _pairwise(X, centres).min(axis=1)
    assert coverage_radius(X, centres) == pytest.approx(expected.max(), abs=1e-4)
    monkeypatch.setattr(coreset, "_BLOCK_ELEMENTS", 50)
    np.testing.assert_allclose(
        nearest_centre_distances(X, centres, chunk_rows=7), expected, atol=1e-4
    )


def test_coverage_radius_edge_cases():
    X = np.ones((3, 2))
    assert coverage_radius(np.empty((0, 2)), X) == 0.0
    assert coverage_radius(X, np.empty((0, 2))) == np.inf
    assert coverage_radius(X, X[:1]) == 0.0
    with pytest.raises(ValueError, match=r"^centres:"):
        coverage_radius(X, np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"^X:"):
        coverage_radius(np.ones(3), X)


@settings(max_examples=60, deadline=None)
@given(
    X=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 40), st.integers(1, 5)),
        elements=st.floats(-10.0, 10.0, allow_nan=False),
    ),
    k=st.integers(1, 45),
    seed=st.integers(0, 2**16),
)
def test_coverage_radius_is_greedy_radius(X, k, seed):
    indices, min_distances = k_center_greedy(X, k, seed=seed)
    assert np.unique(indices).size == indices.size
    # Both sides use the float32 norm trick, through different BLAS calls and offsets, so
    # they agree to float32 noise relative to the size of the data.
    scale = float(np.linalg.norm(X - X.mean(axis=0), axis=1).max())
    assert coverage_radius(X, X[indices]) == pytest.approx(
        float(min_distances.max()), rel=1e-4, abs=1e-2 * scale + 1e-6
    )


def _whole_matrix_greedy(X, k, weights=None, already_selected=None, first=None, min_distance=None,
                         groups=None, quotas=None):
    """The greedy as one pass over all rows per step (how k_center_greedy ran before its block scan):
    the same float32 distance kernel and float64 scores, argmax over the whole score vector."""
    rows = np.asarray(X, dtype=np.float32)
    shift = coreset._mean_shift(rows)
    rows, row_sq = coreset._centred_float32("X", rows, shift, chunk_rows=1 << 16)
    min_sq = np.full(len(rows), np.inf, dtype=np.float32)
    if already_selected is not None:
        centres, centre_sq = coreset._centred_float32("c", np.asarray(already_selected), shift, chunk_rows=1 << 16)
        coreset._update_min_squared(min_sq, rows, row_sq, centres, centre_sq, chunk_rows=1 << 16)
    remaining = None if quotas is None else np.array(quotas, dtype=np.int64)
    allowed = 0.0 if min_distance is None else min_distance * min_distance
    picks = []

    def add(index):
        picks.append(index)
        if remaining is not None:
            remaining[groups[index]] -= 1
        new = coreset._squared_distances(rows, row_sq, rows[index:index + 1], row_sq[index:index + 1])
        np.minimum(min_sq, new[:, 0], out=min_sq)
        min_sq[index] = 0.0

    if already_selected is None:
        add(first)
    w_sq = None if weights is None else np.square(weights / weights.max())
    separate = w_sq is not None or groups is not None
    while len(picks) < min(k, len(rows)):
        score = (w_sq * min_sq if w_sq is not None else min_sq.astype(np.float64)) if separate else min_sq
        if separate and min_distance is not None:
            score = np.where(min_sq < allowed, 0.0, score)
        if groups is not None:
            score = np.where(remaining[groups] <= 0, 0.0, score)
        best = int(np.argmax(score))
        if score[best] <= 0 or min_sq[best] < allowed:
            break
        add(best)
    return np.asarray(picks), np.sqrt(min_sq)


@pytest.mark.parametrize("case", ["plain", "weights", "labeled", "groups", "min_distance", "ties"])
@pytest.mark.parametrize("threads", [1, None])
def test_block_scan_is_the_whole_matrix_greedy(case, threads):
    """The greedy's block-by-block update and search (rows past several blocks, odd row counts) gives
    the picks, in order, and the distances, to the bit, of one pass over the whole matrix per pick,
    whatever the BLAS threads of the process."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(7)
    n = 2 * coreset._STEP_ROWS + 1_234
    X = rng.normal(size=(n, 24)).astype(np.float32)
    kwargs: dict = {"first": 5}
    if case == "weights":
        kwargs["weights"] = rng.random(n)
    elif case == "labeled":
        kwargs = {"already_selected": rng.normal(size=(30, 24)).astype(np.float32), "weights": rng.random(n)}
    elif case == "groups":
        groups = rng.integers(0, 4, size=n)
        kwargs.update(groups=groups, quotas=[5, 1, 0, 9], weights=rng.random(n))
    elif case == "min_distance":
        kwargs.update(min_distance=8.5, weights=rng.random(n))
    elif case == "ties":  # repeated rows: equal scores in different blocks, the first must win
        X = np.tile(rng.normal(size=(50, 24)).astype(np.float32), (n // 50 + 1, 1))[:n]
    with threadpool_limits(1):  # the reference as Spark's single-threaded Python workers ran it
        expected = _whole_matrix_greedy(X, 40, **kwargs)
    with threadpool_limits(threads):  # and the new greedy with the machine's threads or one
        picks, distances = k_center_greedy(X, 40, **kwargs)
    np.testing.assert_array_equal(picks, expected[0])
    np.testing.assert_array_equal(distances, expected[1])
    if case == "min_distance":
        assert len(picks) < 40  # the minimum distance stopped it, inside the loop under test
