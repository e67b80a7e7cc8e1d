"""The built-in networks: :class:`SmallCNN` for images, :class:`FeatureMLP` for feature vectors and
text embeddings, :class:`SequenceCNN` for sequences given as feature vectors (MNIST-1D), all split
at the head as :class:`~alray.models.contract.TaskModel` describes, and the loss prediction module
of Yoo & Kweon (CVPR 2019) that SmallCNN may carry; the self-supervised
:class:`~alray.models.encoders.ConvEncoder` (no classes) is registered beside them.

:data:`ARCHITECTURES` names them; alray checkpoints record that name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from alray.models.contract import TEXT_ENCODERS
from alray.models.encoders import ConvEncoder


class LossPredictionHead(nn.Module):
    """Loss prediction module of Yoo & Kweon (CVPR 2019): global-average-pool each tapped feature
    map, a dense layer and ReLU per tap, concatenate, one dense layer to a scalar."""

    def __init__(self, channels: Sequence[int], hidden: int = 32) -> None:
        super().__init__()
        self.branches = nn.ModuleList([nn.Linear(c, hidden) for c in channels])
        self.out = nn.Linear(hidden * len(channels), 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Predicted losses (B,) of tapped features, each (B, C_i, H, W) or (B, C_i)."""
        parts = []
        for branch, feature in zip(self.branches, features, strict=True):
            pooled = feature.mean(dim=(2, 3)) if feature.dim() == 4 else feature
            parts.append(torch.relu(branch(pooled)))
        return self.out(torch.cat(parts, dim=1)).squeeze(1)


class _BuiltIn(nn.Module):
    """Shared parts of the built-in models: a backbone, dropout, a linear classifier."""

    backbone: nn.Sequential
    dropout: nn.Dropout
    classifier: nn.Linear
    splits_head = True
    has_loss_head = False
    in_channels = 0
    image_size = 0
    n_features = 0
    text_encoder: str | None = None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) of a batch of inputs; deterministic."""
        return self.encode(x)[0]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings (B, D) and, without a loss head, no predicted loss."""
        return self.backbone(x), None

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits (..., C) of (masked) embeddings (..., D)."""
        return self.classifier(embedding)

    def stochastic_logits(self, x: torch.Tensor, seeds: np.ndarray, n_samples: int) -> torch.Tensor:
        """Not used: built-in models split at the head (see :func:`~alray.models.dropout.mc_predict`)."""
        raise NotImplementedError("built-in models sample the head with alray's masks")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed(x)))

    def forward_train(self, x: torch.Tensor, *, detach_loss_features: bool = False) -> tuple[
        torch.Tensor, torch.Tensor | None
    ]:
        """Logits (B, C) with the model's own dropout, and predicted losses (B,) or None: for training."""
        embedding, pred_loss = self.encode(x)
        return self.classifier(self.dropout(embedding)), pred_loss


