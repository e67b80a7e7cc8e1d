"""A classification head trained on a frozen encoder: the first task model after a cold start.

:class:`EncoderHead` joins any model alray loads that gives embeddings (a self-supervised
encoder, a Hugging Face feature extractor, an ONNX encoder, or a classifier whose head is
replaced) and a linear layer to the labels, trained on the encoder's embeddings of the labeled
samples with dropout before it (:func:`alray.training.train_head`). Its alray checkpoint holds
the head's weights and names the encoder's file by path: the encoder's weights stay in their own
file, loaded as ``model.checkpoint`` would load them. MC dropout samples the head with alray's
masks at the rate it was trained with, as for a built-in model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from alray.models.contract import TaskModel


class EncoderHead(nn.Module):
    """An encoder's embeddings (B, D) and a linear head (D -> C) behind the TaskModel contract."""

    has_loss_head = False
    splits_head = True
    encoder: TaskModel

    def __init__(self, encoder: str, embedding_dim: int, n_classes: int, dropout: float = 0.5,
                 classes: list[str] | None = None, encoder_format: str = "auto", image_size: int = 224,
                 max_tokens: int | None = None) -> None:
        super().__init__()
        from alray.models.loading import load_model

        self.params: dict[str, Any] = {
            "encoder": encoder, "embedding_dim": embedding_dim, "n_classes": n_classes, "dropout": dropout,
            "classes": list(classes or [str(c) for c in range(n_classes)]), "encoder_format": encoder_format,
            "image_size": image_size, "max_tokens": max_tokens}
        loaded = load_model(encoder, model_format=encoder_format, image_size=image_size, max_tokens=max_tokens)
        if loaded.embedding_dim != embedding_dim:
            raise ValueError(f"encoder {encoder} gives {loaded.embedding_dim}-dimensional embeddings, the head "
                             f"takes {embedding_dim}")
        object.__setattr__(self, "encoder", loaded)  # not a submodule: its weights stay in its own file
        self.classifier = nn.Linear(embedding_dim, n_classes)
        self.classes = self.params["classes"]
        self.n_classes, self.embedding_dim, self.dropout_p = n_classes, embedding_dim, float(dropout)
        for name in ("input_kind", "in_channels", "image_size", "n_features", "text_encoder"):
            setattr(self, name, getattr(loaded, name))
        tokenize = getattr(loaded, "tokenize", None)
        if callable(tokenize):
            self.tokenize = tokenize

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The encoder's embeddings (B, D); no predicted loss."""
        return self.encoder.encode(x)[0], None

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits (..., C) of (masked) embeddings (..., D)."""
        return self.classifier(embedding)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of embeddings (B, D): what training fits."""
        return self.classifier(embedding)

    def stochastic_logits(self, x: torch.Tensor, seeds: Any, n_samples: int) -> torch.Tensor:
        """Not used: the model splits at its head."""
        raise NotImplementedError

    def to(self, *args: Any, **kwargs: Any) -> EncoderHead:  # type: ignore[override]
        """Move the head and the encoder."""
        super().to(*args, **kwargs)
        self.encoder.to(*args, **kwargs)
        return self
