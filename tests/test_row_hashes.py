"""Row hashes: a function of a row's values alone, and different when any value differs."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from alray.row_hashes import row_hashes

BASE = {
    "id": "a", "image": b"\x89PNG", "score": 0.5, "count": 3, "flag": True,
    "at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), "vector": [1.0, 2.0, 3.0], "tags": ["x", "y"],
    "box": {"x": 1, "label": "cat"},
}
SCHEMA = pa.schema([
    ("id", pa.string()), ("image", pa.binary()), ("score", pa.float64()), ("count", pa.int32()), ("flag", pa.bool_()),
    ("at", pa.timestamp("us", tz="UTC")), ("vector", pa.list_(pa.float32())), ("tags", pa.list_(pa.string())),
    ("box", pa.struct([("x", pa.int64()), ("label", pa.string())])),
])
CHANGES = [
    ("id", "b"), ("id", None), ("image", b""), ("image", None), ("score", -0.5), ("score", float("nan")),
    ("count", 4), ("count", None), ("flag", False), ("at", dt.datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=dt.timezone.utc)),
    ("vector", [2.0, 1.0, 3.0]), ("vector", [1.0, 2.0]), ("vector", [1.0, 2.0, 3.0, 0.0]), ("vector", []),
    ("vector", None), ("vector", [1.0, None, 3.0]), ("tags", ["y", "x"]), ("tags", ["xy"]),
    ("box", {"x": 2, "label": "cat"}), ("box", {"x": 1, "label": None}), ("box", None),
]


def _hashes(rows: list[dict]) -> list[bytes]:
    return row_hashes(pa.Table.from_pylist(rows, schema=SCHEMA)).to_pylist()


@pytest.mark.parametrize(("column", "value"), CHANGES)
def test_any_changed_value_changes_the_hash(column, value):
    original, changed = _hashes([BASE, {**BASE, column: value}])
    assert len(original) == 16 and original != changed


def test_equal_rows_hash_alike_whatever_their_batch_slice_or_chunks():
    rng = np.random.default_rng(0)
    rows = [{**BASE, "id": f"r{i}", "vector": rng.normal(size=int(rng.integers(0, 5))).tolist(),
             "score": None if i % 7 == 0 else float(rng.random())} for i in range(50)]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    whole = row_hashes(table)
    assert row_hashes(table.slice(13, 20)).equals(whole.slice(13, 20))
    chunked = pa.concat_tables([table.slice(0, 10), table.slice(10)])
    assert row_hashes(chunked).equals(whole)
    assert row_hashes(table.to_batches(max_chunksize=7)[3]).equals(whole.slice(21, 7))
    assert len(set(whole.to_pylist())) == 50


def test_the_column_names_count():
    table = pa.Table.from_pylist([BASE], schema=SCHEMA)
    renamed = table.rename_columns(["uid", *table.column_names[1:]])
    assert row_hashes(table) != row_hashes(renamed)


def test_a_vector_null_inside_and_the_dictionary_form_are_handled():
    plain = pa.table({"v": pa.array([[1.0, None], [1.0, 0.0]], pa.list_(pa.float64())),
                      "c": pa.array(["x", "y"])})
    hashes = row_hashes(plain).to_pylist()
    assert hashes[0] != hashes[1]
    encoded = plain.set_column(1, "c", plain.column("c").dictionary_encode())
    assert row_hashes(encoded).to_pylist() == hashes


def test_hashes_are_the_same_in_another_process():
    code = ("import pyarrow as pa; from alray.row_hashes import row_hashes; "
            "print(row_hashes(pa.table({'id': ['a', 'b'], 'v': [[1.5, 2.0], []]})).to_pylist())")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outputs) == 1
    here = row_hashes(pa.table({"id": ["a", "b"], "v": [[1.5, 2.0], []]})).to_pylist()
    assert outputs.pop().strip() == str(here)


def test_distinct_rows_of_few_values_never_collide():
    rng = np.random.default_rng(1)
    n = 200_000
    values = rng.integers(0, 4, size=(n, 8)).astype(np.float32)  # few distinct values: near-duplicate rows
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 8)
    table = pa.table({"features": vectors.cast(pa.list_(pa.float32()))})
    distinct_rows = len({row.tobytes() for row in values})
    assert len(set(row_hashes(table).to_pylist())) == distinct_rows
