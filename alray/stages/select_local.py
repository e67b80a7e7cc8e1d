"""The selection stage on this machine: this run's features read from the lake into memory, the
selection core's single-machine engine (:func:`alray.selection.local.select_table`, the ranking the
Spark stage computes, pick for pick) and the ranking written back, with no JVM to start.

``selection.engine: auto`` takes this path below :data:`LOCAL_MAX_ROWS` feature rows, where a
Spark session's start-up and per-stage overhead would be most of the stage's time.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from alray.config import LabeledConfig, SelectionConfig
from alray.errors import InputError
from alray.lake import Lake, filesystem_for, previously_selected_ids, read_ids
from alray.lake.labels import current_labels, read_labels
from alray.lake.rounds import out_for_labeling, round_ids
from alray.progress import Progress
from alray.selection.result import LABELED_REASON, PREVIOUS_REASON, SelectResult

# Feature rows below which `engine: auto` selects in-process: at 100,000 x 64 the features take
# about 30 MB and the selection seconds; above it Spark's partitions and executors pay off.
LOCAL_MAX_ROWS = 100_000


def feature_rows(lake: Lake, run_id: str, table: str = "features") -> int:
    """Rows of this run's features (or of another of its tables), from the parquet footers (no data read)."""
    options = dict(lake.storage_options or {})
    total = 0
    for path in lake.run_files(table, run_id):
        fs, inner = filesystem_for(path, options)
        total += pq.ParquetFile(inner, filesystem=fs).metadata.num_rows
    return total


def choose_engine(selection: SelectionConfig, lake: Lake, run_id: str, table: str = "features",
                  ) -> tuple[str, int | None]:
    """The engine the selection of ``table``'s rows runs on, and the rows when ``auto`` counted them."""
    if selection.engine != "auto":
        return selection.engine, None
    rows = feature_rows(lake, run_id, table)
    return ("local" if rows < LOCAL_MAX_ROWS else "spark"), rows


def excluded_ids(labeled: LabeledConfig, storage_options: dict[str, str] | None, lake: Lake,
                 run_id: str, *, now: dt.datetime | None = None) -> pa.Table | None:
    """Ids kept out of the candidates with their reason (``id``, ``_excluded``): the labeled set and the
    lake's labels (``labeled``), ids out for labeling at ``now`` and earlier selections
    (``selected_before``); an id both labeled and selected before counts once, as labeled.

    The ids of ``run_id``'s own round (a rerun's) are not kept out for their labels or their export:
    they are the run's own picks, so a rerun sees what its first try saw."""
    parts = []
    if labeled.path:
        ids = read_ids(labeled.path, labeled.format, name="labeled.path", storage_options=storage_options)
        parts.append(pa.table({"id": ids, "_excluded": pa.array([LABELED_REASON] * len(ids), pa.string())}))
    if labeled.from_lake:
        now = now or dt.datetime.now(dt.timezone.utc)
        own = round_ids(lake, run_id)
        ids = pa.array([row["id"] for row in current_labels(read_labels(lake)) if row["id"] not in own], pa.string())
        parts.append(pa.table({"id": ids, "_excluded": pa.array([LABELED_REASON] * len(ids), pa.string())}))
        ids = out_for_labeling(lake, now=now, after=labeled.expiry(), except_round=run_id)
        parts.append(pa.table({"id": ids, "_excluded": pa.array([PREVIOUS_REASON] * len(ids), pa.string())}))
    if labeled.exclude_previous_runs:
        ids = previously_selected_ids(lake, run_id)
        parts.append(pa.table({"id": ids, "_excluded": pa.array([PREVIOUS_REASON] * len(ids), pa.string())}))
    if not parts or not sum(p.num_rows for p in parts):
        return None
    table = pa.concat_tables(parts)
    first = pc.equal(pc.index_in(table.column("id"), value_set=table.column("id").combine_chunks()),
                     pa.array(np.arange(table.num_rows)))
    return table.filter(first)


def run_select_local(selection: SelectionConfig, labeled: LabeledConfig, *, seed: int, run_id: str, lake: Lake,
                     progress: Progress, run_time: dt.datetime,
                     labeled_storage_options: dict[str, str] | None = None) -> SelectResult:
    """Select in this process from this run's features and replace this run's ranking rows."""
    from alray.selection.local import select_table

    if not lake.run_files("features", run_id):
        raise InputError(f"features table {lake.table('features')}: no rows for run {run_id}; run the score stage")
    features = lake.read_run("features", run_id)
    if "run_id" in features.column_names:
        features = features.drop_columns(["run_id"])
    excluded = excluded_ids(labeled, labeled_storage_options, lake, run_id, now=run_time)
    marks = None if excluded is None else dict(zip(excluded.column("id").to_pylist(),
                                                   excluded.column("_excluded").to_pylist(), strict=True))
    ranking, result = select_table(features, selection, seed=seed, excluded=marks, run_id=run_id, run_time=run_time)
    progress.say(f"select: {result.n_features} scored, {result.n_candidates} candidates; filtered "
                 f"{result.filtered_by_reason or 'none'}")
    if result.strategy_reason:
        progress.say(f"select: auto chose {result.strategy} ({result.strategy_reason})")
    if result.details:
        progress.say("select: " + ", ".join(f"{k} {v:.4g}" for k, v in result.details.items()))
    lake.replace_run("ranking", ranking, run_id)
    return result
