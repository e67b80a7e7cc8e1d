"""The embed stage on Ray Train: train a self-supervised image encoder on the pool, or reuse the
one an earlier run trained with the same pool and settings.

The pool is read and decoded by Ray Data tasks and streamed to ``embed.num_workers``
data-parallel workers (``get_dataset_shard``), never loaded whole. Each epoch, rank 0 reports a
checkpoint (weights, optimiser, loss curve) to Ray Train's storage under the encoders folder of
the lake, so a killed worker (Ray Train restarts the group) or a rerun of the same config (Ray
Train restores the run of that name) resumes after the last finished epoch. The trained encoder
is saved as an alray checkpoint, ``ENCODERS/KEY/encoder.pt``, with its metadata; KEY hashes the
pool and the training settings, and a later run with the same KEY reuses that file.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from alray.config import Config, EmbedConfig, ModelConfig, OutputConfig, PoolConfig, RayConfig
from alray.engines import check_leaves_a_read_cpu, ensure_ray
from alray.errors import ConfigError, InputError
from alray.faults import fail_once, is_armed
from alray.lake import filesystem_for
from alray.lake.filesystems import join_path
from alray.models import id_keys, load_checkpoint, save_checkpoint
from alray.models.encoders import ConvEncoder
from alray.payloads import PayloadError, decode_image, read_uri
from alray.progress import Progress
from alray.stages.pool_source import PoolSource, block_rows_for, open_pool, read_pool

ENCODER_FILE = "encoder.pt"
# The training state each epoch's checkpoint holds (tensors and primitives: read weights_only).
STATE_FILE = "state.pt"
# Table formats whose file list names the pool's contents (a new version, new files: a new key).
_LISTED_FORMATS = ("parquet", "delta", "iceberg")
# The settings that shape the encoder; the rest (where it goes, how many CPUs, retries, the
# device) do not enter its key.
_NOT_IN_KEY = ("output", "cpus_per_worker", "max_failures", "use_gpu")
# Twice Ray Train's default health-check interval (see train_loop's failpoint).
_REGISTRATION_WAIT_S = 4.0


@dataclass
class EncoderResult:
    """An encoder trained or reused: where it is and how it was trained."""

    path: str
    key: str
    reused: bool
    epochs: int
    loss_curve: list[float] = field(default_factory=list)
    images_per_s: list[float] = field(default_factory=list)
    resumed_at: list[int] = field(default_factory=list)
    n_skipped: int = 0
    wall_s: float = 0.0


def encoders_root(embed: EmbedConfig, output: OutputConfig) -> str:
    """The folder of the encoders: ``embed.output``, else ``OUTPUT/encoders``."""
    root = embed.output or join_path(output.path, "encoders")
    return root if "://" in root else os.path.abspath(root)


def encoder_key(pool: PoolConfig, source: PoolSource, embed: EmbedConfig) -> str:
    """Hash of what the encoder depends on: the pool (its section and, for tables, its files)
    and the training settings; 16 hex digits."""
    settings = embed.model_dump(mode="json", exclude=set(_NOT_IN_KEY))
    # Credentials are not the pool's identity (and must not be hashed into a folder name).
    described = pool.model_dump(mode="json", exclude={"storage_options": True, "catalog": {"properties"}})
    identity: dict[str, Any] = {"pool": described, "embed": settings}
    if source.format in _LISTED_FORMATS:
        identity["files"] = [os.path.basename(f) if "://" not in f else f for f in source.files]
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def check_worker_cpus(embed: EmbedConfig, ray_config: RayConfig) -> None:
    """Refuse training workers that leave no local CPU to read the pool (:func:`check_leaves_a_read_cpu`)."""
    check_leaves_a_read_cpu(ray_config, section="embed", count_key="num_workers", count=embed.num_workers,
                            per_key="cpus_per_worker", per=embed.cpus_per_worker)


def decode_for_training(batch: pa.Table, *, payload: str, channels: int, size: int,
                        storage_options: dict[str, str] | None) -> dict[str, np.ndarray]:
    """Ray Data task: pool rows to ``key`` (n,) int64 (the bits of :func:`~alray.models.id_keys`),
    ``pixels`` (n, C, S, S) float32 in 0..1 and ``valid`` (n,) bool; a row whose payload cannot
    be decoded is zeros and not valid (the workers count and skip it; the score stage says why)."""
    ids = batch.column("id").to_pylist()
    pixels = np.zeros((len(ids), channels, size, size), dtype=np.float32)
    valid = np.zeros(len(ids), dtype=bool)
    for row, value in enumerate(batch.column(payload).to_pylist()):
        try:
            data = value if payload == "image" else read_uri(value, storage_options=storage_options)
            pixels[row] = decode_image(data, channels=channels, size=size).pixels
            valid[row] = True
        except PayloadError:
            continue
    return {"key": id_keys(ids).view(np.int64), "pixels": pixels, "valid": valid}


def training_dataset(source: PoolSource, embed: EmbedConfig, *, storage_options: dict[str, str] | None) -> Any:
    """The Ray Dataset of decoded pool images the workers stream (lazy; read on the workers)."""
    if source.payload not in ("image", "uri"):
        raise InputError(f"pool {source.path}: self-supervised training needs images (an 'image' or 'uri' column), "
                         f"found a {source.payload!r} payload")
    per_worker = max(2, embed.batch_size // embed.num_workers)
    dataset = read_pool(source, rows_per_block=block_rows_for(source, per_worker))
    decode = functools.partial(decode_for_training, payload=source.payload, channels=embed.channels,
                               size=embed.image_size, storage_options=storage_options)
    # Tasks, not actors: an actor would hold a CPU for the whole run that the reads then lack.
    return dataset.select_columns(["id", source.payload]).map_batches(decode, batch_format="pyarrow",
                                                                      batch_size=per_worker)


def new_encoder(embed: EmbedConfig) -> ConvEncoder:
    """The untrained encoder ``embed`` describes (its weights from ``embed.seed``)."""
    import torch

    torch.manual_seed(embed.seed)
    return ConvEncoder(in_channels=embed.channels, image_size=embed.image_size, width=embed.width)


def train_loop(loop_config: dict[str, Any]) -> None:
    """What each Ray Train worker runs: resume from the last checkpoint if there is one, then
    train the remaining epochs on this worker's shard, rank 0 reporting a checkpoint each epoch."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from alray.ssl import Augment, AugmentParams, NTXentLoss, SimCLR, cosine_learning_rate, train_epoch

    embed = EmbedConfig.model_validate(loop_config["embed"])
    updates = loop_config.get("updates")
    torch.set_num_threads(max(1, int(embed.cpus_per_worker)))
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    model = SimCLR(new_encoder(embed), projection_dim=embed.projection_dim)
    optimizer = torch.optim.AdamW(model.parameters(), lr=embed.learning_rate, weight_decay=embed.weight_decay)
    history: dict[str, Any] = {"epoch": 0, "loss_curve": [], "images_per_s": [], "resumed_at": [], "skipped": 0}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(os.path.join(folder, STATE_FILE), map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = state["history"]
        history["resumed_at"] = [*history["resumed_at"], history["epoch"]]
    # DistributedDataParallel (gloo on CPU, NCCL on GPU) on the worker's device; it broadcasts
    # rank 0's weights, so every worker starts from the same ones.
    ddp = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    augment = Augment(AugmentParams(**embed.augment.model_dump()))
    loss = NTXentLoss(embed.temperature)
    shard = ray.train.get_dataset_shard("train")
    per_worker = max(2, embed.batch_size // world)
    for epoch in range(int(history["epoch"]), embed.epochs):
        for group in optimizer.param_groups:
            group["lr"] = cosine_learning_rate(embed.learning_rate, epoch, embed.epochs)
        begin = time.perf_counter()
        batches = shard.iter_torch_batches(batch_size=per_worker, drop_last=True,
                                           local_shuffle_buffer_size=4 * per_worker,
                                           local_shuffle_seed=embed.seed * 100_003 + epoch * 101 + rank)
        totals = train_epoch(ddp, optimizer, batches, augment=augment, loss=loss, seed=embed.seed, epoch=epoch,
                             device=device)
        sums = torch.tensor([totals.loss_sum, totals.steps, totals.images, totals.skipped], dtype=torch.float64)
        elapsed = torch.tensor([time.perf_counter() - begin], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(sums)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        loss_sum, steps, images, skipped = sums.tolist()
        mean_loss = loss_sum / steps if steps else float("nan")
        throughput = images / max(float(elapsed.item()), 1e-9)
        history = {**history, "epoch": epoch + 1, "loss_curve": [*history["loss_curve"], mean_loss],
                   "images_per_s": [*history["images_per_s"], throughput], "skipped": int(skipped)}
        metrics = {"epoch": epoch + 1, "loss": mean_loss, "images_per_s": throughput, "images": int(images),
                   "skipped": int(skipped)}
        if rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "history": history,
                            "params": dict(model.encoder.params)}, os.path.join(folder, STATE_FILE))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                                 checkpoint_dir_name=f"epoch-{epoch + 1:04d}")
            if updates is not None:
                updates.put(metrics)
        else:
            ray.train.report(metrics)
        if is_armed("embed.after_checkpoint"):
            # Ray Train's controller registers a report when it next polls the workers (every 2 s
            # by default); a worker that dies before that loses the checkpoint and its epoch is
            # redone. The fault test kills after the registration, so that it knows what resumes.
            time.sleep(_REGISTRATION_WAIT_S)
        fail_once("embed.after_checkpoint", kill=True)


