"""Spark's hash partitioning of candidate ids, reproduced in NumPy.

The Spark selection stage partitions candidates with
``df.repartition(n_partitions, F.xxhash64(F.col("id"), F.lit(seed)))`` and runs a NumPy function on
each partition. :func:`partition_of` returns, without Spark, the partition each id lands in there,
so a single-machine path can form exactly the same partitions.

How Spark computes it (checked against Spark 4 by ``tests/selection/test_partitions.py``):

* ``xxhash64(c1, c2)`` folds its columns in order starting from the seed 42: the running hash is
  the seed for the next column. A string column is hashed as XXH64 of its UTF-8 bytes; an integer
  literal (``lit`` of a Python int in the 32-bit range is an ``IntegerType``) as ``XXH64.hashInt``,
  which is standard XXH64 of its 4 little-endian bytes; a Python int outside that range is a
  ``LongType`` literal, hashed as standard XXH64 of its 8 little-endian bytes. A null value is
  skipped and leaves the running hash unchanged. The result is read as a signed 64-bit integer.
* ``repartition(n, expr)`` is ``HashPartitioning``: the partition is
  ``pmod(Murmur3Hash(expr, seed=42), n)``, where Murmur3 of a long is ``Murmur3_x86_32.hashLong``:
  the low then the high 32-bit word mixed as two blocks, then the finalisation with length 8.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
import xxhash

__all__ = ["partition_of", "spark_partition_of", "spark_xxhash64"]

# Spark's default seed of both Murmur3Hash and XxHash64.
SPARK_HASH_SEED = 42

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MASK32, _MASK64 = 2**32 - 1, 2**64 - 1

_P64_1 = np.uint64(0x9E3779B185EBCA87)
_P64_2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P64_3 = np.uint64(0x165667B19E3779F9)
_P64_4 = np.uint64(0x85EBCA77C2B2AE63)
_P64_5 = np.uint64(0x27D4EB2F165667C5)

_M3_C1 = np.uint32(0xCC9E2D51)
_M3_C2 = np.uint32(0x1B873593)


def _rotl64(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _rotl32(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _xxh64_avalanche(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * _P64_2
    h = h ^ (h >> np.uint64(29))
    h = h * _P64_3
    return h ^ (h >> np.uint64(32))


def _xxh64_int(value: int, seeds: np.ndarray) -> np.ndarray:
    """Spark's ``XXH64.hashInt(value, seed)`` (XXH64 of 4 little-endian bytes) for each uint64 seed."""
    lane = np.uint64(((value & _MASK32) * int(_P64_1)) & _MASK64)
    h = seeds + (_P64_5 + np.uint64(4))
    h = h ^ lane
    h = _rotl64(h, 23) * _P64_2 + _P64_3
    return _xxh64_avalanche(h)


def _xxh64_long(value: int, seeds: np.ndarray) -> np.ndarray:
    """Spark's ``XXH64.hashLong(value, seed)`` (XXH64 of 8 little-endian bytes) for each uint64 seed."""
    k = ((value & _MASK64) * int(_P64_2)) & _MASK64
    k = ((((k << 31) | (k >> 33)) & _MASK64) * int(_P64_1)) & _MASK64
    h = seeds + (_P64_5 + np.uint64(8))
    h = h ^ np.uint64(k)
    h = _rotl64(h, 27) * _P64_1 + _P64_4
    return _xxh64_avalanche(h)


def _string_hashes(ids: Sequence[str]) -> np.ndarray:
    """XXH64 of each id's UTF-8 bytes with Spark's seed 42 (42 itself for a null id), as uint64."""
    digest = xxhash.xxh64_intdigest
    try:
        return np.fromiter((digest(s.encode("utf-8"), SPARK_HASH_SEED) for s in ids), dtype=np.uint64,
                           count=len(ids))
    except AttributeError:
        pass
    out = np.empty(len(ids), dtype=np.uint64)
    for i, s in enumerate(ids):
        if s is None:
            out[i] = SPARK_HASH_SEED
        elif isinstance(s, str):
            out[i] = digest(s.encode("utf-8"), SPARK_HASH_SEED)
        else:
            raise TypeError(f"ids must be strings (or None); ids[{i}] is {type(s).__name__}")
    return out


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool):
        raise TypeError("seed must be an int, not a bool")
    try:
        value = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed must be an int; got {type(seed).__name__}") from None
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"seed must fit in a signed 64-bit integer (Spark's LongType); got {value}")
    return value


def _check_n_partitions(n_partitions: int) -> int:
    if isinstance(n_partitions, bool):
        raise ValueError("n_partitions must be an integer >= 1, not a bool")
    try:
        n = operator.index(n_partitions)
    except TypeError:
        raise ValueError(f"n_partitions must be an integer >= 1; got {n_partitions!r}") from None
    if n < 1:
        raise ValueError(f"n_partitions must be an integer >= 1; got {n}")
    if n > _INT32_MAX:
        raise ValueError(f"n_partitions must fit in a 32-bit int as Spark's does; got {n}")
    return n


