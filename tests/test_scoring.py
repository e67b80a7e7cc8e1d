"""Uncertainty scores against hand-computed values, edge cases and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from alray.scoring import (
    all_scores,
    all_scores_torch,
    bald,
    entropy,
    least_confidence,
    margin,
    mean_std,
    variation_ratio,
)


def test_hand_computed_probability_scores():
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    expected_entropy = [-(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)), math.log(2), 0.0]
    np.testing.assert_allclose(entropy(probs), expected_entropy, atol=1e-12)
    np.testing.assert_allclose(margin(probs), [1 - 0.5, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(least_confidence(probs), [0.3, 0.5, 0.0], atol=1e-12)


def test_hand_computed_mc_scores():
    # sample 0: two passes that disagree fully; sample 1: two identical passes
    mc = np.array([
        [[1.0, 0.0], [0.0, 1.0]],
        [[0.8, 0.2], [0.8, 0.2]],
    ])
    h = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    np.testing.assert_allclose(bald(mc), [math.log(2), 0.0], atol=1e-12)
    np.testing.assert_allclose(variation_ratio(mc), [0.5, 0.0])
    np.testing.assert_allclose(mean_std(mc), [0.5, 0.0], atol=1e-12)
    scores = all_scores(mc)
    np.testing.assert_allclose(scores["entropy"], [math.log(2), h], atol=1e-12)
    assert scores["pred"].tolist() == [0, 0]


def test_three_pass_variation_ratio():
    mc = np.eye(3)[[0, 0, 2]][None]  # votes 0, 0, 2
    np.testing.assert_allclose(variation_ratio(mc), [1 / 3])


@pytest.mark.parametrize("function", [entropy, margin, least_confidence])
def test_probability_scores_reject_bad_input(function):
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        function(np.ones(3) / 3)
    with pytest.raises(ValueError, match="finite"):
        function(np.array([[0.5, np.nan]]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        function(np.array([[1.5, -0.5]]))


@pytest.mark.parametrize("function", [variation_ratio, mean_std, bald])
def test_mc_scores_reject_bad_input(function):
    with pytest.raises(ValueError, match=r"shape \(N, T, C\)"):
        function(np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="finite"):
        function(np.full((1, 2, 2), np.inf))


def test_empty_batch_gives_empty_scores():
    assert entropy(np.zeros((0, 4))).shape == (0,)
    assert bald(np.zeros((0, 5, 4))).shape == (0,)


def _simplex(n_rows: int, n_classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.gamma(0.3, size=(n_rows, n_classes))
    return raw / raw.sum(axis=-1, keepdims=True)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.integers(2, 6), st.integers(0, 10_000))
def test_probability_scores_bounds_and_class_order(n_rows, n_classes, seed):
    probs = _simplex(n_rows, n_classes, seed)
    permuted = probs[:, np.random.default_rng(seed).permutation(n_classes)]
    for function, upper in ((entropy, math.log(n_classes)), (margin, 1.0),
                            (least_confidence, 1 - 1 / n_classes)):
        score = function(probs)
        assert np.all(score >= -1e-12) and np.all(score <= upper + 1e-9)
        np.testing.assert_allclose(score, function(permuted), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(2, 5), st.integers(0, 10_000))
def test_mc_scores_bounds_and_order(n_rows, n_passes, n_classes, seed):
    mc = _simplex(n_rows * n_passes, n_classes, seed).reshape(n_rows, n_passes, n_classes)
    order = np.random.default_rng(seed).permutation(n_classes)
    b = bald(mc)
    assert np.all(b >= 0) and np.all(b <= math.log(n_classes) + 1e-9)
    assert np.all(b <= entropy(mc.mean(axis=1)) + 1e-9)  # mutual information never exceeds total entropy
    np.testing.assert_allclose(b, bald(mc[:, :, order]), atol=1e-12)
    np.testing.assert_allclose(mean_std(mc), mean_std(mc[:, :, order]), atol=1e-12)
    v = variation_ratio(mc)
    assert np.all(v >= 0) and np.all(v <= 1 - 1 / n_passes + 1e-12)


@given(arrays(np.int64, st.integers(1, 6), elements=st.integers(0, 4)))
def test_one_hot_scores_zero(classes):
    onehot = np.eye(5)[classes]
    for function in (entropy, margin, least_confidence):
        np.testing.assert_allclose(function(onehot), 0.0, atol=1e-12)
    repeated = np.repeat(onehot[:, None, :], 4, axis=1)
    for function in (bald, variation_ratio, mean_std):
        np.testing.assert_allclose(function(repeated), 0.0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 6), st.integers(1, 6), st.integers(1, 6), st.integers(0, 10_000))
def test_torch_scores_equal_numpy_scores(n_rows, n_passes, n_classes, seed):
    mc = _simplex(n_rows * n_passes, n_classes, seed).reshape(n_rows, n_passes, n_classes)
    mc[: n_rows // 2, 0] = np.eye(n_classes)[0]  # exact zeros and ones
    expected = all_scores(mc)
    computed = all_scores_torch(torch.from_numpy(mc).float())
    assert computed.keys() == expected.keys()
    reference = all_scores(mc.astype(np.float32))  # the same float32 input, scored by numpy in float64
    for name, value in computed.items():
        np.testing.assert_allclose(value.numpy(), reference[name], atol=1e-12, err_msg=name)
        assert value.shape == expected[name].shape
    with pytest.raises(ValueError, match=r"shape \(N, T, C\)"):
        all_scores_torch(torch.ones(2, 3))