class SmallCNN(_BuiltIn):
    """A small image classifier: two conv blocks and a dense embedding (the backbone), then
    dropout and a linear classifier (the head); optionally a loss prediction module fed by the
    two conv blocks and the embedding (Yoo & Kweon, CVPR 2019)."""

    input_kind = "image"

    def __init__(
        self, *, in_channels: int = 1, image_size: int = 32, n_classes: int = 10,
        embedding_dim: int = 64, dropout: float = 0.5, channels: int = 16, loss_head: bool = False,
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size: expected a multiple of 4, got {image_size}")
        self.params: dict[str, Any] = {
            "in_channels": in_channels, "image_size": image_size, "n_classes": n_classes,
            "embedding_dim": embedding_dim, "dropout": dropout,
        }
        # Recorded only when they differ from the defaults, so such checkpoints still load in
        # versions that predate them.
        if channels != 16:
            self.params["channels"] = channels
        if loss_head:
            self.params["loss_head"] = True
        self.in_channels, self.image_size, self.n_classes = in_channels, image_size, n_classes
        self.embedding_dim = embedding_dim
        self.dropout_p = dropout
        side = image_size // 4
        self.backbone = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * channels * side * side, embedding_dim), nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embedding_dim, n_classes)
        self.has_loss_head = loss_head
        self.loss_module = LossPredictionHead([channels, 2 * channels, embedding_dim]) if loss_head else None

    # the outputs of the two conv blocks (after pooling) feed the loss prediction module
    _TAPS = (2, 5)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings (B, D) of images (B, C, H, W) and predicted losses (B,) or None; deterministic."""
        return self._encode(x, detach_loss_features=False)

    def _encode(self, x: torch.Tensor, *, detach_loss_features: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.loss_module is None:
            return self.backbone(x), None
        taps = []
        h = x
        for index, layer in enumerate(self.backbone):
            h = layer(h)
            if index in self._TAPS:
                taps.append(h)
        taps.append(h)
        if detach_loss_features:
            taps = [t.detach() for t in taps]
        return h, self.loss_module(taps)

    def forward_train(self, x: torch.Tensor, *, detach_loss_features: bool = False) -> tuple[
        torch.Tensor, torch.Tensor | None
    ]:
        """Logits (B, C) with dropout, predicted losses (B,) or None; the loss module's inputs
        are detached when asked (Yoo & Kweon stop that gradient late in training)."""
        embedding, pred_loss = self._encode(x, detach_loss_features=detach_loss_features)
        return self.classifier(self.dropout(embedding)), pred_loss


class FeatureMLP(_BuiltIn):
    """An MLP for feature vectors or text embeddings: two dense layers (the backbone), dropout and
    a linear head. With ``input_kind="text"`` its inputs are the embeddings of ``text_encoder``."""

    def __init__(
        self, *, n_features: int, n_classes: int, hidden_dim: int = 128,
        embedding_dim: int = 64, dropout: float = 0.5, input_kind: str = "features",
        text_encoder: str | None = None,
    ) -> None:
        super().__init__()
        if input_kind not in ("features", "text"):
            raise ValueError(f"input_kind: expected 'features' or 'text', got {input_kind!r}")
        if input_kind == "text" and text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder: expected one of {list(TEXT_ENCODERS)}, got {text_encoder!r}")
        self.params: dict[str, Any] = {
            "n_features": n_features, "n_classes": n_classes, "hidden_dim": hidden_dim,
            "embedding_dim": embedding_dim, "dropout": dropout,
        }
        if input_kind != "features":
            self.params.update(input_kind=input_kind, text_encoder=text_encoder)
        self.input_kind = input_kind
        self.text_encoder = text_encoder
        self.n_features, self.n_classes, self.embedding_dim = n_features, n_classes, embedding_dim
        self.dropout_p = dropout
        self.backbone = nn.Sequential(
            nn.Linear(n_features, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, embedding_dim), nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embedding_dim, n_classes)


class SequenceCNN(_BuiltIn):
    """A 1-D CNN for sequences given as feature vectors (B, L), such as MNIST-1D: three strided
    convolutions over the sequence and a dense embedding (the backbone), then dropout and a linear
    head. The layout follows the CNN of the MNIST-1D paper (Greydanus & Kobak, 2020: 25 channels,
    kernel 5, stride 2), which reports about 94% with every label."""

    input_kind = "features"

    def __init__(
        self, *, n_features: int, n_classes: int, channels: int = 25, embedding_dim: int = 64,
        dropout: float = 0.5, kernel_size: int = 5,
    ) -> None:
        super().__init__()
        if n_features < 8 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"expected n_features >= 8 and an odd kernel_size, got {n_features} and {kernel_size}")
        self.params: dict[str, Any] = {
            "n_features": n_features, "n_classes": n_classes, "channels": channels,
            "embedding_dim": embedding_dim, "dropout": dropout, "kernel_size": kernel_size,
        }
        self.n_features, self.n_classes, self.embedding_dim = n_features, n_classes, embedding_dim
        self.dropout_p = dropout
        pad = kernel_size // 2
        length = n_features
        for _ in range(3):
            length = (length + 2 * pad - kernel_size) // 2 + 1
        self.backbone = nn.Sequential(
            nn.Unflatten(1, (1, n_features)),
            nn.Conv1d(1, channels, kernel_size, stride=2, padding=pad), nn.ReLU(),
            nn.Conv1d(channels, channels, kernel_size, stride=2, padding=pad), nn.ReLU(),
            nn.Conv1d(channels, channels, kernel_size, stride=2, padding=pad), nn.ReLU(),
            nn.Flatten(), nn.Linear(channels * length, embedding_dim), nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embedding_dim, n_classes)


from alray.models.encoder_head import EncoderHead  # noqa: E402  (it imports nothing of this module)

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN, "feature_mlp": FeatureMLP, "sequence_cnn": SequenceCNN, "conv_encoder": ConvEncoder,
    "encoder_head": EncoderHead,
}
