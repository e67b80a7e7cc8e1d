"""Embedding-only image encoders: :class:`ConvEncoder`, the small residual CNN that
``alray embed`` trains by self-supervision on the pool. It has no classes
(``n_classes == 0``): scoring takes its embeddings and leaves the uncertainty scores null."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

# Channels per GroupNorm group: the normalisation of a sample never looks at the rest of its
# batch, so its embedding does not depend on the batch it is scored in, and contrastive
# training cannot learn from batch statistics shared by a positive pair (why SimCLR needed
# global batch norm).
_GROUP_CHANNELS = 8


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, channels // _GROUP_CHANNELS), channels)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and a shortcut (a 1x1 convolution when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False), _norm(out_channels),
            nn.ReLU(), nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), _norm(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          _norm(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, out, S / stride, S / stride) of (B, in, S, S)."""
        return torch.relu(self.body(x) + self.shortcut(x))


class ConvEncoder(nn.Module):
    """A small ResNet-style image encoder: a 3x3 stem, three residual stages of ``width``,
    ``2 width`` and ``4 width`` channels (the last two halving the side), global average pooling.

    Parameters
    ----------
    in_channels : 1 (grey) or 3 (RGB)
    image_size : side S of its inputs (B, in_channels, S, S) in 0..1
    width : channels of the first stage; the embedding has ``embedding_dim = 4 width``

    A :class:`~alray.models.contract.TaskModel` with no classes: ``encode`` gives the embedding,
    ``head`` an empty (..., 0) tensor, nothing is stochastic.
    """

    input_kind = "image"
    n_classes = 0
    dropout_p = 0.0
    splits_head = True
    has_loss_head = False
    n_features = 0
    text_encoder: str | None = None

    def __init__(self, *, in_channels: int = 3, image_size: int = 32, width: int = 16) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels: expected 1 or 3, got {in_channels}")
        if image_size < 8 or width < 1:
            raise ValueError(f"expected image_size >= 8 and width >= 1, got {image_size} and {width}")
        self.params: dict[str, Any] = {"in_channels": in_channels, "image_size": image_size, "width": width}
        self.in_channels, self.image_size = in_channels, image_size
        self.embedding_dim = 4 * width
        self.backbone = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), _norm(width), nn.ReLU(),
            ResidualBlock(width, width),
            ResidualBlock(width, 2 * width, stride=2),
            ResidualBlock(2 * width, 4 * width, stride=2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, 4 width) of images (B, C, S, S); deterministic."""
        return self.backbone(x)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings (B, D) of images (B, C, S, S), and no predicted loss."""
        return self.backbone(x), None

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """No classes: an empty (..., 0) tensor for embeddings (..., D)."""
        return embedding.new_zeros((*embedding.shape[:-1], 0))

    def stochastic_logits(self, x: torch.Tensor, seeds: np.ndarray, n_samples: int) -> torch.Tensor:
        """No classes and nothing stochastic: empty logits (B, T, 0)."""
        return x.new_zeros((x.shape[0], n_samples, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) of images (B, C, S, S)."""
        return self.backbone(x)


def embed_images(model: Any, images: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Embeddings (N, D) float32 of images (N, C, S, S) by a model's ``encode``, in batches, without gradients."""
    model.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            parts.append(model.encode(torch.from_numpy(images[start:start + batch_size]))[0].numpy())
    return np.concatenate(parts).astype(np.float32, copy=False)
