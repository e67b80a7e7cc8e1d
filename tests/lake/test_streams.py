"""Streams: one parquet file filtered and reshaped batch by batch."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from alray.lake import reshape_parquet


def test_reshape_parquet_filters_renames_and_adds_constants(tmp_path):
    source = tmp_path / "scored.parquet"
    pq.write_table(pa.table({"run_id": ["r"] * 3, "id": ["1", "2", "3"], "why": [None, "corrupt", None]}), source)
    out = reshape_parquet(str(source), str(tmp_path / "out"), filter=pads.field("why").is_valid(),
                          columns={"id": "id", "stage": pa.scalar("score"), "reason": "why"})
    assert out is not None
    assert pq.read_table(out).to_pylist() == [{"id": "2", "stage": "score", "reason": "corrupt"}]
    assert reshape_parquet(str(source), str(tmp_path / "none"), filter=pads.field("id") == "x",
                           columns={"id": "id"}) is None
