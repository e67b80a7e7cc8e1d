"""Small tables of the lake read whole (labels, round_items), their rows shaped to the table's schema."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from alray.errors import InputError

if TYPE_CHECKING:
    from alray.lake.outputs import Lake


def shaped(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in order (missing ones null), each cast to its type."""
    arrays = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
              for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def read_whole(lake: Lake, name: str, schema: pa.Schema) -> pa.Table:
    """Every row of a small table of the lake, shaped as ``schema``; empty when it does not exist yet."""
    try:
        table = lake.read_table(name)
    except InputError:
        return schema.empty_table()
    return shaped(table, schema)
