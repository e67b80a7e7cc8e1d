"""torchvision classifiers by name (``torchvision:resnet18``) with a state-dict weights file: the last
linear layer is the head, everything before it the backbone; inputs are normalised with the
ImageNet mean and std. torchvision is optional: it is imported when such a model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from alray.errors import InputError
from alray.models.files import first_line, torch_load_weights

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchvisionModel(nn.Module):
    """A torchvision classifier split at its last linear layer (the head)."""

    input_kind = "image"
    splits_head = True
    has_loss_head = False
    in_channels = 3
    n_features = 0
    text_encoder: str | None = None
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, network: nn.Module, *, image_size: int, dropout: float | None) -> None:
        super().__init__()
        parent, attribute, last = _last_linear(network)
        # Dropout layers of the network stay inactive (eval); the MC rate defaults to that of the
        # last one before the head, where torchvision puts it (VGG, MobileNet, EfficientNet).
        rates = [m.p for m in network.modules() if isinstance(m, nn.Dropout)]
        self.dropout_p = float(dropout if dropout is not None else (rates[-1] if rates else 0.0))
        if isinstance(parent, nn.Sequential):
            parent[int(attribute)] = nn.Identity()
        else:
            setattr(parent, attribute, nn.Identity())
        self.backbone, self.classifier = network, last
        self.n_classes, self.embedding_dim, self.image_size = last.out_features, last.in_features, image_size
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def load(cls, path: Path, name: str, *, image_size: int, dropout: float | None) -> TorchvisionModel:
        """Build torchvision's ``name`` with as many classes as the weights of ``path`` have."""
        try:
            import torchvision
        except ImportError:  # also raised when an installed torchvision does not fit this torch
            raise InputError(
                f"model.architecture: torchvision:{name} needs torchvision, which is not importable here "
                "(install the torchvision build that matches your torch)"
            ) from None
        state = torch_load_weights(path)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise InputError(f"model.checkpoint: {path}: expected a state dict of tensors for torchvision:{name}")
        try:
            probe = torchvision.models.get_model(name, weights=None)
        except ValueError:
            raise InputError(f"model.architecture: unknown torchvision model {name!r}") from None
        head_key = _last_linear_key(probe)
        weight = state.get(f"{head_key}.weight")
        if weight is None:
            raise InputError(f"model.checkpoint: {path}: no {head_key}.weight for torchvision:{name}")
        network = torchvision.models.get_model(name, weights=None, num_classes=int(weight.shape[0]))
        try:
            network.load_state_dict(state)
        except RuntimeError as exc:
            raise InputError(f"model.checkpoint: {path}: weights do not fit torchvision:{name} "
                             f"({first_line(exc)})") from None
        model = cls(network, image_size=image_size, dropout=dropout)
        model.eval()
        return model

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Penultimate features (B, D) of images (B, 3, S, S) in 0..1."""
        return self.backbone((x - self.mean) / self.std), None

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits (..., C) of the network's last linear layer."""
        return self.classifier(embedding)

    def stochastic_logits(self, x: torch.Tensor, seeds: np.ndarray, n_samples: int) -> torch.Tensor:
        """Not used: torchvision models split at the head."""
        raise NotImplementedError("torchvision models sample the head with alray's masks")


def _last_linear_key(network: nn.Module) -> str:
    return [name for name, m in network.named_modules() if isinstance(m, nn.Linear)][-1]


def _last_linear(network: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    key = _last_linear_key(network)
    parent_key, _, attribute = key.rpartition(".")
    parent = network.get_submodule(parent_key) if parent_key else network
    return parent, attribute, cast(nn.Linear, network.get_submodule(key))
