"""Score one batch of pool rows with a model: embeddings, MC-dropout scores, predicted loss,
quality, rejects.

The Ray stage calls :func:`score_batch` once per batch inside an actor; nothing here knows Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from alray.models import Prediction, TaskModel, id_keys, mc_predict
from alray.payloads import (
    DEFAULT_MAX_IMAGE_PIXELS,
    PayloadError,
    TextEncoder,
    decode_image,
    feature_vector,
    load_text_encoder,
    max_image_bytes,
    read_uri,
    text_value,
)
from alray.scoring import all_scores_torch
from alray.tables import IMAGE_COLUMNS, MC_SCORES, REJECT_REASON, features_schema

# Which model input kind each payload column feeds.
PAYLOAD_INPUT_KIND = {"image": "image", "uri": "image", "features": "features", "text": "text"}


def check_payload_fits(payload: str, input_kind: str) -> None:
    """Raise PayloadError when a pool payload column cannot feed a model of ``input_kind``."""
    wanted = PAYLOAD_INPUT_KIND.get(payload)
    if wanted != input_kind:
        raise PayloadError(f"{payload}: the model takes {input_kind} inputs, the pool has {payload} payloads")


def text_encoder_for(model: TaskModel, *, device: str = "cpu") -> TextEncoder | None:
    """What turns texts into ``model``'s inputs: its own tokenizer (``tokenize``), the text encoder
    it names, or None for a model that takes no texts."""
    if model.input_kind != "text":
        return None
    tokenize = getattr(model, "tokenize", None)
    if callable(tokenize):
        return tokenize  # type: ignore[no-any-return]
    return load_text_encoder(model.text_encoder, device=device) if model.text_encoder else None


@dataclass(frozen=True)
class ScoringOptions:
    """How a batch is scored: payload column, MC samples, seed, device, MC mode."""

    payload: str
    mc_samples: int
    seed: int
    run_id: str
    device: str = "cpu"
    head_only: bool = True
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    embedding_dim: int | None = None  # a pool scored without a model: the width of its embeddings
    storage_options: dict[str, str] | None = None  # how `uri` payloads on an object store are read


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


@dataclass
class _Inputs:
    """Decoded rows of a batch: model inputs of the usable rows, reasons of the others, quality."""

    n: int
    inputs: list[np.ndarray] = field(default_factory=list)
    ok: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    reasons: list[str | None] = field(default_factory=list)
    quality: dict[str, np.ndarray] = field(default_factory=dict)
    channel_mean: list[list[float]] = field(default_factory=list)
    channel_std: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ok = np.zeros(self.n, dtype=bool)
        self.reasons = [None] * self.n
        self.quality = {name: np.zeros(self.n) for name in IMAGE_COLUMNS}


def _decode_texts(column: list[object], decoded: _Inputs, encoder: TextEncoder | None, n_features: int) -> None:
    texts: list[str] = []
    rows: list[int] = []
    for i, value in enumerate(column):
        try:
            texts.append(text_value(value))
            rows.append(i)
        except PayloadError as exc:
            decoded.reasons[i] = str(exc)
    if not texts:
        return
    if encoder is None:
        raise ValueError("text payloads need a text encoder (score_batch's text_encoder)")
    vectors = encoder(texts)
    if np.issubdtype(vectors.dtype, np.integer):  # token ids of the model's own tokenizer
        for i, tokens in zip(rows, vectors, strict=True):
            decoded.inputs.append(tokens)
            decoded.ok[i] = True
        return
    for i, vector in zip(rows, vectors, strict=True):
        try:
            decoded.inputs.append(feature_vector(vector, n_features=n_features))
            decoded.ok[i] = True
        except PayloadError as exc:  # an encoder that disagrees with the model's width, or NaN
            decoded.reasons[i] = f"text: encoder output unusable ({exc})"


def _model_inputs(model: TaskModel, batch: pa.Table, options: ScoringOptions,
                  text_encoder: TextEncoder | None) -> _Inputs:
    decoded = _Inputs(batch.num_rows)
    column = batch.column(options.payload).to_pylist()
    try:
        check_payload_fits(options.payload, model.input_kind)
    except PayloadError as exc:
        decoded.reasons = [str(exc)] * batch.num_rows
        return decoded
    if options.payload == "text":
        _decode_texts(column, decoded, text_encoder, model.n_features)
        return decoded
    for i, value in enumerate(column):
        try:
            if options.payload == "features":
                decoded.inputs.append(feature_vector(value, n_features=model.n_features))
            else:
                data = (read_uri(value, max_bytes=max_image_bytes(options.max_image_pixels),
                                 storage_options=options.storage_options) if options.payload == "uri"
                        else value)
                image = decode_image(data, channels=model.in_channels, size=model.image_size,
                                     max_pixels=options.max_image_pixels)
                decoded.inputs.append(image.pixels)
                for name in IMAGE_COLUMNS:
                    decoded.quality[name][i] = image.quality[name]
                decoded.channel_mean.append(image.channel_mean)
                decoded.channel_std.append(image.channel_std)
            decoded.ok[i] = True
        except PayloadError as exc:
            decoded.reasons[i] = str(exc)
    return decoded


# CPU matrix kernels pick another code path for a handful of rows, which changes the last bits
# of the results; padding every call to at least this many rows keeps a sample's numbers the same
# whatever batch it arrives in (so actor count and batch size do not change the ranking).
MIN_MODEL_ROWS = 16


def _predict_padded(model: TaskModel, x: torch.Tensor, keys: np.ndarray, options: ScoringOptions) -> Prediction:
    n = x.shape[0]
    if n < MIN_MODEL_ROWS:
        x = torch.cat([x, torch.zeros((MIN_MODEL_ROWS - n, *x.shape[1:]), dtype=x.dtype, device=x.device)])
        keys = np.concatenate([keys, np.zeros(MIN_MODEL_ROWS - n, dtype=keys.dtype)])
    prediction = mc_predict(model, x, keys, n_samples=options.mc_samples, seed=options.seed,
                            head_only=options.head_only)
    if n == x.shape[0]:
        return prediction
    loss = prediction.pred_loss[:n] if prediction.pred_loss is not None else None
    probs = prediction.probs[:n] if prediction.probs is not None else None
    return Prediction(prediction.embedding[:n], probs, loss)


def score_batch(model: TaskModel, batch: pa.Table, options: ScoringOptions, *,
                text_encoder: TextEncoder | None = None) -> pa.Table:
    """Score a batch of pool rows.

    Parameters
    ----------
    model : a :class:`~alray.models.TaskModel` in eval mode, on ``options.device``
    batch : pool rows: ``id``, the payload column, metadata columns
    options : scoring options
    text_encoder : texts to model inputs (B, n_features); needed for a ``text`` payload

    Returns
    -------
    pyarrow.Table with :func:`features_schema` and one row per input row, in input order;
    rows that could not be used have null scores and a reject reason. ``pred_loss`` is null
    for every row when the model has no loss head.
    """
    ids = [str(i) for i in batch.column("id").to_pylist()]
    decoded = _model_inputs(model, batch, options, text_encoder)
    ok, reasons = decoded.ok, decoded.reasons
    n_classes, width = model.n_classes, model.embedding_dim
    ok_ids = [ids[i] for i in np.flatnonzero(ok)]
    pred_loss: np.ndarray | None = None
    scores: dict[str, np.ndarray] = {**{name: np.zeros(0) for name in MC_SCORES}, "probs": np.zeros((0, n_classes)),
                                     "pred": np.zeros(0, dtype=np.int64)}
    if decoded.inputs:
        device = torch.device(options.device)
        x = torch.from_numpy(np.stack(decoded.inputs)).to(device, non_blocking=True)
        prediction = _predict_padded(model, x, id_keys(ok_ids), options)
        # The scores are computed where the model ran: only (B, C) and (B,) arrays come back.
        finite_t = torch.isfinite(prediction.embedding).all(dim=1)
        if prediction.probs is not None:
            finite_t &= torch.isfinite(prediction.probs).flatten(1).all(dim=1)
        finite = finite_t.cpu().numpy()
        if not finite.all():
            # A row the model turns into NaN/Inf is rejected; the others keep their scores.
            for j in np.flatnonzero(~finite):
                reasons[int(np.flatnonzero(ok)[j])] = "model: non-finite output"
        if prediction.probs is not None:
            mc_probs = prediction.probs.double()
            if not finite.all():
                mc_probs = torch.where(finite_t[:, None, None], mc_probs, torch.full_like(mc_probs, 1.0 / n_classes))
            scores = {name: value.cpu().numpy() for name, value in all_scores_torch(mc_probs).items()}
        embedding = prediction.embedding.float().cpu().numpy()
        embedding[~finite] = 0.0
        if prediction.pred_loss is not None:
            pred_loss = prediction.pred_loss.double().cpu().numpy()
        width = embedding.shape[1]
    else:
        embedding = np.zeros((0, width), dtype=np.float32)
    # An embedding-only model (n_classes 0) predicts nothing: its rows' scores stay null.
    scored = ok if n_classes > 0 else np.zeros(len(ok), dtype=bool)
    is_image = PAYLOAD_INPUT_KIND.get(options.payload) == "image"
    image_ok = ok if is_image else np.zeros(len(ok), dtype=bool)
    metadata = batch.drop_columns([c for c in ("id", options.payload) if c in batch.column_names])
    schema = features_schema(metadata.schema)
    columns: dict[str, pa.Array] = {
        "run_id": pa.array([options.run_id] * len(ids), type=pa.string()),
        "id": pa.array(ids, type=pa.string()),
        "embedding": _list_column(embedding, ok),
        "probs": _list_column(scores["probs"], scored),
        "pred": _column(scores["pred"].astype(np.int32), scored, pa.int32()),
        **{name: _column(scores[name], scored, pa.float64()) for name in MC_SCORES},
        "pred_loss": (_column(pred_loss, ok, pa.float64()) if pred_loss is not None
                      else pa.nulls(len(ids), type=pa.float64())),
        **{name: _column(decoded.quality[name][image_ok], image_ok, pa.float64()) for name in IMAGE_COLUMNS},
        "channel_mean": _list_column(_matrix(decoded.channel_mean), image_ok),
        "channel_std": _list_column(_matrix(decoded.channel_std), image_ok),
    }
    for name in metadata.column_names:
        columns[name] = metadata.column(name).combine_chunks()
    columns[REJECT_REASON] = pa.array(reasons, type=pa.string())
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
