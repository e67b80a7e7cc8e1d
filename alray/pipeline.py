"""A whole run: score on Ray, select on Spark, and the runs record from running to its end."""

from __future__ import annotations

import datetime as dt
import json
import platform
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from alray import __version__, engine_log
from alray.config import Config, config_from_dict
from alray.errors import AlrayError
from alray.faults import fail_once
from alray.lake import Lake, ensure_dir
from alray.lake.filesystems import join_path
from alray.lake.rounds import drop_selected, record_selection
from alray.progress import Progress
from alray.tables import RUNS_SCHEMA


def new_run_id(now: dt.datetime | None = None) -> str:
    """A sortable, unique run id such as ``20261127T143000Z-1a2b3c``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def library_versions() -> dict[str, str]:
    """Versions of alray and the engines that shaped a run's result."""
    import deltalake
    import numpy
    import pyspark
    import ray
    import torch

    return {
        "alray": __version__, "python": platform.python_version(), "ray": ray.__version__,
        "pyspark": pyspark.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
        "pyarrow": pa.__version__, "deltalake": deltalake.__version__,
    }


@dataclass
class RunSummary:
    """What a run did: the JSON line of ``--json`` and the runs table row."""

    run_id: str
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    filtered_by_reason: dict[str, int] = field(default_factory=dict)
    coverage_radius: float | None = None
    strategy: str = ""
    strategy_reason: str | None = None  # why ``auto`` chose the strategy
    selection_details: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    stages_completed: list[str] = field(default_factory=list)
    resumed: bool = False
    log: str | None = None  # the engines' log file of the run (``OUTPUT/logs/RUN_ID.log``) when the CLI ran it
    reused_from: str | None = None  # the run whose features an incremental scoring carried over
    score_key: str | None = None  # what a later run's scoring must share with this one's to reuse it

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(asdict(self), sort_keys=True)


def _runs_row(summary: RunSummary, config: Config, started: dt.datetime, finished: dt.datetime | None) -> pa.Table:
    counts = summary.counts
    row: dict[str, Any] = {
        "run_id": summary.run_id, "status": summary.status, "started_at": started, "finished_at": finished,
        "config": config.to_json(), "config_hash": config.config_hash(),
        **{f"n_{name}": counts.get(name) for name in ("pool", "rejected", "filtered", "candidates", "selected")},
        "filtered_by_reason": json.dumps(summary.filtered_by_reason, sort_keys=True),
        "coverage_radius": summary.coverage_radius, "timings": json.dumps(summary.timings, sort_keys=True),
        "versions": json.dumps(library_versions(), sort_keys=True), "error": summary.error,
        "stages_completed": ",".join(summary.stages_completed),
        "strategy": summary.strategy or None, "strategy_reason": summary.strategy_reason,
        "selection_details": json.dumps(summary.selection_details, sort_keys=True) if summary.strategy else None,
        "n_scored": counts.get("scored"), "n_reused": counts.get("reused"), "reused_from": summary.reused_from,
        "score_key": summary.score_key,
    }
    return pa.Table.from_pylist([row], schema=RUNS_SCHEMA)


def run_log_path(lake_root: str, run_id: str) -> str:
    """Where a run's engine log goes: ``OUTPUT/logs/RUN_ID.log``."""
    return join_path(lake_root, "logs", f"{run_id}.log")


