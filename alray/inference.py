"""Score one batch of pool rows with a model: embeddings, MC-dropout scores, predicted loss,
quality, rejects.

The Ray stage calls :func:`score_batch` once per batch inside an actor; nothing here knows Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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


@dataclass(frozen=True)
class InputSpec:
    """What a model takes, so that its inputs can be decoded away from it (in other processes than
    the one holding the model): the input kind, the channels and side of images, the width of vectors."""

    kind: str
    in_channels: int = 1
    image_size: int = 0
    n_features: int = 0

    @classmethod
    def of(cls, model: TaskModel) -> InputSpec:
        """The spec of ``model``'s inputs."""
        return cls(model.input_kind, int(model.in_channels or 1), int(model.image_size or 0),
                   int(model.n_features or 0))

    @property
    def shape(self) -> tuple[int, ...]:
        """One decoded input's shape: (C, H, W) for images, (n_features,) for vectors."""
        if self.kind == "image":
            return (self.in_channels, self.image_size, self.image_size)
        return (self.n_features,)


# The decoded batch's column holding each usable row's model input: float32 values packed as bytes
# (images at the model's size, feature vectors), or the checked text; null for a rejected row.
MODEL_INPUT = "_model_input"
#: Prefix of a pool column kept beside the decoded column of the same name (a detection pool's ``width``
#: and ``height``): the decoded value is the image's, the pool's is kept for the scorer to compare.
POOL_COPY_PREFIX = "_pool_"


def decode_batch(batch: pa.Table, spec: InputSpec, options: ScoringOptions) -> pa.Table:
    """Decode a batch of pool rows into model inputs, the CPU work of scoring that needs no model.

    Returns ``id``, :data:`MODEL_INPUT`, the reject reason (null for a usable row), the image
    metrics and channel statistics (null but for decoded images), then the pool's metadata columns
    (one named like a decoded column as :data:`POOL_COPY_PREFIX` + its name), one row per input row
    in input order. :func:`score_decoded` then scores it with the model.
    """
    n = batch.num_rows
    present = options.payload in batch.column_names
    whole = (_whole_feature_rows(batch.column(options.payload), spec.n_features)
             if present and options.payload == "features" and spec.kind == "features" else None)
    if whole is not None:
        column: list = []  # every row usable: taken whole below
    else:
        column = batch.column(options.payload).to_pylist() if present else [None] * n
    ok = np.zeros(n, dtype=bool)
    reasons: list[str | None] = [None] * n
    inputs: list[np.ndarray] = []
    texts: list[str] = []
    quality = {name: np.zeros(n) for name in IMAGE_COLUMNS}
    channel_mean: list[list[float]] = []
    channel_std: list[list[float]] = []
    try:
        check_payload_fits(options.payload, spec.kind)
        fits = True
    except PayloadError as exc:
        reasons, fits = [str(exc)] * n, False
    for i, value in enumerate(column if fits else []):
        try:
            if options.payload == "text":
                texts.append(text_value(value))
            elif options.payload == "features":
                inputs.append(feature_vector(value, n_features=spec.n_features))
            else:
                data = (read_uri(value, max_bytes=max_image_bytes(options.max_image_pixels),
                                 storage_options=options.storage_options) if options.payload == "uri"
                        else value)
                image = decode_image(data, channels=spec.in_channels, size=spec.image_size,
                                     max_pixels=options.max_image_pixels)
                inputs.append(image.pixels)
                for name in IMAGE_COLUMNS:
                    quality[name][i] = image.quality[name]
                channel_mean.append(image.channel_mean)
                channel_std.append(image.channel_std)
            ok[i] = True
        except PayloadError as exc:
            reasons[i] = str(exc)
    rows: list[np.ndarray] | np.ndarray = inputs
    if whole is not None and fits:  # every row a usable vector: packed as the loop would pack them
        ok[:] = True
        rows = whole
    if options.payload == "text":
        model_input: pa.Array = pa.array([None] * n, pa.string()) if not texts else _scatter_texts(texts, ok)
    else:
        model_input = _packed_rows(rows, ok)
    image_ok = ok if PAYLOAD_INPUT_KIND.get(options.payload) == "image" else np.zeros(n, dtype=bool)
    columns: dict[str, pa.Array] = {
        "id": _string_ids(batch.column("id")),
        MODEL_INPUT: model_input,
        REJECT_REASON: pa.array(reasons, type=pa.string()),
        **{name: _column(quality[name][image_ok], image_ok, pa.float64()) for name in IMAGE_COLUMNS},
        "channel_mean": _list_column(_matrix(channel_mean), image_ok),
        "channel_std": _list_column(_matrix(channel_std), image_ok),
    }
    metadata = batch.drop_columns([c for c in ("id", options.payload) if c in batch.column_names])
    for name in metadata.column_names:
        columns[POOL_COPY_PREFIX + name if name in columns else name] = metadata.column(name).combine_chunks()
    return pa.table(columns)


