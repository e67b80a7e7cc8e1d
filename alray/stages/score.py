"""The scoring stage on Ray Data: an actor pool scores the pool, workers write the features.

The driver only checks the pool's schema, wires the pipeline and commits the files the workers
wrote into the features and rejects tables; no pool-sized data passes through its memory at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from alray.config import DetectionConfig, ModelConfig, PoolConfig, RayConfig, ScoreConfig, SelectionConfig
from alray.detection.columns import DetectionOptions
from alray.engines import check_leaves_a_read_cpu, ensure_ray, ray_row_counter
from alray.errors import ConfigError, InputError
from alray.faults import fail_once
from alray.inference import (
    InputSpec,
    ScoringOptions,
    check_payload_fits,
    decode_batch,
    score_decoded,
    text_encoder_for,
)
from alray.lake import Lake, StorageOptions, ensure_dir, filesystem_for
from alray.models import TaskModel, load_model, pick_device
from alray.payloads import PayloadError, TextEncoder
from alray.precomputed import PRECOMPUTED_COLUMNS, available_scores, score_precomputed
from alray.progress import Progress
from alray.selection.plan import keyed_inputs
from alray.stages.commit import ScoreResult, commit_split, split_staged
from alray.stages.incremental import plan_increment, pool_rows_schema, score_key
from alray.stages.pool_source import (
    PoolSource,
    block_rows_for,
    check_metadata_names,
    embedding_width,
    open_checked_pool,
    read_pool,
    whole_batches,
)
from alray.strategies.base import PREDICTIONS
from alray.tables import MC_SCORES, REJECT_REASON

# Rows a scoring write task gathers before it writes a file: large enough that a big pool
# makes a few hundred files, small enough that the rows it holds stay a few tens of MiB.
ROWS_PER_STAGED_FILE = 20_000

# Decoded inputs one decode task hands on at most (when a pool block decodes to more, the task
# takes fewer rows, down to one batch).
DECODED_BATCH_BYTES = 16 * 2**20

def load_configured_model(model: ModelConfig) -> TaskModel:
    """The task model of the ``model`` section, on the CPU, in eval mode."""
    return load_model(model.checkpoint, architecture=model.architecture, image_size=model.image_size,
                      dropout=model.dropout, model_format=model.format, max_tokens=model.max_tokens)


def decode_pool_batch(batch: pa.Table, spec: InputSpec, options: ScoringOptions) -> pa.Table:
    """Ray Data task: one batch of pool rows decoded into model inputs (:func:`~alray.inference.decode_batch`)."""
    fail_once("score.decode")
    return decode_batch(batch, spec, options)


class PoolScorer:
    """Ray Data callable class: loads the model (and a text encoder) once per actor, scores each batch
    of decoded inputs (:func:`~alray.inference.score_decoded`), or a pool's own precomputed columns.

    With ``detection`` options (a detection run) the model is a detector or an encoder, or None
    for a pool that holds its detections (:mod:`alray.stages.score_detection`)."""

    def __init__(self, model: ModelConfig | None, device: str, options: ScoringOptions, n_threads: int,
                 counter: Any = None, detection: DetectionOptions | None = None) -> None:
        import torch

        torch.set_num_threads(max(1, n_threads))
        self.options = options
        self.counter = counter  # told the rows of each batch, for the driver's progress display
        self.precomputed = model is None
        self.detection = detection
        self.detector: Any = None
        if detection is not None and model is not None:
            from alray.stages.score_detection import load_detection_model

            self.detector = load_detection_model(model)
            self.detector.to(pick_device(device))
            self.options = ScoringOptions(**{**options.__dict__, "device": str(pick_device(device))})
        if model is None or detection is not None:  # the pool holds its embeddings and predictions
            return
        resolved = pick_device(device)
        self.model = load_configured_model(model)
        self.model.to(resolved)
        self.text_encoder: TextEncoder | None = text_encoder_for(self.model, device=str(resolved))
        self.options = ScoringOptions(**{**options.__dict__, "device": str(resolved)})

    def __call__(self, batch: pa.Table) -> pa.Table:
        fail_once("score.actor", kill=True)
        if self.detection is not None:
            from alray.stages.score_detection import score_detections

            scored = score_detections(self.detector, batch, self.options, self.detection)
        elif self.precomputed:
            scored = score_precomputed(batch, run_id=self.options.run_id, embedding_dim=self.options.embedding_dim)
        else:
            scored = score_decoded(self.model, batch, self.options, text_encoder=self.text_encoder)
        if self.counter is not None:
            self.counter.add.remote(batch.num_rows)
        return scored


def _absolute(path: str) -> str:
    # Ray workers may run in another working directory: hand them absolute paths.
    return path if "://" in path else os.path.abspath(path)


def check_inputs(pool: PoolConfig, model_config: ModelConfig | None, *, staging: str | None = None,
                 selection: SelectionConfig | None = None) -> tuple[PoolSource, str, InputSpec | None]:
    """Check the pool and the checkpoint before any engine starts; return the resolved pool, its payload
    and what the model takes (None without a model).

    ``staging`` is where an ``images`` pool's listing is written (the run's staging in the lake).
    """
    source = open_checked_pool(pool, staging=staging, precomputed=model_config is None)
    schema, payload = source.schema, source.payload
    check_metadata_names(source, {"id", payload, *(PRECOMPUTED_COLUMNS if model_config is None else ())})
    if model_config is None:
        _check_scores_available(selection, available_scores(schema.names),
                                has_predictions=bool({"probs", "logits", "mc_probs"} & set(schema.names)),
                                source=f"pool {pool.path} has no model and no such column")
        return source, payload, None
    model = load_configured_model(model_config)
    try:
        check_payload_fits(payload, model.input_kind)
    except PayloadError as exc:
        raise InputError(f"pool {pool.path}: {exc} (model.checkpoint {model_config.checkpoint})") from None
    if model.n_classes == 0:
        _check_scores_available(selection, set(), has_predictions=False,
                                source=f"model.checkpoint {model_config.checkpoint} gives embeddings only")
    elif not model.has_loss_head:
        _check_scores_available(selection, set(MC_SCORES), has_predictions=True,
                                source=f"model.checkpoint {model_config.checkpoint} has no loss head")
    return source, payload, InputSpec.of(model)


def _check_scores_available(selection: SelectionConfig | None, available: set[str], *, has_predictions: bool,
                            source: str) -> None:
    """Refuse a selection that reads a score (or the predictions) the run cannot give; name the key that asks."""
    if selection is None:
        return
    missing = {*MC_SCORES, "pred_loss"} - available
    if not has_predictions:
        missing.add(PREDICTIONS)
    for key, column in keyed_inputs(selection):
        if column in missing:
            need = ("a model (model.checkpoint) or mc_probs in the pool" if column in MC_SCORES
                    else "a model (model.checkpoint) or probs, logits or mc_probs in the pool")
            if column == "pred_loss":
                need = "a model with a loss head (model.checkpoint)"
            raise ConfigError(f"{key}: {column!r} needs {need}; {source}")


def check_actor_cpus(score: ScoreConfig, ray_config: RayConfig) -> None:
    """Refuse an actor pool that leaves no local CPU to read the pool (:func:`check_leaves_a_read_cpu`)."""
    check_leaves_a_read_cpu(ray_config, section="score", count_key="num_actors", count=score.num_actors,
                            per_key="cpus_per_actor", per=score.cpus_per_actor, task_cpus=score.cpus_per_decode_task)


def decode_rows_for(spec: InputSpec | None, batch_size: int, block_rows: int) -> int:
    """Rows a decode task takes: the pool's block (``block_rows``, a multiple of ``batch_size``) while
    its decoded inputs stay under ``DECODED_BATCH_BYTES``, else fewer, down to one batch.

    A Ray task costs some milliseconds beyond its work (15-30 ms on a busy 2-CPU machine): decoding
    a features pool a batch of 256 rows per task, that cost was the decoding, and held the stage to
    7,400 rows/s where the model scores 16,000.
    """
    if spec is None:
        return batch_size
    row_bytes = 4 * math.prod(spec.shape) if spec.kind != "text" else 0
    return max(batch_size, min(block_rows, whole_batches(DECODED_BATCH_BYTES, row_bytes, batch_size)))


def score_dataset(dataset: Any, model: ModelConfig | None, score: ScoreConfig, options: ScoringOptions,
                  spec: InputSpec | None = None, counter: Any = None,
                  detection: DetectionOptions | None = None, decode_batch_rows: int | None = None) -> Any:
    """A Ray Dataset of pool rows scored: the features rows (with a reject reason column).

    Ray tasks decode the payloads into model inputs (image decoding, resizing, quality metrics: CPU
    work), handed on as arrays, and an actor pool holding the model scores them: so an actor, on a GPU
    or a CPU, does tensor work only. ``model`` and ``score`` are the config's sections; ``options`` says
    which payload column to decode, the seed and the run id; ``spec`` what the model takes (read from
    the checkpoint when not given); ``counter`` (:func:`alray.engines.ray_row_counter`) is told the
    rows of each batch; ``detection``, a detection run's options; ``decode_batch_rows``, the rows of a
    decode task (:func:`decode_rows_for`; default one batch). Lazy, as Ray Datasets are: nothing
    runs until it is consumed.
    """
    from ray.data import ActorPoolStrategy

    if model is not None:
        spec = spec or InputSpec.of(load_configured_model(model))
        # Resources as a function: Ray Data then never fuses the decoding into the actors (it would,
        # into an actor pool of the same CPUs, and the actors would decode again).
        cpus = score.cpus_per_decode_task
        dataset = dataset.map_batches(decode_pool_batch, fn_kwargs={"spec": spec, "options": options},
                                      batch_size=decode_batch_rows or score.batch_size, batch_format="pyarrow",
                                      ray_remote_args_fn=lambda: {"num_cpus": cpus})
    return dataset.map_batches(
        PoolScorer,
        fn_constructor_kwargs={
            "model": model.model_copy(update={"checkpoint": _absolute(model.checkpoint)}) if model else None,
            "device": model.device if model and score.gpus_per_actor > 0 else "cpu",
            "options": options,
            "n_threads": int(max(1, score.cpus_per_actor)),
            "counter": counter,
            "detection": detection,
        },
        batch_size=score.batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=score.num_actors),
        num_cpus=score.cpus_per_actor,
        num_gpus=score.gpus_per_actor or None,
    )


def write_staged(scored: Any, staging: str, rows_per_file: int, *, writers: int = 1, write_cpus: float = 0,
                 storage_options: StorageOptions = None) -> None:
    """Write a Dataset of scored rows as parquet files of ``rows_per_file`` to ``2 * rows_per_file`` rows
    under ``staging`` (a local folder or an object store URL), as the rows come, by at most
    ``writers`` tasks at once, each reserving ``write_cpus``.

    Without a floor, Ray writes one file per block: thousands of files for a million rows, each
    then split and committed on its own; without a ceiling, a file grows with the pool, and so does
    the memory of the task that splits it. On a local instance the write tasks reserve no CPU: with
    a CPU each, on a machine whose actors and decode tasks held every CPU, Ray Data never found one
    free for them, and the scored rows waited in the object store until the last batch was scored
    (10M rows: 5.9 GiB of it, then written at the end). On a cluster they keep a CPU, so that none
    lands on a head node started with no CPUs for tasks (as ``k8s/`` starts it).
    """
    filesystem, target = None, staging
    if "://" in staging:  # an object store: Ray's writers take the file system and the bare path
        filesystem, target = filesystem_for(staging, storage_options)
    scored.write_parquet(target, filesystem=filesystem, min_rows_per_file=rows_per_file,
                         max_rows_per_file=2 * rows_per_file, ray_remote_args={"num_cpus": write_cpus},
                         concurrency=writers)


@contextlib.contextmanager
def tasks_run_to_the_end() -> Iterator[None]:
    """While the block runs, Ray Data's tasks finish their input instead of pausing when their blocks wait.

    A task streams its output blocks and, by default, pauses once two wait unread, keeping the CPU
    it reserved. On a local instance whose actors hold all CPUs but one, a pool read paused that way
    (its blocks waiting for the decode tasks) held the last CPU, and the decode and write tasks could
    not start: on 2 CPUs a 3M-row pool stalled at 180,000 rows, 1,000 rows/s, where it runs at 9,000.
    A task's output is one input's worth (a pool file's blocks, a batch), so running to the end
    holds at most that per running task beyond Ray Data's budget; Ray Data still launches no task
    whose output would not fit downstream.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    before = context._max_num_blocks_in_streaming_gen_buffer
    context._max_num_blocks_in_streaming_gen_buffer = None  # type: ignore[assignment]  # None: no pause
    try:
        yield
    finally:
        context._max_num_blocks_in_streaming_gen_buffer = before


def run_score(pool: PoolConfig, model: ModelConfig | None, score: ScoreConfig, ray_config: RayConfig, *, seed: int,
              run_id: str, lake: Lake, progress: Progress, score_basis: str, incremental: bool,
              selection: SelectionConfig | None = None, detection: DetectionConfig | None = None) -> ScoreResult:
    """Score the pool on Ray and replace this run's rows of the features, rejects and pool_rows tables (and,
    in a detection run that selects objects, of the objects table).

    Takes the config's ``pool``, ``model``, ``score`` and ``ray`` sections, the run seed and, for a
    detection run (``task: detection``), its ``detection`` section; ``score_basis`` is the config's
    score hash without the pool version. With ``incremental``, only the rows new or changed since the
    last run with the same score key are scored, the others carried over (:mod:`alray.stages.incremental`).
    """
    staging_pool = _absolute(lake.staging(run_id, "pool"))
    detection_options = None
    with progress.phase("score", "check"):
        if detection is not None:
            from alray.stages.score_detection import prepare_detection

            source, payload, spec, detection_options = prepare_detection(pool, model, detection,
                                                                         staging=staging_pool, selection=selection)
        else:
            source, payload, spec = check_inputs(pool, model, staging=staging_pool, selection=selection)
    with progress.phase("score", "ray"):
        ensure_ray(ray_config)
    check_actor_cpus(score, ray_config)
    options = ScoringOptions(payload=payload, mc_samples=score.mc_samples, seed=seed, run_id=run_id,
                             head_only=score.mc_mode == "head", max_image_pixels=score.max_image_pixels,
                             embedding_dim=embedding_width(source) if model is None else None,
                             storage_options=pool.storage_options or None)
    staging = _absolute(lake.staging(run_id, "features"))
    ensure_dir(os.path.dirname(staging))
    passes = (f"T={score.mc_samples} ({score.mc_mode} MC dropout)" if detection is None
              else f"detection, extra passes: {detection.samples}")
    progress.say(f"score: pool {source.path} ({source.format}), {score.num_actors} actor(s), {passes}")
    # Blocks of one batch, or of about a MiB when a batch is smaller: a worker's memory follows
    # the batch size, not the pool's, and a small pool's blocks still spread over the actors.
    block_rows = block_rows_for(source, score.batch_size)
    with progress.phase("score", "changes"):
        key = score_key(score_basis, model, source, options.embedding_dim)
        # A detection run's sample scores (box_instability) still move in their last bits with the batch an
        # image is in: its carried rows would not be a rescore's to the bit, so it scores every row.
        increment = plan_increment(source, lake, run_id, key=key, incremental=incremental and detection is None,
                                   rows_per_batch=block_rows)
    if increment.base_run is not None:
        progress.say(f"score: incremental, against run {increment.base_run}: {increment.n_files_read} of "
                     f"{increment.n_files} pool files new or changed")
    if increment.to_score is not None:
        with progress.phase("score", "model"), tasks_run_to_the_end():  # before the Dataset copies the context
            dataset = read_pool(increment.to_score, rows_per_block=block_rows, skip_ids=increment.skip_ids)
            rows_per_file = max(score.batch_size, ROWS_PER_STAGED_FILE)
            progress.rows(0, total=increment.n_to_score)
            with ray_row_counter(progress.rows) as counter:
                scored = score_dataset(dataset, model, score, options, spec, counter=counter,
                                       detection=detection_options,
                                       decode_batch_rows=decode_rows_for(spec, score.batch_size, block_rows))
                write_staged(scored, staging, rows_per_file, writers=score.num_actors,
                             write_cpus=0 if ray_config.address is None else 1,
                             storage_options=lake.storage_options)
    with progress.phase("score", "split"):
        split = split_staged(staging, run_id, lake, reject_column=REJECT_REASON)
    with progress.phase("score", "commit"):
        result = commit_split(split, run_id, lake, carried=(increment.carried_features, increment.carried_rejects))
        fail_once("score.before_pool_rows", kill=True)
        lake.commit_files("pool_rows", increment.pool_rows, run_id, schema=pool_rows_schema(lake))
    result = dataclasses.replace(result, n_reused=increment.n_reused, reused_from=increment.base_run, score_key=key)
    reused = f", {result.n_reused} of them carried over" if increment.base_run is not None else ""
    objects = "" if result.n_objects is None else f"; {result.n_objects} objects"
    progress.say(f"score: {result.n_scored} scored, {result.n_rejected} rejected of {result.n_pool}{reused}{objects}")
    if result.n_pool == 0:
        raise InputError(f"pool {pool.path}: the pool is empty")
    bad_fraction = result.n_rejected / result.n_pool
    if bad_fraction > score.max_bad_fraction:
        raise InputError(
            f"pool {pool.path}: {result.n_rejected} of {result.n_pool} rows rejected "
            f"({bad_fraction:.1%} > score.max_bad_fraction {score.max_bad_fraction:.1%}); see the rejects table"
        )
    return result
