"""The scoring stage on Ray Data: an actor pool scores the pool, workers write the features.

The driver only checks the pool's schema, wires the pipeline and commits the files the workers
wrote into the features and rejects tables; no pool-sized data passes through its memory at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as pads

from alray.config import Config
from alray.engines import ensure_ray
from alray.errors import InputError
from alray.inference import REJECT_REASON, RESERVED_COLUMNS, ScoringOptions, score_batch
from alray.lake import (
    Lake,
    check_pool_schema,
    ensure_dir,
    iter_batches,
    reader_from_batches,
    replace_run,
    stream_parquet,
    table_files,
    table_schema,
)
from alray.models import load_checkpoint, pick_device
from alray.progress import Progress

REJECTS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string()), pa.field("id", pa.string()),
    pa.field("stage", pa.string()), pa.field("reason", pa.string()),
])


@dataclass(frozen=True)
class ScoreResult:
    """Counts of the scoring stage."""

    n_pool: int
    n_scored: int
    n_rejected: int


class PoolScorer:
    """Ray Data callable class: loads the model once per actor, scores each batch."""

    def __init__(self, checkpoint: str, device: str, options: ScoringOptions, n_threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, n_threads))
        resolved = pick_device(device)
        self.model = load_checkpoint(checkpoint).to(resolved)
        self.options = ScoringOptions(**{**options.__dict__, "device": str(resolved)})

    def __call__(self, batch: pa.Table) -> pa.Table:
        return score_batch(self.model, batch, self.options)


def _absolute(path: str) -> str:
    # Ray workers may run in another working directory: hand them absolute paths.
    return path if "://" in path else os.path.abspath(path)


def check_inputs(config: Config) -> tuple[list[str], str]:
    """Check the pool and the checkpoint before any engine starts; return pool files and payload."""
    pool = config.pool
    schema = table_schema(pool.path, pool.format, version=pool.version)
    payload = check_pool_schema(schema, pool.path)
    clashes = sorted((set(schema.names) - {"id", payload}) & RESERVED_COLUMNS)
    if clashes:
        raise InputError(f"pool {pool.path}: metadata columns {clashes} clash with features columns; rename them")
    load_checkpoint(config.model.checkpoint)
    files = [_absolute(f) for f in table_files(pool.path, pool.format, version=pool.version)]
    return files, payload


def run_score(config: Config, run_id: str, lake: Lake, progress: Progress) -> ScoreResult:
    """Score the pool on Ray and replace this run's rows of the features and rejects tables."""
    import ray.data
    from ray.data import ActorPoolStrategy

    files, payload = check_inputs(config)
    ensure_ray(config.ray)
    score = config.score
    options = ScoringOptions(payload=payload, mc_samples=score.mc_samples, seed=config.run.seed, run_id=run_id)
    staging = _absolute(lake.staging(run_id, "features"))
    ensure_dir(os.path.dirname(staging))
    progress.say(f"score: {len(files)} pool file(s), {score.num_actors} actor(s), T={score.mc_samples}")
    dataset = ray.data.read_parquet(files if len(files) > 1 else files[0])
    scored = dataset.map_batches(
        PoolScorer,
        fn_constructor_kwargs={
            "checkpoint": _absolute(config.model.checkpoint),
            "device": config.model.device if score.gpus_per_actor > 0 else "cpu",
            "options": options,
            "n_threads": int(max(1, score.cpus_per_actor)),
        },
        batch_size=score.batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=score.num_actors),
        num_cpus=score.cpus_per_actor,
        num_gpus=score.gpus_per_actor or None,
    )
    scored.write_parquet(staging)
    result = commit_features(staging, run_id, lake)
    progress.say(f"score: {result.n_scored} scored, {result.n_rejected} rejected of {result.n_pool}")
    if result.n_pool == 0:
        raise InputError(f"pool {config.pool.path}: the pool is empty")
    bad_fraction = result.n_rejected / result.n_pool
    if bad_fraction > score.max_bad_fraction:
        raise InputError(
            f"pool {config.pool.path}: {result.n_rejected} of {result.n_pool} rows rejected "
            f"({bad_fraction:.1%} > score.max_bad_fraction {score.max_bad_fraction:.1%}); see the rejects table"
        )
    return result


def commit_features(staging: str, run_id: str, lake: Lake) -> ScoreResult:
    """Commit the scored files of a staging folder: good rows to features, bad rows to rejects."""
    dataset = pads.dataset(staging, format="parquet")
    n_pool = dataset.count_rows()
    rejected = pads.field(REJECT_REASON).is_valid()
    feature_columns = [name for name in dataset.schema.names if name != REJECT_REASON]
    replace_run(lake.table("features"), stream_parquet(staging, filter=~rejected, columns=feature_columns), run_id)

    def reject_rows() -> pa.RecordBatchReader:
        reader = stream_parquet(staging, filter=rejected, columns=["run_id", "id", REJECT_REASON])
        return reader_from_batches(REJECTS_SCHEMA, (
            pa.RecordBatch.from_arrays(
                [b.column(0), b.column(1), pa.array(["score"] * b.num_rows, pa.string()), b.column(2)],
                schema=REJECTS_SCHEMA,
            )
            for b in iter_batches(reader)
        ))

    n_rejected = dataset.count_rows(filter=rejected)
    replace_run(lake.table("rejects"), reject_rows(), run_id)
    return ScoreResult(n_pool=n_pool, n_scored=n_pool - n_rejected, n_rejected=n_rejected)