def run_pipeline(config: Config, *, progress: Progress | None = None, stages: tuple[str, ...] = ("score", "select"),
                 ) -> RunSummary:
    """Run the given stages for ``config`` and record the run in the runs table.

    The run id is ``config.run.run_id`` or a new one; rerunning an id replaces that run's rows.
    User errors (AlrayError) are recorded as a failed run and raised again.
    """
    from alray.stages.score import run_score
    from alray.stages.select import run_select

    progress = progress or Progress()
    run_id = config.run.run_id or new_run_id()
    config = config.model_copy(update={"run": config.run.model_copy(update={"run_id": run_id})})
    lake = Lake.from_output(config.output)
    ensure_dir(lake.root)
    started = dt.datetime.now(dt.timezone.utc)
    summary = RunSummary(run_id=run_id, status="running",
                         tables={name: lake.table(name) for name in ("features", "ranking", "rejects", "runs")})
    if config.task == "detection" and config.detection.level == "objects":
        summary.tables.update({name: lake.table(name) for name in ("objects", "object_ranking")})
    # Read before this attempt's row replaces it: it tells whether an earlier attempt's scoring can be kept,
    # and what the scoring of a select-only run's `alray score` recorded.
    earlier = _earlier_attempt(lake, run_id)
    summary.log = engine_log.log_run_to(run_log_path(lake.root, run_id), lake.storage_options)
    lake.replace_run("runs", _runs_row(summary, config, started, None), run_id, partition=False)
    progress.say(f"run {run_id}: stages {', '.join(stages)}; lake {lake.root}")
    begin = time.perf_counter()
    try:
        if "score" in stages and config.model is None and config.embed is not None:
            from alray.stages.embed import with_trained_encoder

            # No task model: the score stage embeds with the self-supervised encoder of `embed`.
            with progress.stage("embed"):
                config = with_trained_encoder(config, progress=progress)
        resumable = earlier is not None and "score" in stages and config.run.resume
        previous = _resumable_score(earlier, config) if resumable and earlier is not None else None
        if previous is not None and earlier is not None:
            summary.counts.update(previous)
            _keep_scoring_record(summary, earlier)
            summary.stages_completed.append("score")
            summary.resumed = True
            progress.say(f"score: resumed, the features of an interrupted attempt of {run_id} are complete "
                         f"({previous['pool'] - previous['rejected']} scored, {previous['rejected']} rejected)")
        elif "score" in stages:
            with progress.stage("score"):
                scored = run_score(config.pool, config.model, config.score, config.ray, seed=config.run.seed,
                                   run_id=run_id, lake=lake, progress=progress, selection=config.selection,
                                   detection=config.detection if config.task == "detection" else None,
                                   score_basis=config.score_hash(pool_version=False),
                                   incremental=config.run.incremental)
            summary.counts.update(pool=scored.n_pool, rejected=scored.n_rejected,
                                  scored=scored.n_pool - scored.n_reused, reused=scored.n_reused)
            summary.reused_from, summary.score_key = scored.reused_from, scored.score_key
            summary.stages_completed.append("score")
            # recorded now, so that a run killed later can resume after the scoring
            lake.replace_run("runs", _runs_row(summary, config, started, None), run_id, partition=False)
        else:
            summary.counts.update(_previous_counts(lake, run_id))
            if earlier is not None:
                _keep_scoring_record(summary, earlier)
            summary.stages_completed.append("score")  # by an earlier `alray score` of this run
        if "select" in stages:
            from alray.engines import spark_task_progress

            with progress.stage("select"), spark_task_progress(progress.detail):
                if config.task == "detection" and config.detection.level == "objects":
                    from alray.stages.select_objects import run_select_objects as run_select
                selected = run_select(config.selection, config.labeled, config.spark, seed=config.run.seed,
                                      run_id=run_id, lake=lake, progress=progress, run_time=started,
                                      labeled_storage_options=config.labeled_storage_options(),
                                      source=f"pool {config.pool.path}")
                # the picks become a round (round_items: selected), for alray export and alray rounds
                fail_once("select.before_round", kill=True)
                record_selection(lake, run_id, at=started)
            summary.counts.update(filtered=selected.n_filtered, candidates=selected.n_candidates,
                                  selected=selected.n_selected)
            summary.filtered_by_reason = selected.filtered_by_reason
            summary.coverage_radius = selected.coverage_radius
            summary.strategy = selected.strategy
            summary.strategy_reason = selected.strategy_reason
            summary.selection_details = selected.details
            summary.stages_completed.append("select")
        summary.status = "succeeded"
    except BaseException as exc:
        # A failed run leaves none of its rows; an interrupted one (Ctrl-C, a scheduler's stop)
        # keeps those of the stages it finished, so that a rerun resumes after them.
        interrupted = not isinstance(exc, Exception)
        summary.status = "interrupted" if interrupted else "failed"
        summary.error = str(exc).splitlines()[0] if isinstance(exc, AlrayError) and str(exc) else repr(exc)[:500]
        _remove_rows(lake, run_id, stages, keep=summary.stages_completed if interrupted else [])
        if not interrupted:
            summary.stages_completed = [s for s in summary.stages_completed if s not in stages]
        raise
    finally:
        summary.timings = {**progress.timings, "total_s": round(time.perf_counter() - begin, 3)}
        lake.replace_run("runs", _runs_row(summary, config, started, dt.datetime.now(dt.timezone.utc)),
                         run_id, partition=False)
        lake.clear_staging(run_id)
    return summary


