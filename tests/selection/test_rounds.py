"""The rounds' helpers: a partition's class quotas, each pick's distance to the centres before it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from alray.selection.rounds import GreedySpec, local_centres, pick_distances


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


def test_a_small_partition_keeps_every_candidate_of_a_class_it_holds_alone():
    """A class whose few candidates all hash to one small partition: the partition's quota is its share of
    the partition's budget, not of its rows, so none of them is lost before the merge round."""
    rng = np.random.default_rng(0)
    table = pa.table({"id": [f"a-{i}" for i in range(6)],
                      "embedding": pa.array(list(rng.normal(size=(6, 4)).astype(np.float32)), pa.list_(pa.float32())),
                      "weight": np.ones(6), "_group": ["a"] * 6})
    # 10 picks over 4 partitions: a budget of 10 a partition, 8 of them class a's; the partition holds 6 rows
    spec = GreedySpec(n_select=10, oversample=2.0, seed=0, group_index={"a": 0, "b": 1}, quotas=np.array([8, 2]))
    kept = local_centres(table, 4, spec)
    assert sorted(kept.column("id").to_pylist()) == sorted(table.column("id").to_pylist())


def test_the_merge_round_gives_whole_rows_in_pick_order_whatever_the_order_of_the_union():
    """The Spark stage runs the merge in one task and reads the picks' ids, embeddings and weights
    from the rows it returns: they must be the union's own rows, in the greedy's order."""
    from alray.coreset import k_center_greedy
    from alray.selection.rounds import merge_round, merged_rows, sorted_by_id

    rng = np.random.default_rng(1)
    n = 400
    embeddings = rng.normal(size=(n, 5)).astype(np.float32)
    union = pa.table({"id": [f"u-{rng.integers(1 << 40):x}-{i}" for i in range(n)],
                      "embedding": pa.array(list(embeddings), pa.list_(pa.float32())),
                      "weight": rng.random(n) + 0.5})
    spec = GreedySpec(n_select=25, oversample=1.0, seed=3)
    picked = merged_rows(union, spec)
    shuffled = merged_rows(union.take(pa.array(rng.permutation(n))), spec)
    assert picked.equals(shuffled) and picked.num_rows == 25
    by_id = sorted_by_id(union)
    sorted_weights = by_id.column("weight").to_numpy()
    first = int(np.argmax(sorted_weights))  # no labeled rows: the heaviest row comes first
    expected, _ = k_center_greedy(np.stack(by_id.column("embedding").to_numpy(zero_copy_only=False)), 25,
                                  weights=sorted_weights, first=first, seed=3)
    assert picked.column("id").to_pylist() == by_id.column("id").take(pa.array(expected)).to_pylist()
    row_of = {r["id"]: r for r in union.to_pylist()}
    assert all(row_of[r["id"]] == r for r in picked.to_pylist())  # every column of the union's row
    ids, matrix = merge_round(union, spec)
    assert ids == picked.column("id").to_pylist()
    np.testing.assert_array_equal(matrix, np.stack(picked.column("embedding").to_numpy(zero_copy_only=False)))
    assert matrix.flags.writeable
    assert merged_rows(union, GreedySpec(n_select=0, oversample=1.0, seed=3)).num_rows == 0
