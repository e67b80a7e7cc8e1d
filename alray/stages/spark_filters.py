"""Metadata filters as Spark column expressions, checked against the table schema first.

Columns and values enter as column references and literals, never as SQL text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from alray.config import FilterConfig, parse_duration
from alray.errors import ConfigError

_NUMERIC = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)
_TIME = (T.TimestampType, T.TimestampNTZType, T.DateType)


def _column(name: str) -> Column:
    # Backticks make dots and spaces in a metadata column's name part of the name.
    return F.col("`" + name.replace("`", "``") + "`")


def _coerce(value: Any, data_type: T.DataType, where: str) -> Any:
    if isinstance(data_type, _NUMERIC):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number for a {data_type.simpleString()} column, got {value!r}")
        return value
    if isinstance(data_type, _TIME):
        if isinstance(value, (dt.datetime, dt.date)):
            return value
        try:
            parsed = dt.datetime.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(f"{where}: expected an ISO date or time for a time column, got {value!r}") from None
        return parsed if parsed.tzinfo is None else parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if isinstance(data_type, T.StringType):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string for a string column, got {value!r}")
        return value
    if isinstance(data_type, T.BooleanType):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false for a boolean column, got {value!r}")
        return value
    raise ConfigError(f"{where}: cannot compare a {data_type.simpleString()} column with a value")


def filter_condition(spec: FilterConfig, key: str, schema: T.StructType, run_time: dt.datetime) -> Column:
    """A boolean Column that is true for rows ``spec`` keeps; ConfigError names the filter at fault.

    ``key`` is the filter's dotted config key; ``run_time`` (UTC) anchors ``within_last``.
    """
    where = f"{key} ({spec.describe()})"
    fields = {field.name: field.dataType for field in schema.fields}
    if spec.column not in fields:
        raise ConfigError(f"{where}: no column {spec.column!r} in the features table")
    data_type = fields[spec.column]
    column = _column(spec.column)
    op, value = spec.op, spec.value
    if op == "is_null":
        return column.isNull()
    if op == "not_null":
        return column.isNotNull()
    if op == "within_last":
        if not isinstance(data_type, _TIME):
            raise ConfigError(f"{where}: within_last needs a timestamp or date column, "
                              f"{spec.column!r} is {data_type.simpleString()}")
        start = run_time.astimezone(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(
            seconds=parse_duration(value))
        return column >= F.lit(start)
    if op in ("in", "not_in"):
        literals = [_coerce(v, data_type, where) for v in value]
        condition = column.isin(literals)
        return condition if op == "in" else ~condition
    if op == "between":
        low, high = (_coerce(v, data_type, where) for v in value)
        return column.between(F.lit(low), F.lit(high))
    literal = F.lit(_coerce(value, data_type, where))
    comparisons = {
        ">": column > literal, ">=": column >= literal, "<": column < literal,
        "<=": column <= literal, "==": column == literal, "!=": column != literal,
    }
    return comparisons[op]


def rejection_reason(filters: list[tuple[FilterConfig, str]], schema: T.StructType, run_time: dt.datetime,
                     *, before: Sequence[tuple[Column, str]] = ()) -> Column:
    """A string Column: the first reason a row is filtered out, or null when it passes all.

    ``filters`` holds (filter, dotted config key) pairs, checked in order; a null value never
    passes. ``before`` holds (condition, reason) pairs checked first (e.g. labeled rows).
    """
    reason: Any = F
    started = False
    for condition, text in before:
        reason = reason.when(condition, F.lit(text)) if started else F.when(condition, F.lit(text))
        started = True
    for spec, key in filters:
        keeps = F.coalesce(filter_condition(spec, key, schema, run_time), F.lit(False))
        label = F.lit(f"{key}: {spec.describe()}")
        reason = reason.when(~keeps, label) if started else F.when(~keeps, label)
        started = True
    return reason if started else F.lit(None).cast("string")