# The tables each stage writes for its run.
STAGE_TABLES = {"score": ("features", "rejects", "objects", "pool_rows"), "select": ("ranking", "object_ranking")}


def _remove_rows(lake: Lake, run_id: str, stages: tuple[str, ...], *, keep: list[str]) -> None:
    """Remove ``run_id``'s rows of the tables that ``stages`` write, but for the stages in ``keep``."""
    for stage in stages:
        if stage not in keep:
            for name in STAGE_TABLES[stage]:
                lake.delete_run(name, run_id)
            if stage == "select":
                drop_selected(lake, run_id)  # its picks; what was sent or labeled already stays


def _earlier_attempt(lake: Lake, run_id: str) -> dict[str, Any] | None:
    """The runs row an earlier attempt of ``run_id`` left, if any."""
    try:
        rows = lake.read_run("runs", run_id).to_pylist()
    except Exception:  # an unreadable or older runs table: nothing to resume from
        return None
    return rows[0] if rows else None


def _resumable_score(row: dict[str, Any], config: Config) -> dict[str, int] | None:
    """Counts of an earlier attempt of this run (its runs ``row``) that finished scoring but not the whole run.

    Only an attempt whose pool, model, scoring settings and seed were the same counts (other
    settings, such as the selection's, may differ), and only one that was killed, interrupted or
    scored alone: a failed run removed its rows, and a run that succeeded whole is redone.
    """
    done = (row.get("stages_completed") or "").split(",")
    try:
        same_features = config_from_dict(json.loads(row["config"])).score_hash() == config.score_hash()
    except (AlrayError, TypeError, ValueError):  # a config an older version wrote
        return None
    if not same_features or "score" not in done or row.get("n_pool") is None:
        return None
    if row.get("status") == "failed" or (row.get("status") == "succeeded" and "select" in done):
        return None  # a failed run left no rows; a run that succeeded whole is redone
    return {"pool": int(row["n_pool"]), "rejected": int(row["n_rejected"] or 0)}


def _keep_scoring_record(summary: RunSummary, row: dict[str, Any]) -> None:
    """Carry an earlier attempt's record of its scoring (runs ``row``) into this attempt's summary:
    rows scored and reused, and the score key a later incremental run looks for."""
    if row.get("n_scored") is not None:
        summary.counts.update(scored=int(row["n_scored"]), reused=int(row.get("n_reused") or 0))
    summary.reused_from, summary.score_key = row.get("reused_from"), row.get("score_key")


def _previous_counts(lake: Lake, run_id: str) -> dict[str, int]:
    """Pool and reject counts of an earlier score stage of the same run (for a select-only rerun)."""
    rows = lake.read_run("rejects", run_id, columns=["id"])
    features = lake.read_run("features", run_id, columns=["id"])
    return {"pool": features.num_rows + rows.num_rows, "rejected": rows.num_rows}