def _whole_feature_rows(column: pa.ChunkedArray, n_features: int) -> np.ndarray | None:
    """Every row's feature vector at once, (rows, n_features) float32, when each row holds ``n_features``
    finite numbers: the values :func:`~alray.payloads.feature_vector` gives row by row. None when any
    row does not (the rows are then checked one by one, for their reject reasons)."""
    kind = column.type
    if column.null_count or not (pa.types.is_list(kind) or pa.types.is_large_list(kind)
                                 or pa.types.is_fixed_size_list(kind)):
        return None
    if not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
        return None
    lists = column.combine_chunks()
    if len(lists) == 0 or (pc.list_value_length(lists).to_numpy(zero_copy_only=False) != n_features).any():
        return None
    values = pc.list_flatten(lists)
    if values.null_count:
        return None
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(lists), n_features)
    return flat if np.isfinite(flat).all() else None


def _string_ids(ids: pa.ChunkedArray) -> pa.Array:
    """The ids as strings, as ``str`` writes them."""
    if pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
        return ids.combine_chunks().cast(pa.string())
    return pa.array([str(i) for i in ids.to_pylist()], type=pa.string())


def _packed_rows(rows: list[np.ndarray] | np.ndarray, ok: np.ndarray) -> pa.Array:
    """The usable rows' float32 inputs (a list of them, or one array of rows) as one byte string each,
    null for the others."""
    if not len(rows):
        return pa.nulls(len(ok), pa.binary())
    flat = np.ascontiguousarray(rows if isinstance(rows, np.ndarray) else np.stack(rows), dtype=np.float32)
    width = flat[0].nbytes
    offsets = np.concatenate([[0], np.cumsum(np.where(ok, width, 0))]).astype(np.int32)
    return pa.Array.from_buffers(pa.binary(), len(ok), [pa.array(ok).buffers()[1] if not ok.all() else None,
                                                        pa.py_buffer(offsets), pa.py_buffer(flat)],
                                 null_count=int((~ok).sum()))


def _scatter_texts(texts: list[str], ok: np.ndarray) -> pa.Array:
    values: list[str | None] = [None] * len(ok)
    for i, text in zip(np.flatnonzero(ok), texts, strict=True):
        values[int(i)] = text
    return pa.array(values, pa.string())


def decoded_inputs(decoded: pa.Table, spec: InputSpec) -> np.ndarray:
    """The usable rows' model inputs (n_ok, *spec.shape), float32, read from the packed column."""
    column = decoded.column(MODEL_INPUT).combine_chunks()
    valid = column.drop_null()
    if not len(valid):
        return np.zeros((0, *spec.shape), dtype=np.float32)
    from alray.strategies.base import embedding_matrix

    return embedding_matrix(pa.table({"v": valid}), "v").reshape(len(valid), *spec.shape)