def train_or_reuse(pool: PoolConfig, embed: EmbedConfig, output: OutputConfig, ray_config: RayConfig, *,
                   progress: Progress | None = None) -> EncoderResult:
    """The encoder of ``embed`` on ``pool``: reused when ``ENCODERS/KEY/encoder.pt`` exists,
    else trained on Ray Train (resuming from the run's last checkpoint, if any) and saved there."""
    progress = progress or Progress(quiet=True)
    begin = time.perf_counter()
    source = open_pool(pool, staging=tempfile.mkdtemp(prefix="alray-embed-listing-"))
    key = encoder_key(pool, source, embed)
    root = encoders_root(embed, output)
    target = join_path(root, key, ENCODER_FILE)
    storage = output.storage_options or None
    existing = _fetch_encoder(target, storage)
    if existing is not None:
        metadata = existing
        progress.say(f"embed: reused encoder {target} (key {key}, {metadata['epochs']} epochs, final loss "
                     f"{metadata['loss_curve'][-1]:.4f}); no training")
        return EncoderResult(path=target, key=key, reused=True, epochs=int(metadata["epochs"]),
                             loss_curve=list(metadata["loss_curve"]), images_per_s=list(metadata["images_per_s"]),
                             resumed_at=list(metadata.get("resumed_at", [])),
                             n_skipped=int(metadata.get("skipped", 0)), wall_s=time.perf_counter() - begin)
    ensure_ray(ray_config)
    check_worker_cpus(embed, ray_config)
    progress.say(f"embed: training encoder {key} on pool {source.path} ({source.format}) with "
                 f"{embed.num_workers} Ray Train worker(s), {embed.epochs} epochs, batch {embed.batch_size}, "
                 f"{embed.image_size}px; checkpoints under {join_path(root, key)}")
    state, checkpoint_path = _fit(source, embed, key=key, root=root, storage_options=pool.storage_options or None,
                                  progress=progress)
    history = state["history"]
    encoder = ConvEncoder(**state["params"])
    encoder.load_state_dict({k[len("encoder."):]: v for k, v in state["model"].items() if k.startswith("encoder.")})
    metadata = {
        "kind": "self-supervised encoder", "objective": "simclr-nt-xent", "pool": pool.path,
        "pool_format": pool.format, "key": key, "config_hash": key, "epochs": int(history["epoch"]),
        "loss_curve": [float(v) for v in history["loss_curve"]],
        "images_per_s": [float(v) for v in history["images_per_s"]],
        "resumed_at": [int(v) for v in history["resumed_at"]], "skipped": int(history["skipped"]),
        "image_size": embed.image_size, "channels": embed.channels, "embedding_dim": encoder.embedding_dim,
        "num_workers": embed.num_workers, "embed": embed.model_dump(mode="json"),
        "train_checkpoint": checkpoint_path, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    _store_encoder(encoder, target, metadata, storage)
    wall = time.perf_counter() - begin
    return EncoderResult(path=target, key=key, reused=False, epochs=metadata["epochs"],
                         loss_curve=metadata["loss_curve"], images_per_s=metadata["images_per_s"],
                         resumed_at=metadata["resumed_at"], n_skipped=metadata["skipped"], wall_s=wall)


def _fit(source: PoolSource, embed: EmbedConfig, *, key: str, root: str, storage_options: dict[str, str] | None,
         progress: Progress) -> tuple[dict[str, Any], str]:
    """Run the Ray Train job; return the last checkpoint's state and that checkpoint's path."""
    import ray.train
    import torch
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    updates = Queue(actor_options={"num_cpus": 0})
    resources: dict[str, float] = {"CPU": embed.cpus_per_worker}
    if embed.use_gpu:
        resources["GPU"] = 1.0
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"embed": embed.model_dump(mode="json"), "updates": updates},
        scaling_config=ray.train.ScalingConfig(num_workers=embed.num_workers, use_gpu=embed.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=key, storage_path=root,
            failure_config=ray.train.FailureConfig(max_failures=embed.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
        datasets={"train": training_dataset(source, embed, storage_options=storage_options)},
    )
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=fit, name="alray-embed-fit", daemon=True)
    worker.start()
    while worker.is_alive() or not updates.empty():
        try:
            metrics = updates.get(timeout=0.5)
        except queue.Empty:
            continue
        except Exception:  # the queue actor is gone: the fit is ending
            worker.join(timeout=1.0)
            continue
        progress.say(f"embed: epoch {metrics['epoch']}/{embed.epochs}: loss {metrics['loss']:.4f}, "
                     f"{metrics['images_per_s']:.1f} images/s ({metrics['images']} images"
                     + (f", {metrics['skipped']} undecodable rows skipped" if metrics["skipped"] else "") + ")")
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    checkpoint = outcome["result"].checkpoint
    if checkpoint is None:
        raise RuntimeError(f"embed: Ray Train run {key} ended without a checkpoint")
    with checkpoint.as_directory() as folder:
        state = torch.load(os.path.join(folder, STATE_FILE), map_location="cpu", weights_only=True)
    return state, str(checkpoint.path)


