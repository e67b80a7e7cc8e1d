"""One epoch of SimCLR training in plain torch: two augmented views per image, an encoder and a
projection head, NT-Xent. The Ray Train adapter (:mod:`alray.stages.embed`) calls it on each
worker's shard; tests and benchmarks call it on plain batches."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from alray.models.encoders import ConvEncoder
from alray.ssl.augment import Augment
from alray.ssl.losses import NTXentLoss


class SimCLR(nn.Module):
    """An encoder and the projection head of SimCLR (a two-layer MLP); the head serves the loss
    only and is dropped when the encoder is saved.

    Parameters
    ----------
    encoder : maps images (B, C, S, S) to embeddings (B, D)
    projection_dim : width P of the projections the loss compares
    """

    def __init__(self, encoder: ConvEncoder, *, projection_dim: int = 64) -> None:
        super().__init__()
        self.encoder = encoder
        width = encoder.embedding_dim
        self.projector = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, projection_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections (B, P) of images (B, C, S, S)."""
        return self.projector(self.encoder(x))


@dataclass
class EpochTotals:
    """What one worker's epoch did: the summed loss over its steps, the steps, the images
    trained on and the rows left out because they could not be decoded."""

    loss_sum: float = 0.0
    steps: int = 0
    images: int = 0
    skipped: int = 0


def cosine_learning_rate(base: float, epoch: int, epochs: int) -> float:
    """The learning rate of ``epoch`` (0-based) of ``epochs``: cosine decay from ``base`` towards 0."""
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Mapping[str, torch.Tensor]],
                *, augment: Augment, loss: NTXentLoss, seed: int, epoch: int,
                device: torch.device | None = None) -> EpochTotals:
    """Train ``model`` (a :class:`SimCLR`, or one wrapped in DistributedDataParallel) for one pass
    over ``batches``.

    Parameters
    ----------
    batches : mappings with ``pixels`` (B, C, S, S) floats in 0..1, ``key`` (B,) int64 (the bits
        of :func:`alray.models.id_keys`) and, optionally, ``valid`` (B,) bool: rows that could not
        be decoded, left out of the loss
    augment, loss : the view maker and NT-Xent
    seed, epoch : with each sample's key, what seeds its two views (views 0 and 1)

    Every batch takes one optimisation step, even one with fewer than two usable rows (its loss is
    then 0 x the outputs): data-parallel workers must step together.
    """
    totals = EpochTotals()
    model.train()
    for batch in batches:
        pixels = batch["pixels"].to(device) if device is not None else batch["pixels"]
        keys = batch["key"]
        n = pixels.shape[0]
        if "valid" in batch:
            valid = batch["valid"].to(torch.bool).cpu()
            totals.skipped += int((~valid).sum())
            n = int(valid.sum())
            if n >= 2:
                pixels, keys = pixels[valid.to(pixels.device)], keys[valid]
        first = augment(pixels, keys, seed=seed, epoch=epoch, view=0)
        second = augment(pixels, keys, seed=seed, epoch=epoch, view=1)
        # One forward pass of both views (the encoder normalises per sample, so this is the same as
        # two), which is what DistributedDataParallel expects between steps.
        projections = model(torch.cat([first, second]))
        half = first.shape[0]
        value = loss(projections[:half], projections[half:]) if n >= 2 else 0.0 * projections.sum()
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if n >= 2:
            totals.loss_sum += float(value.detach())
            totals.steps += 1
        totals.images += n if n >= 2 else 0
    return totals
