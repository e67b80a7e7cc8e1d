"""Metadata filters and thresholds over an Arrow table: the single-machine twin of the Spark filters.

Same semantics as :mod:`alray.stages.spark_filters`: filters apply in order, a row's reason is
the first filter it fails, a null never passes, and a value that does not fit the column's type
is a ConfigError naming the filter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from alray.config import FilterConfig, parse_duration
from alray.errors import ConfigError


def _is_time(data_type: pa.DataType) -> bool:
    return pa.types.is_timestamp(data_type) or pa.types.is_date(data_type)


def _as_utc(value: dt.datetime | dt.date) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _scalar(value: Any, data_type: pa.DataType, where: str) -> Any:
    if pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number for a {data_type} column, got {value!r}")
        return pa.scalar(float(value), pa.float64())
    if _is_time(data_type):
        if not isinstance(value, (dt.datetime, dt.date)):
            try:
                value = dt.datetime.fromisoformat(str(value))
            except ValueError:
                raise ConfigError(f"{where}: expected an ISO date or time for a time column, got {value!r}") from None
        return pa.scalar(_as_utc(value), pa.timestamp("us", tz="UTC"))
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string for a string column, got {value!r}")
        return pa.scalar(value, pa.string())
    if pa.types.is_boolean(data_type):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false for a boolean column, got {value!r}")
        return pa.scalar(value, pa.bool_())
    raise ConfigError(f"{where}: cannot compare a {data_type} column with a value")


def _comparable(column: pa.ChunkedArray | pa.Array) -> Any:
    data_type = column.type
    if pa.types.is_floating(data_type):
        # Spark orders NaN above every number: NaN passes `>` and fails `<`, as there
        values = pc.cast(column, pa.float64())
        return pc.if_else(pc.is_nan(values), pa.scalar(float("inf")), values)
    if pa.types.is_integer(data_type) or pa.types.is_decimal(data_type):
        return pc.cast(column, pa.float64())
    if pa.types.is_date(data_type):
        return pc.assume_timezone(pc.cast(pc.cast(column, pa.timestamp("s")), pa.timestamp("us")), "UTC")
    if pa.types.is_timestamp(data_type):
        as_us = pc.cast(column, pa.timestamp("us", tz=data_type.tz)) if data_type.unit != "us" else column
        return pc.assume_timezone(as_us, "UTC") if data_type.tz is None else as_us
    return column


def keeps(table: pa.Table, spec: FilterConfig, key: str, run_time: dt.datetime) -> np.ndarray:
    """Bool (N,): rows ``spec`` keeps (a null never passes); ConfigError names ``key`` at fault."""
    where = f"{key} ({spec.describe()})"
    if spec.column not in table.column_names:
        raise ConfigError(f"{where}: no column {spec.column!r} in the features table")
    raw = table.column(spec.column)
    op, value = spec.op, spec.value
    if op in ("is_null", "not_null"):
        nulls = pc.is_null(raw, nan_is_null=False)
        return np.asarray((nulls if op == "is_null" else pc.invert(nulls)).to_numpy(zero_copy_only=False), bool)
    column = _comparable(raw)
    if op == "within_last":
        if not _is_time(raw.type):
            raise ConfigError(f"{where}: within_last needs a timestamp or date column, "
                              f"{spec.column!r} is {raw.type}")
        start = _as_utc(run_time) - dt.timedelta(seconds=parse_duration(value))
        result = pc.greater_equal(column, pa.scalar(start, pa.timestamp("us", tz="UTC")))
    elif op in ("in", "not_in"):
        literals = pa.array([_scalar(v, raw.type, where).as_py() for v in value])
        result = pc.is_in(column, value_set=literals.cast(column.type))
        if op == "not_in":
            result = pc.if_else(pc.is_null(column), pa.scalar(None, pa.bool_()), pc.invert(result))
        else:
            result = pc.if_else(pc.is_null(column), pa.scalar(None, pa.bool_()), result)
    elif op == "between":
        low, high = (_scalar(v, raw.type, where) for v in value)
        result = pc.and_(pc.greater_equal(column, low), pc.less_equal(column, high))
    else:
        literal = _scalar(value, raw.type, where)
        functions = {">": pc.greater, ">=": pc.greater_equal, "<": pc.less, "<=": pc.less_equal,
                     "==": pc.equal, "!=": pc.not_equal}
        result = functions[op](column, literal)
    return np.asarray(pc.fill_null(result, False).to_numpy(zero_copy_only=False), dtype=bool)


def rejection_reasons(table: pa.Table, filters: Sequence[tuple[FilterConfig, str]], run_time: dt.datetime, *,
                      before: Sequence[tuple[np.ndarray, str]] = ()) -> np.ndarray:
    """Object array (N,): the first reason a row is filtered out, or None when it passes all.

    ``before`` holds (bool mask, reason) pairs checked first (e.g. labeled rows).
    """
    reasons = np.full(table.num_rows, None, dtype=object)
    for mask, text in before:
        reasons[(reasons == None) & mask] = text  # noqa: E711 (element-wise)
    for spec, key in filters:
        failing = ~keeps(table, spec, key, run_time)
        reasons[(reasons == None) & failing] = f"{key}: {spec.describe()}"  # noqa: E711
    return reasons
