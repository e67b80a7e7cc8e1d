"""The single-machine filters are the Spark filters' twin: same rows kept, same reasons, same NaN order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from alray.config import FilterConfig
from alray.errors import ConfigError
from alray.selection.filters import keeps, rejection_reasons
from alray.stages.spark_filters import rejection_reason
from tests.stages.test_select import FILTER_CASES, RUN_TIME, make_features


@pytest.fixture(scope="module")
def features() -> pa.Table:
    table = make_features()
    values = np.linspace(0.0, 1.0, table.num_rows)
    values[::7] = np.nan  # NaN, not null: Spark orders it above every number
    return table.append_column("score_nan", pa.array(values, pa.float64()))


CASES = [*(spec for spec, _ in FILTER_CASES),
         {"column": "score_nan", "op": ">", "value": 0.5}, {"column": "score_nan", "op": "<=", "value": 0.5},
         {"column": "score_nan", "op": "between", "value": [0.2, 0.4]}]


@pytest.mark.parametrize("spec", CASES, ids=[f"{c['op']}:{c['column']}" for c in CASES])
def test_local_filters_keep_what_spark_keeps(spark, features, spec):
    frame = spark.createDataFrame(features.drop_columns(["run_id"]))
    reason = rejection_reason([(FilterConfig(**spec), "selection.filters.0")], frame.schema, RUN_TIME)
    spark_kept = {row["id"] for row in frame.select("id", reason.alias("r")).collect() if row["r"] is None}
    ids = np.array(features.column("id").to_pylist())
    local_kept = set(ids[keeps(features, FilterConfig(**spec), "selection.filters.0", RUN_TIME)])
    assert local_kept == spark_kept
    assert 0 < len(local_kept) < features.num_rows or spec["op"] in ("is_null", "not_null")


def test_first_failing_filter_is_the_reason_and_bad_values_name_the_filter(features):
    filters = [(FilterConfig(column="sharpness", op=">", value=50.0), "selection.filters.0"),
               (FilterConfig(column="n_objects", op="<", value=3), "selection.filters.1")]
    before = [(np.arange(features.num_rows) < 5, "labeled")]
    reasons = rejection_reasons(features, filters, RUN_TIME, before=before)
    assert list(reasons[:5]) == ["labeled"] * 5
    sharp = features.column("sharpness").to_numpy()[5:]
    assert all(r == "selection.filters.0: sharpness > 50.0" for r in reasons[5:][sharp <= 50])
    with pytest.raises(ConfigError, match=r"selection\.filters\.0 \(camera_id > 3\): expected a string"):
        keeps(features, FilterConfig(column="camera_id", op=">", value=3), "selection.filters.0", RUN_TIME)
    with pytest.raises(ConfigError, match=r"no column 'nope'"):
        keeps(features, FilterConfig(column="nope", op="is_null"), "selection.filters.0", RUN_TIME)
