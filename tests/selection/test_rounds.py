"""The rounds' helpers: each pick's distance to the centres before it."""

from __future__ import annotations

import numpy as np

from alray.selection.rounds import pick_distances


def _naive(picked: np.ndarray, labeled: np.ndarray | None) -> np.ndarray:
    x = picked.astype(np.float64)
    out = np.full(len(x), np.nan)
    for j in range(len(x)):
        centres = [c for c in (labeled, x[:j]) if c is not None and len(c)]
        if centres:
            out[j] = np.sqrt(((np.vstack(centres) - x[j]) ** 2).sum(1)).min()
    return out


def test_pick_distances_across_blocks_equal_the_direct_computation():
    rng = np.random.default_rng(0)
    picked = rng.normal(size=(2500, 8)).astype(np.float32)  # three blocks of 1,024
    picked[1500] = picked[200]  # a duplicate of a pick two blocks earlier: distance 0
    labeled = rng.normal(size=(30, 8)).astype(np.float32)
    for centres in (None, labeled):
        ours, theirs = pick_distances(picked, centres), _naive(picked, centres)
        assert np.isnan(ours[0]) == (centres is None) and np.isnan(ours[1:]).sum() == 0
        np.testing.assert_allclose(ours[~np.isnan(theirs)], theirs[~np.isnan(theirs)], rtol=1e-5, atol=1e-5)
        assert ours[1500] == 0.0
