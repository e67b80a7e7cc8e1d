"""``alray train``: fit a classification head on a frozen encoder from the labeled set.

After a cold-start round the lake holds the encoder's embeddings of the pool (the features of a
run whose model gave embeddings only) and the team has labeled some of the picks: the lake's
``labels`` table holds them (``alray import-labels``, read with ``labeled.from_lake``), or
``labeled.path`` their ``id`` and ``label``. This fits a linear head with dropout on those samples'
embeddings (read from the features table, never recomputed) and saves an alray checkpoint of
:class:`~alray.models.encoder_head.EncoderHead` that names the encoder; the next round's
``model.checkpoint`` is that file, so it scores uncertainty (BALD and the rest) with the same
encoder.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from alray.config import Config
from alray.errors import ConfigError, InputError
from alray.lake import Lake
from alray.lake.inputs import read_columns
from alray.lake.labels import current_labels, read_labels
from alray.strategies.base import embedding_matrix


@dataclass
class TrainSummary:
    """What ``alray train`` did."""

    checkpoint: str
    encoder: str
    features_run: str
    n_labeled: int
    n_used: int
    classes: list[str]
    train_accuracy: float
    seconds: float


def features_run(lake: Lake, encoder: str, run_id: str | None) -> str:
    """The run whose features to train on: ``run_id``, else the latest succeeded run scored with ``encoder``."""
    runs = lake.read_table("runs", columns=["run_id", "status", "started_at", "config"])
    rows = sorted(runs.to_pylist(), key=lambda r: r["started_at"], reverse=True)
    if run_id is not None:
        if not any(r["run_id"] == run_id for r in rows):
            raise InputError(f"train.run_id {run_id!r}: not in the runs table under {lake.root}")
        return run_id
    for row in rows:
        model = json.loads(row["config"] or "{}").get("model") or {}
        if row["status"] == "succeeded" and model.get("checkpoint") == encoder:
            return str(row["run_id"])
    raise InputError(f"model.checkpoint {encoder}: no succeeded run in {lake.root} scored the pool with it; "
                     "run `alray run` with it first (or set train.run_id)")


def training_labels(config: Config, lake: Lake) -> tuple[dict[str, str], str]:
    """Each labeled id's label, and where they came from (for messages): ``labeled.path`` (``id``, ``label``)
    and, with ``labeled.from_lake``, the lake's labels table (each id's latest label, which wins over the
    path's). ConfigError when neither gives a label."""
    label_of: dict[str, str] = {}
    sources = []
    if config.labeled.path:
        table = read_columns(config.labeled.path, config.labeled.format, ["id", "label"], name="labeled.path",
                             storage_options=config.labeled_storage_options())
        ids, labels = table.column("id").combine_chunks().cast(pa.string()), table.column("label").combine_chunks()
        if labels.null_count:
            raise InputError(f"labeled.path {config.labeled.path}: {labels.null_count} rows have no label")
        label_of.update(zip(ids.to_pylist(), [str(v) for v in labels.to_pylist()], strict=True))
        sources.append(f"labeled.path {config.labeled.path}")
    if config.labeled.from_lake:
        latest = current_labels(read_labels(lake))
        label_of.update((row["id"], str(row["label"])) for row in latest if row["label"] is not None)
        if latest:
            sources.append(f"the labels table of {lake.root}")
    if not label_of:
        raise ConfigError("labeled.path: alray train needs labels: the labeled set (columns id and label) or, with "
                          "labeled.from_lake, labels imported into the lake (alray import-labels)")
    return label_of, " and ".join(sources)


def train(config: Config) -> TrainSummary:
    """Fit and save the head (module docstring); InputError/ConfigError naming what is missing."""
    from alray.models import load_model, save_checkpoint
    from alray.models.encoder_head import EncoderHead
    from alray.training import train_head

    start = time.perf_counter()
    if config.model is None:
        raise ConfigError("model.checkpoint: alray train needs the encoder the features were scored with")
    if config.task == "detection":  # its labels are lists of boxes (alray import-labels), not classes
        raise ConfigError("task: alray train fits a classification head; task detection has box labels")
    lake = Lake.from_output(config.output)
    label_of, source = training_labels(config, lake)
    encoder = config.model.checkpoint
    run_id = features_run(lake, encoder, config.train.run_id)
    features = lake.read_run("features", run_id, columns=["id", "embedding"])
    features = features.filter(pc.is_valid(features.column("embedding")))
    position = {i: j for j, i in enumerate(features.column("id").to_pylist())}
    used = sorted(i for i in label_of if i in position)
    classes = sorted({label_of[i] for i in used})
    if len(classes) < 2:
        raise InputError(f"{source}: {len(used)} of its {len(label_of)} ids have "
                         f"embeddings in run {run_id}, with {len(classes)} class(es); a head needs at least 2")
    x = np.array(embedding_matrix(features.take(pa.array([position[i] for i in used], pa.int64()))))  # writable
    y = np.array([classes.index(label_of[i]) for i in used])
    settings = config.train
    layer = train_head(x, y, n_classes=len(classes), dropout=settings.dropout, epochs=settings.epochs,
                       learning_rate=settings.learning_rate, seed=config.run.seed)
    model_config = config.model
    model = EncoderHead(str(Path(encoder).resolve()) if "://" not in encoder else encoder, x.shape[1],
                        len(classes), dropout=settings.dropout, classes=classes, encoder_format=model_config.format,
                        image_size=model_config.image_size, max_tokens=model_config.max_tokens)
    model.classifier.load_state_dict(layer.state_dict())
    if settings.output is None and "://" in lake.root:
        raise ConfigError(f"train.output: the lake {lake.root} is on an object store; give a local path for the "
                          "checkpoint (model.checkpoint files are read from local disk)")
    path = settings.output or f"{lake.root}/models/head-{run_id}.pt"
    with torch.no_grad():
        accuracy = float((layer(torch.as_tensor(x)).argmax(1).numpy() == y).mean())
    save_checkpoint(model, path, metadata={"encoder": encoder, "features_run": run_id, "classes": classes,
                                           "n_labeled": len(used), "train_accuracy": accuracy,
                                           "labeled_path": config.labeled.path, "labels": source})
    # a checkpoint that does not load back is no checkpoint: check before saying it exists
    load_model(path)
    return TrainSummary(checkpoint=path, encoder=encoder, features_run=run_id, n_labeled=len(label_of),
                        n_used=len(used), classes=classes, train_accuracy=accuracy,
                        seconds=time.perf_counter() - start)


def summary_json(summary: TrainSummary) -> str:
    """One JSON line."""
    return json.dumps(asdict(summary), sort_keys=True)
