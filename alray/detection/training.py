"""Training :class:`~alray.detection.centernet.TinyCenterNet` on labeled boxes: CenterNet's targets and losses.

Targets per image, on the stride-4 grid: a Gaussian bump at each object's centre cell in the
objectness map (its radius grows with the box), and at the centre cell the class, the log size
in cells and the centre's offset. Losses: the penalty-reduced focal loss of CenterNet (Zhou et
al. 2019) on objectness, cross-entropy on the class, L1 on size and offset, the last three at
centre cells only. Random horizontal flips double the seed set.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from alray.detection.boxes import Detections, flip_boxes
from alray.detection.centernet import STRIDE, TinyCenterNet


@dataclass(frozen=True)
class Targets:
    """Training targets of B images on an H x W grid."""

    heat: torch.Tensor  # (B, 1, H, W) in 0..1
    centre: torch.Tensor  # (B, H, W) bool: a centre cell
    label: torch.Tensor  # (B, H, W) int64, valid at centres
    size: torch.Tensor  # (B, 2, H, W) log width and height in cells
    offset: torch.Tensor  # (B, 2, H, W) in 0..1


def make_targets(truths: Sequence[Detections], *, image_size: int) -> Targets:
    """The targets of ground-truth boxes (pixels of the ``image_size`` square inputs)."""
    side = image_size // STRIDE
    b = len(truths)
    heat = np.zeros((b, 1, side, side), dtype=np.float32)
    centre = np.zeros((b, side, side), dtype=bool)
    label = np.zeros((b, side, side), dtype=np.int64)
    size = np.zeros((b, 2, side, side), dtype=np.float32)
    offset = np.zeros((b, 2, side, side), dtype=np.float32)
    ys, xs = np.mgrid[0:side, 0:side]
    for i, truth in enumerate(truths):
        for box, cls in zip(truth.boxes, truth.labels, strict=True):
            w = max((box[2] - box[0]) / STRIDE, 1e-3)
            h = max((box[3] - box[1]) / STRIDE, 1e-3)
            cx, cy = (box[0] + box[2]) / 2 / STRIDE, (box[1] + box[3]) / 2 / STRIDE
            ix, iy = min(int(cx), side - 1), min(int(cy), side - 1)
            sigma = max(min(w, h) / 6.0, 0.5)
            bump = np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma**2))
            heat[i, 0] = np.maximum(heat[i, 0], bump)
            centre[i, iy, ix] = True
            label[i, iy, ix] = int(cls)
            size[i, :, iy, ix] = (np.log(w), np.log(h))
            offset[i, :, iy, ix] = (cx - ix, cy - iy)
    return Targets(torch.from_numpy(heat), torch.from_numpy(centre), torch.from_numpy(label),
                   torch.from_numpy(size), torch.from_numpy(offset))


def focal_loss(logits: torch.Tensor, heat: torch.Tensor, *, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss of objectness logits against Gaussian targets, per object."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = heat.eq(1.0).float()
    pos = -(torch.log(p) * (1 - p) ** alpha * positive).sum()
    neg = -(torch.log(1 - p) * p**alpha * (1 - heat) ** beta * (1 - positive)).sum()
    return (pos + neg) / positive.sum().clamp(min=1.0)


def detection_loss(model: TinyCenterNet, x: torch.Tensor, targets: Targets) -> torch.Tensor:
    """The summed training loss of a batch."""
    objectness, class_logits, size, offset, _ = model.heads(x)
    loss = focal_loss(objectness, targets.heat)
    mask = targets.centre
    if mask.any():
        loss = loss + F.cross_entropy(class_logits.permute(0, 2, 3, 1)[mask], targets.label[mask])
        loss = loss + 0.5 * F.l1_loss(size.permute(0, 2, 3, 1)[mask], targets.size.permute(0, 2, 3, 1)[mask])
        loss = loss + F.l1_loss(offset.permute(0, 2, 3, 1)[mask], targets.offset.permute(0, 2, 3, 1)[mask])
    return loss


@dataclass(frozen=True)
class TrainResult:
    """The final loss and the seconds training took."""

    losses: list[float]
    seconds: float


def train_detector(model: TinyCenterNet, images: np.ndarray, truths: Sequence[Detections], *, epochs: int = 60,
                   batch_size: int = 32, learning_rate: float = 3e-3, seed: int = 0) -> TrainResult:
    """Fit ``model`` to images (N, C, S, S) in 0..1 and their boxes (pixels of S); seeded, on the CPU.

    Returns the mean loss of each epoch; the model is left in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    steps = epochs * max(1, -(-len(images) // batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps)
    data = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    start = time.perf_counter()
    losses: list[float] = []
    model.train()
    threads = torch.get_num_threads()
    # A net this small gains nothing from intra-op threads, and loses much when other processes
    # share the cores (measured: 10 epochs of 50 images, 1.0 s on one thread, 13 s on two).
    torch.set_num_threads(1)
    try:
        losses = _epochs(model, data, truths, optimizer, schedule, epochs=epochs, batch_size=batch_size,
                         generator=generator, rng=rng)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return TrainResult(losses, time.perf_counter() - start)


def _epochs(model: TinyCenterNet, data: torch.Tensor, truths: Sequence[Detections], optimizer: torch.optim.Optimizer,
            schedule: torch.optim.lr_scheduler.LRScheduler, *, epochs: int, batch_size: int,
            generator: torch.Generator, rng: np.random.Generator) -> list[float]:
    side = data.shape[-1]
    losses: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=generator).numpy()
        total = 0.0
        for begin in range(0, len(order), batch_size):
            rows = order[begin: begin + batch_size]
            flip = rng.random(len(rows)) < 0.5
            x = data[rows].clone()
            x[torch.from_numpy(flip)] = torch.flip(x[torch.from_numpy(flip)], dims=[3])
            batch_truths = [Detections(flip_boxes(truths[r].boxes, side), truths[r].labels, truths[r].scores)
                            if f else truths[r] for r, f in zip(rows, flip, strict=True)]
            loss = detection_loss(model, x, make_targets(batch_truths, image_size=side))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(rows)
        losses.append(total / len(data))
    return losses


def predict(model: TinyCenterNet, images: np.ndarray, *, batch_size: int = 64) -> list[Detections]:
    """The detections of images (N, C, S, S) in pixels of S, in eval mode."""
    out: list[Detections] = []
    model.eval()
    with torch.no_grad():
        for begin in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[begin: begin + batch_size], dtype=np.float32))
            for d in model(x):
                out.append(Detections.of(d["boxes"].double().numpy(), d["labels"].numpy(), d["scores"].double().numpy(),
                                         d["probs"].double().numpy()))
    return out
