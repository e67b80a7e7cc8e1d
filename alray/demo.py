"""The bundled sample pool: scikit-learn's digits as PNG images with metadata, a labeled seed set,
and a small CNN trained on it, written where the demo config expects them."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageFilter

from alray.models import SmallCNN, save_checkpoint
from alray.payloads import decode_image
from alray.training import accuracy, train_classifier

IMAGE_SIZE = 32
N_CAMERAS = 4


@dataclass(frozen=True)
class DemoFiles:
    """Where the demo inputs were written and what the seed model scores."""

    pool: str
    labeled: str
    checkpoint: str
    n_pool: int
    n_labeled: int
    seed_accuracy: float


def digit_images(size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as uint8 images (N, size, size) and their labels (N,)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    images = np.stack([
        np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR)) for img in small
    ])
    return images, digits.target.astype(np.int64)


def png_bytes(image: np.ndarray | Image.Image) -> bytes:
    """Encode an image as PNG."""
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def build_pool(*, n_images: int | None = None, n_blank: int = 12, n_blurred: int = 12, n_corrupt: int = 3,
               seed: int = 0, now: dt.datetime | None = None) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """The demo pool table and, aside, the hidden labels of its digit rows.

    Returns the pool (``id``, ``image``, ``captured_at``, ``camera_id``, ``source``), the images
    (uint8, N x S x S) of the digit rows, and their labels, in pool order.
    """
    rng = np.random.default_rng(seed)
    now = now or dt.datetime.now(dt.timezone.utc)
    images, labels = digit_images()
    if n_images is not None:
        keep = np.sort(rng.choice(len(images), size=min(n_images, len(images)), replace=False))
        images, labels = images[keep], labels[keep]
    ids = [f"digit-{i:05d}" for i in range(len(images))]
    payloads = [png_bytes(img) for img in images]
    sources = ["digits"] * len(images)
    for i in range(n_blank):
        ids.append(f"blank-{i:03d}")
        payloads.append(png_bytes(np.full((IMAGE_SIZE, IMAGE_SIZE), int(rng.integers(0, 256)), dtype=np.uint8)))
        sources.append("blank")
    for i in range(n_blurred):
        blurred = Image.fromarray(images[i % len(images)]).filter(ImageFilter.GaussianBlur(radius=4))
        ids.append(f"blurred-{i:03d}")
        payloads.append(png_bytes(blurred))
        sources.append("blurred")
    for i in range(n_corrupt):
        ids.append(f"corrupt-{i:03d}")
        payloads.append(png_bytes(images[i % len(images)])[: 40 + i])  # truncated mid-stream
        sources.append("corrupt")
    n = len(ids)
    age_days = rng.uniform(0, 60, size=n)
    stale = rng.random(n) < 0.04  # a few old captures for the time-window filter to drop
    age_days[stale] = rng.uniform(120, 365, size=int(stale.sum()))
    captured = [now - dt.timedelta(days=float(d)) for d in age_days]
    table = pa.table({
        "id": pa.array(ids, pa.string()),
        "image": pa.array(payloads, pa.binary()),
        "captured_at": pa.array(captured, pa.timestamp("us", tz="UTC")),
        "camera_id": pa.array([f"cam-{int(c)}" for c in rng.integers(0, N_CAMERAS, size=n)], pa.string()),
        "source": pa.array(sources, pa.string()),
    })
    return table, images, labels


def seed_set(labels: np.ndarray, *, per_class: int, seed: int) -> np.ndarray:
    """Indices of a class-balanced labeled seed set, ``per_class`` per class."""
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == c), size=min(per_class, int((labels == c).sum())), replace=False)
              for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def model_inputs(images: np.ndarray) -> np.ndarray:
    """Model inputs (N, 1, S, S) of uint8 images through the same PNG decode path as scoring."""
    return np.stack([decode_image(png_bytes(img), channels=1, size=IMAGE_SIZE).pixels for img in images])


def build_demo(*, pool_path: str, labeled_path: str, checkpoint_path: str, n_images: int | None = None,
               per_class: int = 10, epochs: int = 40, seed: int = 0) -> DemoFiles:
    """Write the demo pool (parquet folder), the labeled seed set and a trained checkpoint."""
    pool, images, labels = build_pool(n_images=n_images, seed=seed)
    seed_index = seed_set(labels, per_class=per_class, seed=seed)
    Path(pool_path).mkdir(parents=True, exist_ok=True)
    for old in Path(pool_path).glob("*.parquet"):
        old.unlink()
    pq.write_table(pool, str(Path(pool_path) / "part-00000.parquet"))
    labeled = pa.table({
        "id": pa.array([f"digit-{i:05d}" for i in seed_index], pa.string()),
        "label": pa.array(labels[seed_index], pa.int64()),
    })
    Path(labeled_path).mkdir(parents=True, exist_ok=True)
    for old in Path(labeled_path).glob("*.parquet"):
        old.unlink()
    pq.write_table(labeled, str(Path(labeled_path) / "part-00000.parquet"))
    inputs = model_inputs(images)
    torch.manual_seed(seed)  # the initial weights: the same demo model on every machine and run
    model = SmallCNN(in_channels=1, image_size=IMAGE_SIZE, n_classes=10, embedding_dim=64, dropout=0.5)
    train_classifier(model, inputs[seed_index], labels[seed_index], epochs=epochs, seed=seed)
    pool_accuracy = accuracy(model, inputs, labels)
    save_checkpoint(model, checkpoint_path, metadata={"trained_on": len(seed_index),
                                                      "pool_accuracy": round(pool_accuracy, 4)})
    return DemoFiles(pool=pool_path, labeled=labeled_path, checkpoint=checkpoint_path, n_pool=pool.num_rows,
                     n_labeled=len(seed_index), seed_accuracy=pool_accuracy)
