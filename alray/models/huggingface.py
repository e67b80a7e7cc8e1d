"""Hugging Face image classification models from a local ``save_pretrained`` directory.

The directory holds ``config.json`` and the weights; its ``preprocessor_config.json`` gives the
input size, mean and std (alray decodes and resizes; the processor's normalisation is applied
here). The embedding is what the model's classification layer receives (``classifier``, the
pooled output, flattened), the head is that layer: MC dropout samples the head with alray's
masks, as for a built-in model, at ``model.dropout`` (0.5 when unset). A directory without a
classification layer (a feature-extraction model) gives embeddings only: its scores are null
where no logits exist, so use it for task-independent selection. Needs ``transformers``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alray.errors import InputError

EXTRA_HINT = "Hugging Face models need the hf extra: pip install 'alray[hf]'"


def is_huggingface(path: Path) -> bool:
    """Whether ``path`` is a directory saved by ``save_pretrained`` (it holds ``config.json``)."""
    return path.is_dir() and (path / "config.json").is_file()


class HuggingFaceImageModel(nn.Module):
    """An image classification model behind the :class:`~alray.models.contract.TaskModel` contract."""

    has_loss_head = False
    splits_head = True
    input_kind = "image"
    n_features = 0
    text_encoder: str | None = None
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, path: Path, *, dropout: float | None) -> None:
        super().__init__()
        try:
            from transformers import AutoModelForImageClassification
        except ImportError:
            raise InputError(EXTRA_HINT) from None
        processor = path / "preprocessor_config.json"
        if not processor.is_file():
            raise InputError(f"model.checkpoint {path}: a Hugging Face image model needs its preprocessor_config.json "
                             "(save the image processor with save_pretrained too)")
        settings = json.loads(processor.read_text())
        try:
            self.network = AutoModelForImageClassification.from_pretrained(str(path)).eval()
        except (OSError, ValueError) as exc:
            raise InputError(f"model.checkpoint {path}: not a Hugging Face image classification model "
                             f"({str(exc).splitlines()[0][:160]})") from None
        size = settings.get("size", {})
        self.image_size = int(size.get("height") or size.get("shortest_edge") or 224)
        self.in_channels = int(getattr(self.network.config, "num_channels", 3))
        mean = np.asarray(settings.get("image_mean", [0.0] * self.in_channels), dtype=np.float32)
        std = np.asarray(settings.get("image_std", [1.0] * self.in_channels), dtype=np.float32)
        self.register_buffer("mean", torch.from_numpy(mean).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.from_numpy(std).reshape(1, -1, 1, 1))
        self.classifier: nn.Module = self.network.classifier
        self.n_classes = int(self.network.config.num_labels)
        self.dropout_p = float(dropout if dropout is not None else 0.5)
        captured: dict[str, torch.Tensor] = {}
        self._captured = captured
        self.classifier.register_forward_pre_hook(lambda module, args: captured.__setitem__("input", args[0]))
        with torch.no_grad():
            blank = torch.zeros(1, self.in_channels, self.image_size, self.image_size)
            self.embedding_dim = int(self.encode(blank)[0].shape[1])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The input of the classification layer (B, D) for pixels (B, C, H, W) in 0..1."""
        self._captured.clear()
        self.network(pixel_values=(x - self.mean) / self.std)
        return self._captured["input"].flatten(1), None

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits (..., C) of the classification layer."""
        shape = embedding.shape
        logits = self.classifier(embedding.reshape(-1, shape[-1]))
        return logits.reshape(*shape[:-1], logits.shape[-1])

    def stochastic_logits(self, x: torch.Tensor, seeds: np.ndarray, n_samples: int) -> Any:
        """Not used: the model splits at its classification layer."""
        raise NotImplementedError


def load_huggingface(path: Path, *, dropout: float | None) -> HuggingFaceImageModel:
    """The image classification model saved in directory ``path``; InputError naming what is missing."""
    return HuggingFaceImageModel(path, dropout=dropout)