def spark_xxhash64(ids: Sequence[str], seed: int) -> np.ndarray:
    """Spark's ``xxhash64(col("id"), lit(seed))`` of each id.

    Parameters
    ----------
    ids : Sequence[str]
        The N ids. Each is hashed as its UTF-8 bytes, as Spark hashes a ``StringType`` value; an id
        that cannot be encoded as UTF-8 (a lone surrogate) raises ``UnicodeEncodeError``. A ``None``
        id is treated as Spark treats a null: skipped, so only the seed literal is hashed.
    seed : int
        The literal's value. In the signed 32-bit range it is hashed as Spark's ``IntegerType``
        (4 bytes), outside it as ``LongType`` (8 bytes), as ``F.lit`` types a Python int.

    Returns
    -------
    numpy.ndarray
        int64 of shape (N,): the hash of ``ids[i]`` at position ``i``, equal to Spark's value.

    Raises
    ------
    TypeError
        If an id is neither a string nor None, or ``seed`` is not an integer.
    ValueError
        If ``seed`` does not fit in a signed 64-bit integer.
    """
    value = _check_seed(seed)
    with np.errstate(over="ignore"):
        h = _string_hashes(ids)
        h = _xxh64_int(value, h) if _INT32_MIN <= value <= _INT32_MAX else _xxh64_long(value, h)
    return h.view(np.int64)


def _murmur3_mix_k1(k1: np.ndarray) -> np.ndarray:
    k1 = k1 * _M3_C1
    k1 = _rotl32(k1, 15)
    return k1 * _M3_C2


def _murmur3_mix_h1(h1: np.ndarray, k1: np.ndarray) -> np.ndarray:
    h1 = h1 ^ k1
    h1 = _rotl32(h1, 13)
    return h1 * np.uint32(5) + np.uint32(0xE6546B64)


def _murmur3_fmix(h1: np.ndarray, length: int) -> np.ndarray:
    h1 = h1 ^ np.uint32(length)
    h1 = h1 ^ (h1 >> np.uint32(16))
    h1 = h1 * np.uint32(0x85EBCA6B)
    h1 = h1 ^ (h1 >> np.uint32(13))
    h1 = h1 * np.uint32(0xC2B2AE35)
    return h1 ^ (h1 >> np.uint32(16))


def _murmur3_hash_long(values: np.ndarray, seed: int) -> np.ndarray:
    """Spark's ``Murmur3_x86_32.hashLong(value, seed)`` of each int64 value, as int32."""
    bits = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
    low = (bits & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    high = (bits >> np.uint64(32)).astype(np.uint32)
    with np.errstate(over="ignore"):
        h1 = _murmur3_mix_h1(np.full(bits.shape, seed & 0xFFFFFFFF, dtype=np.uint32), _murmur3_mix_k1(low))
        h1 = _murmur3_mix_h1(h1, _murmur3_mix_k1(high))
        h1 = _murmur3_fmix(h1, 8)
    return h1.view(np.int32)


def spark_partition_of(hash_values: np.ndarray, n_partitions: int) -> np.ndarray:
    """The partition Spark's ``HashPartitioning`` gives a row whose partitioning expression is a long.

    That is ``pmod(Murmur3Hash(value, seed=42), n_partitions)`` with Murmur3 of a long computed as
    ``Murmur3_x86_32.hashLong``.

    Parameters
    ----------
    hash_values : numpy.ndarray
        Integer array of shape (N,): each row's value of the partitioning expression (for the
        selection stage, :func:`spark_xxhash64` of its id), read as int64.
    n_partitions : int
        The number of partitions, an integer >= 1.

    Returns
    -------
    numpy.ndarray
        int64 of shape (N,) with values in ``[0, n_partitions)``.

    Raises
    ------
    ValueError
        If ``n_partitions`` is not an integer >= 1, or ``hash_values`` is not one-dimensional.
    """
    n = _check_n_partitions(n_partitions)
    values = np.asarray(hash_values)
    if values.ndim != 1:
        raise ValueError(f"hash_values must be one-dimensional; got shape {values.shape}")
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"hash_values must be integers; got dtype {values.dtype}")
    murmur = _murmur3_hash_long(values.astype(np.int64, copy=False), SPARK_HASH_SEED).astype(np.int64)
    # Python's and NumPy's % of a positive divisor is already Spark's pmod (non-negative).
    return np.mod(murmur, np.int64(n))


def partition_of(ids: Sequence[str], n_partitions: int, seed: int) -> np.ndarray:
    """The Spark partition of each id after ``repartition(n_partitions, xxhash64(col("id"), lit(seed)))``.

    Equal, id for id, to ``spark_partition_id()`` of that repartitioned frame.

    Parameters
    ----------
    ids : Sequence[str]
        The N ids (see :func:`spark_xxhash64` for how they are hashed).
    n_partitions : int
        The number of partitions, an integer >= 1.
    seed : int
        The seed literal of the partitioning expression.

    Returns
    -------
    numpy.ndarray
        int64 of shape (N,) with values in ``[0, n_partitions)``: the partition of ``ids[i]``.

    Raises
    ------
    ValueError
        If ``n_partitions`` is not an integer >= 1 or ``seed`` does not fit in 64 bits.
    TypeError
        If an id is neither a string nor None, or ``seed`` is not an integer.
    """
    n = _check_n_partitions(n_partitions)
    return spark_partition_of(spark_xxhash64(ids, seed), n)
