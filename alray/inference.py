"""Score one batch of pool rows with a model: embeddings, MC-dropout scores, quality, rejects.

The Ray stage calls :func:`score_batch` once per batch inside an actor; nothing here knows Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from alray.models import dropout_masks, id_keys, mc_predict
from alray.payloads import PayloadError, decode_image, feature_vector, read_uri
from alray.quality import QUALITY_COLUMNS
from alray.scoring import all_scores

SCORE_COLUMNS = ("entropy", "margin", "least_confidence", "variation_ratio", "bald", "mean_std")
IMAGE_COLUMNS = (*QUALITY_COLUMNS, "size_in_bytes")
REJECT_REASON = "_reject_reason"


def features_schema(metadata: pa.Schema) -> pa.Schema:
    """Schema of a scored batch: the features table of DESIGN.md, the pool metadata, a reject reason."""
    floats = pa.list_(pa.float32())
    fields = [
        pa.field("run_id", pa.string()), pa.field("id", pa.string()),
        pa.field("embedding", floats), pa.field("probs", floats), pa.field("pred", pa.int32()),
        *[pa.field(name, pa.float64()) for name in SCORE_COLUMNS],
        pa.field("pred_loss", pa.float64()),
        *[pa.field(name, pa.float64()) for name in IMAGE_COLUMNS],
        pa.field("channel_mean", floats), pa.field("channel_std", floats),
    ]
    return pa.schema([*fields, *metadata, pa.field(REJECT_REASON, pa.string())])


RESERVED_COLUMNS = frozenset(features_schema(pa.schema([])).names)


@dataclass(frozen=True)
class ScoringOptions:
    """How a batch is scored: payload column, MC samples, seed, device."""

    payload: str
    mc_samples: int
    seed: int
    run_id: str
    device: str = "cpu"
    head_only: bool = True


def _list_column(rows: np.ndarray, ok: np.ndarray) -> pa.Array:
    # rows holds the values of the ok rows only; rejected rows become nulls.
    width = rows.shape[1] if rows.ndim == 2 else 0
    counts = np.where(ok, width, 0)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    values = pa.array(np.ascontiguousarray(rows, dtype=np.float32).ravel(), type=pa.float32())
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~ok))


def _matrix(rows: list[list[float]]) -> np.ndarray:
    return np.array(rows, dtype=np.float32) if rows else np.zeros((0, 0), dtype=np.float32)


def _column(values: np.ndarray, ok: np.ndarray, dtype: pa.DataType) -> pa.Array:
    full = np.zeros(len(ok), dtype=values.dtype if values.size else np.float64)
    full[ok] = values
    return pa.array(full, type=dtype, mask=~ok)


def _model_inputs(model: nn.Module, batch: pa.Table, options: ScoringOptions) -> tuple[
    list[np.ndarray], np.ndarray, list[str | None], dict[str, np.ndarray], list[list[float]], list[list[float]]
]:
    n = batch.num_rows
    reasons: list[str | None] = [None] * n
    inputs: list[np.ndarray] = []
    ok = np.zeros(n, dtype=bool)
    quality = {name: np.zeros(n) for name in IMAGE_COLUMNS}
    channel_mean: list[list[float]] = []
    channel_std: list[list[float]] = []
    column = batch.column(options.payload).to_pylist()
    is_image = getattr(model, "input_kind", "image") == "image"
    if options.payload == "text":
        raise PayloadError("text payloads need the text embedder extra")
    for i, value in enumerate(column):
        try:
            if options.payload == "features":
                if is_image:
                    raise PayloadError("features: the model takes images, the pool has feature vectors")
                inputs.append(feature_vector(value, n_features=int(model.n_features)))  # type: ignore[arg-type]
            else:
                if not is_image:
                    raise PayloadError(f"{options.payload}: the model takes feature vectors, not images")
                data = read_uri(value) if options.payload == "uri" else value
                decoded = decode_image(data, channels=int(model.in_channels),  # type: ignore[arg-type]
                                       size=int(model.image_size))  # type: ignore[arg-type]
                inputs.append(decoded.pixels)
                for name in IMAGE_COLUMNS:
                    quality[name][i] = decoded.quality[name]
                channel_mean.append(decoded.channel_mean)
                channel_std.append(decoded.channel_std)
            ok[i] = True
        except PayloadError as exc:
            reasons[i] = str(exc)
    return inputs, ok, reasons, quality, channel_mean, channel_std


def score_batch(model: nn.Module, batch: pa.Table, options: ScoringOptions) -> pa.Table:
    """Score a batch of pool rows.

    Parameters
    ----------
    model : a built-in model in eval mode, on ``options.device``
    batch : pool rows: ``id``, the payload column, metadata columns
    options : scoring options

    Returns
    -------
    pyarrow.Table with :func:`features_schema` and one row per input row, in input order;
    rows that could not be used have null scores and a reject reason.
    """
    ids = [str(i) for i in batch.column("id").to_pylist()]
    inputs, ok, reasons, quality, channel_mean, channel_std = _model_inputs(model, batch, options)
    n_classes = int(model.n_classes)  # type: ignore[arg-type]
    width = int(model.classifier.in_features)  # type: ignore[union-attr, arg-type]
    ok_ids = [ids[i] for i in np.flatnonzero(ok)]
    if inputs:
        device = torch.device(options.device)
        x = torch.from_numpy(np.stack(inputs)).to(device)
        masks = dropout_masks(id_keys(ok_ids), n_samples=options.mc_samples, width=width,
                              p=float(model.dropout_p), seed=options.seed)  # type: ignore[arg-type]
        embedding_t, mc_probs_t = mc_predict(model, x, torch.from_numpy(masks).to(device),
                                             head_only=options.head_only)
        embedding = embedding_t.float().cpu().numpy()
        scores = all_scores(mc_probs_t.double().cpu().numpy())
        non_finite = ~np.isfinite(embedding).all(axis=1)
        for j in np.flatnonzero(non_finite):
            reasons[int(np.flatnonzero(ok)[j])] = "model: non-finite embedding"
    else:
        embedding = np.zeros((0, width), dtype=np.float32)
        scores = {name: np.zeros(0) for name in SCORE_COLUMNS}
        scores["probs"] = np.zeros((0, n_classes))
        scores["pred"] = np.zeros(0, dtype=np.int64)
    is_image = options.payload in ("image", "uri")
    image_ok = ok if is_image else np.zeros(len(ok), dtype=bool)
    metadata = batch.drop_columns([c for c in ("id", options.payload) if c in batch.column_names])
    schema = features_schema(metadata.schema)
    columns: dict[str, pa.Array] = {
        "run_id": pa.array([options.run_id] * len(ids), type=pa.string()),
        "id": pa.array(ids, type=pa.string()),
        "embedding": _list_column(embedding, ok),
        "probs": _list_column(scores["probs"], ok),
        "pred": _column(scores["pred"].astype(np.int32), ok, pa.int32()),
        **{name: _column(scores[name], ok, pa.float64()) for name in SCORE_COLUMNS},
        "pred_loss": pa.nulls(len(ids), type=pa.float64()),
        **{name: _column(quality[name][image_ok], image_ok, pa.float64()) for name in IMAGE_COLUMNS},
        "channel_mean": _list_column(_matrix(channel_mean), image_ok),
        "channel_std": _list_column(_matrix(channel_std), image_ok),
    }
    for name in metadata.column_names:
        columns[name] = metadata.column(name).combine_chunks()
    columns[REJECT_REASON] = pa.array(reasons, type=pa.string())
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
