"""The detection demo's inputs: the synthetic shapes pool, a labeled seed set of boxes, and a tiny detector
trained on it in seconds, exported as a TorchScript detector with its ``alray.json``.

The pool's images are ``POOL_SIDE`` pixels square and the detector takes ``MODEL_SIDE``: scoring
decodes and resizes them as it would any pool, and scales the boxes back to the images' pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from alray.detection.boxes import Detections, scale_boxes
from alray.detection.centernet import TinyCenterNet
from alray.detection.metrics import mean_average_precision
from alray.detection.synthetic import CLASS_NAMES, build_pool, truth_table
from alray.detection.training import predict, train_detector
from alray.models.detector import save_detector
from alray.payloads import decode_image

POOL_SIDE = 96
MODEL_SIDE = 64


@dataclass(frozen=True)
class DetectionDemoFiles:
    """Where the detection demo's inputs were written, and how good the seed detector is."""

    pool: str
    labeled: str
    checkpoint: str
    n_pool: int
    n_labeled: int
    train_seconds: float
    seed_map50: float  # mAP@0.5 of the seed detector on the unlabeled shape images


def decoded_inputs(payloads: list[bytes], side: int = MODEL_SIDE) -> np.ndarray:
    """Model inputs (N, 3, S, S) of encoded images, through the decode path scoring takes."""
    return np.stack([decode_image(p, channels=3, size=side).pixels for p in payloads])


def to_model_side(truths: list[Detections], pool_side: int, model_side: int) -> list[Detections]:
    """Boxes in pixels of the pool's images scaled to the model's input."""
    factor = model_side / pool_side
    return [Detections(scale_boxes(t.boxes, factor, factor), t.labels, t.scores, t.probs) for t in truths]


def _write(table: pa.Table, folder: str) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    for old in Path(folder).glob("*.parquet"):
        old.unlink()
    pq.write_table(table, str(Path(folder) / "part-00000.parquet"))


def build_detection_demo(*, pool_path: str, labeled_path: str, checkpoint_path: str, n_images: int = 400,
                         n_labeled: int = 150, epochs: int = 40, width: int = 8, seed: int = 0) -> DetectionDemoFiles:
    """Write the pool (parquet folder), the labeled seed set (``id``, ``detections``) and the detector."""
    pool = build_pool(n_images, size=POOL_SIDE, max_objects=4, seed=seed)
    _write(pool.table, pool_path)
    labeled = list(range(min(n_labeled, n_images)))
    _write(truth_table([pool.ids[i] for i in labeled], [pool.truths[i] for i in labeled]), labeled_path)
    payloads = pool.table.column("image").to_pylist()[:n_images]
    inputs = decoded_inputs(payloads)
    truths = to_model_side(pool.truths, POOL_SIDE, MODEL_SIDE)
    torch.manual_seed(seed)  # the initial weights: the same demo detector on every machine and run
    model = TinyCenterNet(len(CLASS_NAMES), width=width)
    result = train_detector(model, inputs[labeled], [truths[i] for i in labeled], epochs=epochs, seed=seed)
    rest = list(range(len(labeled), n_images))
    quality = (mean_average_precision(predict(model, inputs[rest]), [truths[i] for i in rest],
                                      n_classes=len(CLASS_NAMES)) if rest else float("nan"))
    save_detector(model, checkpoint_path, n_classes=len(CLASS_NAMES), in_channels=3, image_size=MODEL_SIDE,
                  outputs=("probs", "features", "embedding"), class_names=CLASS_NAMES)
    return DetectionDemoFiles(pool=pool_path, labeled=labeled_path, checkpoint=checkpoint_path,
                              n_pool=pool.table.num_rows, n_labeled=len(labeled), train_seconds=result.seconds,
                              seed_map50=quality)
