"""badge: k-means++ on gradient embeddings, without forming them, in two rounds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

import alray
from alray.strategies import badge
from alray.strategies.badge import gradient_embeddings, kmeanspp_gradients, local_round, merge


def _explicit_kmeanspp(g: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """k-means++ seeding written on the explicit vectors, as the paper states it."""
    picks = [int(np.argmax((g * g).sum(1)))]
    while len(picks) < k:
        d2 = ((g[:, None, :] - g[picks][None, :, :]) ** 2).sum(-1).min(1)
        cumulative = np.cumsum(d2)
        picks.append(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")))
    return picks


def _pool(n_per_class=40, classes=4, dim=5, seed=0):
    """Blobs, one per class; half of each blob confident (probs near one-hot), half uncertain."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=8.0, size=(classes, dim))
    label = np.repeat(np.arange(classes), n_per_class)
    h = centres[label] + rng.normal(size=(len(label), dim))
    uncertain = np.tile(np.arange(n_per_class) % 2 == 1, classes)
    logits = np.where(uncertain[:, None], 0.3, 8.0) * np.eye(classes)[label] + rng.normal(scale=0.1,
                                                                                        size=(len(label), classes))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return p, h.astype(np.float32), label, uncertain


def test_implicit_distances_draw_what_explicit_vectors_draw():
    p, h, _, _ = _pool(n_per_class=15)
    ours = kmeanspp_gradients(p, h, 12, rng=np.random.default_rng(5))
    theirs = _explicit_kmeanspp(gradient_embeddings(p, h), 12, np.random.default_rng(5))
    assert ours.tolist() == theirs


def test_picks_span_the_classes_and_favour_large_gradients():
    p, h, label, uncertain = _pool()
    g = gradient_embeddings(p, h)
    rows = kmeanspp_gradients(p, h, 8, rng=np.random.default_rng(0))
    assert rows[0] == np.argmax((g * g).sum(1))  # the largest gradient norm first
    assert set(label[rows]) == {0, 1, 2, 3}  # across classes
    assert uncertain[rows].mean() >= 0.75  # and the magnitudes: uncertain samples dominate


def test_no_duplicate_picks_when_the_gradients_run_out():
    p = np.tile(np.eye(3)[[0]], (6, 1))  # every prediction one-hot: all gradients zero
    rows = kmeanspp_gradients(p, np.ones((6, 2)), 6, rng=np.random.default_rng(0))
    assert sorted(rows.tolist()) == list(range(6))


def _table(p, h, prefix="s"):
    return pa.table({"id": [f"{prefix}{i:04d}" for i in range(len(p))],
                     "embedding": pa.array(list(h.astype(np.float32)), pa.list_(pa.float32())),
                     "probs": pa.array(list(p.astype(np.float32)), pa.list_(pa.float32()))})


def test_the_merge_interleaves_partitions_when_the_union_is_too_large_to_reseed(monkeypatch):
    p, h, _, _ = _pool()
    a = local_round(_table(p[:80], h[:80], "a"), 10, 2, 1.0, seed=0)  # 5 local picks
    b = local_round(_table(p[80:], h[80:], "b"), 10, 2, 1.0, seed=0)
    union = pa.concat_tables([a, b])
    monkeypatch.setattr(badge, "MERGE_MAX_UNION", 5)
    picked, how = merge(union, 6, seed=0)
    assert how == "interleaved"
    ids = picked.column("id").to_pylist()
    # first picks of both partitions, then second picks, ...
    assert ids == [a.column("id")[0].as_py(), b.column("id")[0].as_py(), a.column("id")[1].as_py(),
                   b.column("id")[1].as_py(), a.column("id")[2].as_py(), b.column("id")[2].as_py()]


def test_the_api_selects_with_badge_and_reports_the_merge():
    p, h, label, _uncertain = _pool()
    frame = pd.DataFrame({"id": [f"s{i:04d}" for i in range(len(p))], "embedding": list(h), "probs": list(p)})
    ranking = alray.select(frame, n_samples=8, strategies=[{"input": "embeddings", "strategy": "badge"}],
                           n_partitions=2)
    picks = ranking[ranking.selected].id.str[1:].astype(int).to_numpy()
    assert len(picks) == 8 and set(label[picks]) == {0, 1, 2, 3}
    assert ranking.attrs["summary"]["details"]["merged_by_kmeanspp"] == 1.0


def test_badge_without_probs_is_a_one_line_error():
    import pytest

    frame = pd.DataFrame({"id": ["a", "b"], "embedding": [np.ones(2), np.zeros(2)]})
    with pytest.raises(alray.errors.ConfigError, match="probs"):
        alray.select(frame, n_samples=1, strategies=[{"input": "embeddings", "strategy": "badge"}])


def test_a_large_partition_is_seeded_in_blocks_that_share_its_picks(monkeypatch):
    p, h, _, _ = _pool(n_per_class=50)  # 200 rows
    monkeypatch.setattr(badge, "BLOCK_ROWS", 60)  # 4 blocks
    picked = local_round(_table(p, h), 40, 1, 1.0, seed=3)
    order, share = picked.column("_badge_order").to_numpy(), picked.column("_badge_share").to_numpy()
    assert (order == 0).sum() == 4  # every block starts its own seeding
    assert 40 <= len(picked) <= 44 and len(set(picked.column("id").to_pylist())) == len(picked)
    assert set(share) <= {9, 10, 11, 12, 13}  # each block's share of the 40, by its size


def test_duplicates_of_picks_wait_until_every_distinct_row_is_picked():
    p, h, _, _ = _pool(n_per_class=10)
    p, h = np.vstack([p, p]), np.vstack([h, h])  # every row twice
    rows = kmeanspp_gradients(p, h, 50, rng=np.random.default_rng(1))
    assert len(set((rows[:40] % 40).tolist())) == 40  # the 40 distinct rows first