def _encoded_texts(decoded: pa.Table, ok: np.ndarray, reasons: list[str | None], encoder: TextEncoder | None,
                   n_features: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The usable texts through the model's tokenizer or text encoder: inputs, and which rows stay usable."""
    texts = [str(t) for t in decoded.column(MODEL_INPUT).drop_null().to_pylist()]
    rows = np.flatnonzero(ok)
    if not texts:
        return [], ok
    if encoder is None:
        raise ValueError("text payloads need a text encoder (score_batch's text_encoder)")
    vectors = encoder(texts)
    if np.issubdtype(vectors.dtype, np.integer):  # token ids of the model's own tokenizer
        return list(vectors), ok
    inputs: list[np.ndarray] = []
    kept = ok.copy()
    for i, vector in zip(rows, vectors, strict=True):
        try:
            inputs.append(feature_vector(vector, n_features=n_features))
        except PayloadError as exc:  # an encoder that disagrees with the model's width, or NaN
            reasons[int(i)] = f"text: encoder output unusable ({exc})"
            kept[int(i)] = False
    return inputs, kept


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
    """Score a batch of pool rows: :func:`decode_batch` then :func:`score_decoded`, in this process.

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
    return score_decoded(model, decode_batch(batch, InputSpec.of(model), options), options,
                         text_encoder=text_encoder)


def score_decoded(model: TaskModel, decoded: pa.Table, options: ScoringOptions, *,
                  text_encoder: TextEncoder | None = None) -> pa.Table:
    """Score a batch that :func:`decode_batch` decoded: the model's work only (features table rows).

    The scoring stage runs the decoding in Ray tasks and this in the model's actors, which then
    spend their time on tensors; the result is the same as :func:`score_batch` on the raw rows.
    """
    spec = InputSpec.of(model)
    ids = [str(i) for i in decoded.column("id").to_pylist()]
    reasons = decoded.column(REJECT_REASON).to_pylist()
    ok = np.array([r is None for r in reasons], dtype=bool)
    image_ok = ok.copy() if PAYLOAD_INPUT_KIND.get(options.payload) == "image" else np.zeros(len(ids), dtype=bool)
    if options.payload == "text":
        text_inputs, ok = _encoded_texts(decoded, ok, reasons, text_encoder, model.n_features)
        inputs = np.stack(text_inputs) if text_inputs else None
    else:
        matrix = decoded_inputs(decoded, spec)
        inputs = matrix if len(matrix) else None
    n_classes, width = model.n_classes, model.embedding_dim
    ok_ids = [ids[i] for i in np.flatnonzero(ok)]
    pred_loss: np.ndarray | None = None
    scores: dict[str, np.ndarray] = {**{name: np.zeros(0) for name in MC_SCORES}, "probs": np.zeros((0, n_classes)),
                                     "pred": np.zeros(0, dtype=np.int64)}
    if inputs is not None:
        device = torch.device(options.device)
        x = torch.from_numpy(np.ascontiguousarray(inputs)).to(device, non_blocking=True)
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
    carried = {MODEL_INPUT, REJECT_REASON, "id", *IMAGE_COLUMNS, "channel_mean", "channel_std"}
    metadata = decoded.select([c for c in decoded.column_names if c not in carried])
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
        **{name: _column(_values(decoded, name, image_ok), image_ok, pa.float64()) for name in IMAGE_COLUMNS},
        "channel_mean": _list_column(embedding_rows(decoded, "channel_mean", image_ok), image_ok),
        "channel_std": _list_column(embedding_rows(decoded, "channel_std", image_ok), image_ok),
    }
    for name in metadata.column_names:
        columns[name] = metadata.column(name).combine_chunks()
    columns[REJECT_REASON] = pa.array(reasons, type=pa.string())
    # The columns of other tasks (a detection run's) stay null.
    return pa.Table.from_arrays([columns[f.name] if f.name in columns else pa.nulls(len(ids), f.type)
                                 for f in schema], schema=schema)


def _values(decoded: pa.Table, name: str, rows: np.ndarray) -> np.ndarray:
    values = decoded.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
    return values[rows]


def embedding_rows(decoded: pa.Table, name: str, rows: np.ndarray) -> np.ndarray:
    """The list<float> column ``name``'s values of ``rows`` as a float32 matrix."""
    if not rows.any():
        return np.zeros((0, 0), dtype=np.float32)
    from alray.strategies.base import embedding_matrix

    return embedding_matrix(decoded.filter(pa.array(rows)), name)
