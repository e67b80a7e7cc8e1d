"""The synthetic detection pool: shapes of a few classes on textured backgrounds, plus blank and corrupt images.

Images are RGB squares; each holds 0 to ``max_objects`` shapes (circles, squares, triangles) of
random colour and size, placed apart, on a background of noise, stripes, a checkerboard or a
gradient. One class dominates (``class_shares``), as in most detection data. The boxes are the
shapes' bounding boxes in pixels: the ground truth a labeler would draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from alray.demo import png_bytes
from alray.detection.boxes import Detections, box_iou, detections_array

CLASS_NAMES = ("circle", "square", "triangle")
CLASS_SHARES = (0.6, 0.25, 0.15)


@dataclass(frozen=True)
class SyntheticPool:
    """The pool table (``id``, ``image``, ``source``) and, aside, the shape images' pixels (N, S, S, 3) and boxes."""

    table: pa.Table
    ids: list[str]  # the shape images' ids, in the order of ``images`` and ``truths``
    images: np.ndarray
    truths: list[Detections]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(40, 200, size=3)
    kind = rng.integers(4)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    if kind == 0:  # noise
        pattern = rng.normal(0, 25, size=(size, size, 1))
    elif kind == 1:  # stripes
        period = rng.uniform(4, 12)
        angle = rng.uniform(0, np.pi)
        pattern = (20 * np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period))[..., None]
    elif kind == 2:  # checkerboard
        cell = int(rng.integers(4, 10))
        pattern = (((xs // cell + ys // cell) % 2) * 30 - 15)[..., None]
    else:  # gradient
        pattern = ((xs + ys) / (2 * size) * 60 - 30)[..., None]
    return np.clip(base[None, None, :] + pattern + rng.normal(0, 6, size=(size, size, 3)), 0, 255)


def _draw(image: Image.Image, cls: int, box: Sequence[int], colour: tuple[int, int, int]) -> None:
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = box
    if cls == 0:
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=colour)
    elif cls == 1:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=colour)
    else:
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)], fill=colour)


def shape_image(rng: np.random.Generator, *, size: int, max_objects: int,
                class_shares: Sequence[float] = CLASS_SHARES) -> tuple[np.ndarray, Detections]:
    """One image (S, S, 3) uint8 and its ground-truth boxes."""
    canvas = Image.fromarray(_background(rng, size).astype(np.uint8))
    n = int(rng.integers(0, max_objects + 1))
    boxes: list[list[int]] = []
    labels: list[int] = []
    shares = np.asarray(class_shares, dtype=np.float64) / np.sum(class_shares)
    for _ in range(n * 10):
        if len(boxes) == n:
            break
        side = int(rng.integers(size // 6, size // 3 + 1))
        x0, y0 = (int(v) for v in rng.integers(0, size - side, size=2))
        box = [x0, y0, x0 + side, y0 + side]
        if boxes and box_iou([box], boxes).max() > 0.0:
            continue  # shapes do not touch: each box is one object
        cls = int(rng.choice(len(shares), p=shares))
        colour = tuple(int(c) for c in rng.choice([rng.integers(0, 40), rng.integers(215, 256)], size=3))
        _draw(canvas, cls, box, colour)  # type: ignore[arg-type]
        boxes.append(box)
        labels.append(cls)
    truth = Detections.of(np.array(boxes, dtype=np.float64).reshape(-1, 4), labels, np.ones(len(labels)),
                          np.eye(len(shares))[labels] if labels else np.zeros((0, len(shares))))
    return np.asarray(canvas), truth


def build_pool(n_images: int, *, size: int = 64, max_objects: int = 4, n_blank: int = 6, n_corrupt: int = 3,
               class_shares: Sequence[float] = CLASS_SHARES, seed: int = 0) -> SyntheticPool:
    """The pool: ``n_images`` shape images (``shape-00000``...), blank and corrupt ones."""
    rng = np.random.default_rng(seed)
    images, truths = [], []
    for _ in range(n_images):
        image, truth = shape_image(rng, size=size, max_objects=max_objects, class_shares=class_shares)
        images.append(image)
        truths.append(truth)
    ids = [f"shape-{i:05d}" for i in range(n_images)]
    payloads = [png_bytes(img) for img in images]
    sources = ["shapes"] * n_images
    all_ids = list(ids)
    for i in range(n_blank):
        all_ids.append(f"blank-{i:03d}")
        payloads.append(png_bytes(np.full((size, size, 3), int(rng.integers(0, 256)), dtype=np.uint8)))
        sources.append("blank")
    for i in range(n_corrupt):
        all_ids.append(f"corrupt-{i:03d}")
        payloads.append(png_bytes(images[i % max(n_images, 1)])[: 40 + i] if n_images else b"\x89PNG")
        sources.append("corrupt")
    table = pa.table({"id": pa.array(all_ids, pa.string()), "image": pa.array(payloads, pa.binary()),
                      "source": pa.array(sources, pa.string())})
    stacked = np.stack(images) if images else np.zeros((0, size, size, 3), dtype=np.uint8)
    return SyntheticPool(table, ids, stacked, truths)


def truth_table(ids: Sequence[str], truths: Sequence[Detections]) -> pa.Table:
    """Labeled boxes as a table: ``id`` and ``detections`` (score 1, one-hot probabilities)."""
    return pa.table({"id": pa.array(list(ids), pa.string()), "detections": detections_array(list(truths))})


def model_inputs(images: np.ndarray) -> np.ndarray:
    """Images (N, S, S, 3) uint8 as model inputs (N, 3, S, S) in 0..1 (the PNG decode path gives the same)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
