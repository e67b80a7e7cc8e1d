"""Spark's hash partitioning reproduced without Spark: ``alray.selection.partitions`` against Spark itself."""

from __future__ import annotations

import numpy as np
import pytest

from alray.selection.partitions import partition_of, spark_partition_of, spark_xxhash64

SEEDS = [0, 1, 7, -3, 2**31 - 1]
N_PARTITIONS = [1, 2, 3, 4, 7, 16]


def varied_ids(n: int = 5000, seed: int = 0) -> list[str]:
    """``n`` distinct ids: ASCII, digits, unicode of 2-4 UTF-8 bytes, the empty string, every length to 100."""
    rng = np.random.default_rng(seed)
    ascii_chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./: "
    alphabet = list(ascii_chars) + list("éßøЖж中文字🙂🚀\u00a0")
    ids: dict[str, None] = dict.fromkeys(["", "0", "a", "id", " ", "é", "中", "🙂", "x" * 32, "y" * 33, "z" * 64])
    ids.update(dict.fromkeys(str(i) for i in range(500)))
    ids.update(dict.fromkeys(f"item-{i:07d}" for i in range(500)))
    while len(ids) < n:
        length = int(rng.integers(0, 101))
        ids["".join(rng.choice(alphabet, size=length))] = None
    return list(ids)


@pytest.fixture(scope="module")
def ids() -> list[str]:
    return varied_ids()


def test_xxhash64_equals_spark(spark, ids):
    from pyspark.sql import functions as F

    seeds = [*SEEDS, -(2**31), 2**31, -(2**40), 2**63 - 1]  # the last three are LongType literals
    frame = spark.createDataFrame([(i,) for i in [*ids, None]], "id string")
    table = frame.select("id", *[F.xxhash64(F.col("id"), F.lit(s)).alias(f"h{k}") for k, s in enumerate(seeds)])
    rows = table.toArrow()
    spark_ids = rows.column("id").to_pylist()
    for k, seed in enumerate(seeds):
        expected = rows.column(f"h{k}").to_numpy()
        np.testing.assert_array_equal(spark_xxhash64(spark_ids, seed), expected, err_msg=f"seed={seed}")


def test_partition_of_equals_spark_partition_id(spark, ids):
    from pyspark.sql import functions as F

    frame = spark.createDataFrame([(i,) for i in ids], "id string").cache()
    for seed in SEEDS:
        for n in N_PARTITIONS:
            rows = (frame.repartition(n, F.xxhash64(F.col("id"), F.lit(seed)))
                    .select("id", F.spark_partition_id().alias("part")).toArrow())
            assert rows.num_rows == len(ids)
            spark_ids = rows.column("id").to_pylist()
            expected = rows.column("part").to_numpy().astype(np.int64)
            got = partition_of(spark_ids, n, seed)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, expected, err_msg=f"seed={seed} n={n}")
    frame.unpersist()


def test_partitions_are_in_range_deterministic_and_seeded():
    ids = varied_ids(2000, seed=1)
    for n in N_PARTITIONS:
        parts = partition_of(ids, n, 7)
        assert parts.shape == (len(ids),) and parts.dtype == np.int64
        assert parts.min() >= 0 and parts.max() < n
        np.testing.assert_array_equal(parts, partition_of(list(ids), n, 7))
        if n > 1:
            assert len(np.unique(parts)) == n
            assert (parts != partition_of(ids, n, 8)).mean() > 0.3
    hashes = spark_xxhash64(ids, 0)
    assert hashes.shape == (len(ids),) and hashes.dtype == np.int64
    assert len(np.unique(hashes)) == len(ids)
    np.testing.assert_array_equal(spark_partition_of(hashes, 5), partition_of(ids, 5, 0))
    assert partition_of([], 3, 0).shape == (0,)


def test_invalid_arguments_are_named():
    for bad in [0, -1, 2.0, "3", True]:
        with pytest.raises(ValueError, match="n_partitions"):
            partition_of(["a"], bad, 0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="n_partitions"):
            spark_partition_of(np.zeros(1, np.int64), bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed"):
        spark_xxhash64(["a"], 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        spark_xxhash64(["a"], 2**63)
    with pytest.raises(TypeError, match=r"ids\[1\]"):
        spark_xxhash64(["a", b"b"], 0)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="hash_values"):
        spark_partition_of(np.zeros((2, 2), np.int64), 3)
