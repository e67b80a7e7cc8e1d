"""The model contract: what scoring needs of a task model (:class:`TaskModel`) and the kinds of
input a model may take.

A task model maps a batch of inputs (B, ...) to

- ``encode(x) -> (embedding (B, D), pred_loss (B,) or None)``: deterministic;
- ``head(embedding) -> logits (..., C)``: the layer after the MC-dropout point; alray multiplies
  the embedding by its own dropout masks, so one backbone pass serves all T samples;
- or, for a model that does not split (``splits_head`` False), ``stochastic_logits(x, seeds, T)``:
  T full passes with the model's own dropout layers active, seeded per sample.

A model with ``n_classes`` 0 gives embeddings only (a feature extractor, a self-supervised
encoder): scoring writes its embeddings and leaves every uncertainty score null, and only
strategies that need no predictions may select on it.

A ``text`` model either names a ``text_encoder`` (its inputs are that encoder's embeddings) or
tokenises texts itself: ``tokenize(texts) -> int64 array (B, ...)``, the rows ``encode`` takes.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

INPUT_KINDS = ("image", "features", "text")
# The text encoders a text model may name; alray.payloads loads them.
TEXT_ENCODERS = ("all-minilm-l6-v2",)


@runtime_checkable
class TaskModel(Protocol):
    """What scoring needs of a model; the built-in architectures and the loaders' adapters have it.

    Attributes
    ----------
    input_kind : "image" (tensors (B, in_channels, image_size, image_size) in 0..1), "features"
        (B, n_features) or "text" (B, n_features) embeddings of ``text_encoder``
    n_classes, embedding_dim : sizes C (0: embeddings only) and D
    dropout_p : MC-dropout rate applied to the embedding before ``head``
    splits_head : whether ``head`` exists (else MC dropout uses ``stochastic_logits``)
    has_loss_head : whether ``encode`` returns a predicted loss
    """

    input_kind: str
    n_classes: int
    embedding_dim: int
    dropout_p: float
    splits_head: bool
    has_loss_head: bool
    in_channels: int
    image_size: int
    n_features: int
    text_encoder: str | None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings (B, D) and predicted losses (B,) or None; deterministic."""
        ...

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits (..., C) of embeddings (..., D), already multiplied by dropout masks."""
        ...

    def stochastic_logits(self, x: torch.Tensor, seeds: np.ndarray, n_samples: int) -> torch.Tensor:
        """Logits (B, T, C) of T stochastic full passes, row b seeded by ``seeds[b]``."""
        ...

    def to(self, device: torch.device) -> Any:
        """Move to a device (nn.Module.to)."""
        ...
