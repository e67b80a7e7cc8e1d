"""Content hashes of table rows: 128 bits per row from the names and values of every column.

Incremental scoring tells a changed pool row from an unchanged one by this hash. A row's hash is a
function of its values alone, never of the batch or chunks it arrives in; two rows differ in hash
when any value differs (a float's bits, a null against an empty value, the order of a list), with
a chance of 2**-128 otherwise. Not a cryptographic hash: it detects changes, not tampering.

Vectorised: fixed-width values, lists of them and strings are hashed in NumPy (strings with
pandas' SipHash), so a 50,000-row batch of 64-float vectors takes tens of milliseconds; only
exotic types (decimals, maps, unions) go through Python values.
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# Two independent 64-bit lanes make the 128 bits.
_LANE_SEEDS = (0x243F6A8885A308D3, 0x13198A2E03707344)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NULL = np.uint64(0xA4093822299F31D0)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, element-wise on uint64 (wrapping)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _name_seed(name: str, seed: int) -> np.uint64:
    digest = hashlib.blake2b(name.encode(), digest_size=8, key=seed.to_bytes(8, "little")).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def _siphash_key(seed: np.uint64) -> str:
    # pandas takes a 16-character key; hex digits of the seed keep it ASCII.
    return f"{int(seed):016x}"


def _valid(array: pa.Array) -> np.ndarray:
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _fixed_width_bits(array: pa.Array) -> np.ndarray:
    """The values' bits as uint64 (nulls as 0; the caller marks them)."""
    kind = array.type
    if pa.types.is_boolean(kind):
        return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=np.uint64)
    width = kind.bit_width // 8
    filled = pc.fill_null(array, pa.scalar(0, kind)) if array.null_count else array
    values = np.ascontiguousarray(filled.to_numpy(zero_copy_only=False))
    return values.view(f"<u{width}").astype(np.uint64)


def _is_fixed_width(kind: pa.DataType) -> bool:
    return (pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind)
            or pa.types.is_temporal(kind)) and (pa.types.is_boolean(kind) or kind.bit_width in (8, 16, 32, 64))


def _is_bytes(kind: pa.DataType) -> bool:
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind) or pa.types.is_string_view(kind) or pa.types.is_binary_view(kind)
            or pa.types.is_fixed_size_binary(kind))


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def _column_lane(array: pa.Array, seed: np.uint64) -> np.ndarray:
    """One uint64 per value of ``array`` (an unchunked array), seeded."""
    n = len(array)
    kind = array.type
    if pa.types.is_dictionary(kind):
        return _column_lane(array.dictionary_decode(), seed)
    if pa.types.is_null(kind):
        return np.full(n, _mix(np.array([_NULL ^ seed]))[0], dtype=np.uint64)
    valid = _valid(array)
    with np.errstate(over="ignore"):
        if _is_fixed_width(kind):
            lane = _mix(_fixed_width_bits(array) ^ seed)
        elif _is_bytes(kind):
            objects = array.to_numpy(zero_copy_only=False)
            lane = pd.util.hash_array(objects, categorize=False, hash_key=_siphash_key(seed)).astype(np.uint64)
        elif _is_list(kind) and not pa.types.is_map(kind):
            lane = _list_lane(array, valid, seed)
        elif pa.types.is_struct(kind):
            lane = np.full(n, seed, dtype=np.uint64)
            for i in range(kind.num_fields):
                child = array.field(i)
                lane = _mix(lane ^ _column_lane(child, _mix(np.array([seed + np.uint64(i + 1)]))[0]))
        else:  # decimals, maps, unions: through their Python values, rare in pools
            text = np.array([repr(v) for v in array.to_pylist()], dtype=object)
            lane = pd.util.hash_array(text, categorize=False, hash_key=_siphash_key(seed)).astype(np.uint64)
        if not valid.all():
            lane = np.where(valid, lane, _mix(np.array([_NULL ^ seed]))[0])
    return lane


def _list_lane(array: pa.Array, valid: np.ndarray, seed: np.uint64) -> np.ndarray:
    """Lists: each row's elements as one byte string when they are fixed-width values without nulls
    (embeddings, feature vectors: SipHash over the bytes), else a sum over elements of their hash
    mixed with their position, the length mixed in."""
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = array.flatten()  # the valid lists' elements, in order, whatever the array's slice
    starts = np.zeros(len(array) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    if _is_fixed_width(flat.type) and not pa.types.is_boolean(flat.type) and flat.null_count == 0:
        width = flat.type.bit_width // 8
        data = np.ascontiguousarray(flat.to_numpy(zero_copy_only=False)).view(np.uint8).tobytes()
        bounds = (starts * width).tolist()
        rows = np.empty(len(array), dtype=object)
        rows[:] = [data[a:b] for a, b in itertools.pairwise(bounds)]
        rows[~valid] = None
        return pd.util.hash_array(rows, categorize=False, hash_key=_siphash_key(seed)).astype(np.uint64)
    elements = _column_lane(flat, _mix(np.array([seed ^ _GOLDEN]))[0]) if len(flat) else np.zeros(0, np.uint64)
    position = np.arange(len(flat), dtype=np.uint64) - np.repeat(starts[:-1], lengths).astype(np.uint64)
    elements = _mix(elements + position * _GOLDEN)
    sums = np.zeros(len(flat) + 1, dtype=np.uint64)
    np.cumsum(elements, out=sums[1:])
    total = sums[starts[1:]] - sums[starts[:-1]]  # wraps modulo 2**64, as the sums did
    return _mix(total ^ _mix(lengths.astype(np.uint64) + seed))


def row_hashes(table: pa.Table | pa.RecordBatch) -> pa.Array:
    """A 16-byte hash of each row of ``table`` (binary), from every column's name and values.

    Parameters
    ----------
    table : N rows; any Arrow column types

    Returns
    -------
    pa.Array of N binary values of 16 bytes each
    """
    n = table.num_rows
    lanes = []
    with np.errstate(over="ignore"):
        for seed in _LANE_SEEDS:
            row = np.full(n, np.uint64(seed), dtype=np.uint64)
            for name, column in zip(table.column_names, table.columns, strict=True):
                array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
                row = _mix(row ^ _column_lane(array, _name_seed(name, seed)))
            lanes.append(row)
    packed = np.stack(lanes, axis=1).astype("<u8").tobytes()
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(packed)])
    return fixed.cast(pa.binary())