def _fetch_encoder(target: str, storage_options: dict[str, str] | None) -> dict[str, Any] | None:
    """The metadata of the encoder at ``target`` when one is there and readable, else None."""
    if "://" not in target:
        if not os.path.exists(target):
            return None
        return dict(load_encoder_metadata(target))
    filesystem, inner = filesystem_for(target, storage_options)
    if filesystem.get_file_info(inner).type.name != "File":
        return None
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, ENCODER_FILE)
        with filesystem.open_input_stream(inner) as source, open(local, "wb") as sink:
            shutil.copyfileobj(source, sink)
        return dict(load_encoder_metadata(local))


def load_encoder_metadata(path: str) -> dict[str, Any]:
    """The metadata an encoder checkpoint was saved with; InputError when it is not one."""
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    metadata = payload.get("metadata") if isinstance(payload, dict) else None
    if not isinstance(metadata, dict) or payload.get("architecture") != "conv_encoder" or "loss_curve" not in metadata:
        raise InputError(f"embed: {path}: not an encoder checkpoint alray embed wrote; move it away to retrain")
    return metadata


def _store_encoder(encoder: ConvEncoder, target: str, metadata: dict[str, Any],
                   storage_options: dict[str, str] | None) -> None:
    """Save the encoder at ``target`` (a local path or an object-store URI), whole or not at all."""
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, ENCODER_FILE)
        save_checkpoint(encoder, local, metadata=metadata)
        load_checkpoint(local)  # what later runs will do; fails here rather than there
        if "://" not in target:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            staged = f"{target}.tmp-{os.getpid()}"
            shutil.copyfile(local, staged)
            os.replace(staged, target)  # a reader never sees half a file
            return
        filesystem, inner = filesystem_for(target, storage_options)
        with open(local, "rb") as source, filesystem.open_output_stream(inner) as sink:
            shutil.copyfileobj(source, sink)


def local_encoder(path: str, storage_options: dict[str, str] | None) -> str:
    """A local path of the encoder at ``path``: itself, or a copy of an object-store one in a temporary folder."""
    if "://" not in path:
        return path
    filesystem, inner = filesystem_for(path, storage_options)
    local = os.path.join(tempfile.mkdtemp(prefix="alray-encoder-"), ENCODER_FILE)
    with filesystem.open_input_stream(inner) as source, open(local, "wb") as sink:
        shutil.copyfileobj(source, sink)
    return local


def with_trained_encoder(config: Config, *, progress: Progress | None = None) -> Config:
    """``config`` with its model the encoder of its ``embed`` section, trained or reused (for a
    run that has ``embed`` and no ``model``: the score stage then embeds with it)."""
    if config.embed is None:
        raise ConfigError("embed: the config has no embed section")
    result = train_or_reuse(config.pool, config.embed, config.output, config.ray, progress=progress)
    checkpoint = local_encoder(result.path, config.output.storage_options or None)
    return config.model_copy(update={"model": ModelConfig(checkpoint=checkpoint)})
