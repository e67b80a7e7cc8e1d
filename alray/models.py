"""Task models: built-in architectures split into a deterministic backbone and a dropout head,
their checkpoints (loaded with ``weights_only=True``), and MC-dropout prediction."""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alray.errors import InputError

CHECKPOINT_FORMAT = "alray-checkpoint/1"


class SmallCNN(nn.Module):
    """A small image classifier: two conv blocks and a dense embedding (the backbone), then
    dropout and a linear classifier (the head)."""

    input_kind = "image"

    def __init__(
        self, *, in_channels: int = 1, image_size: int = 32, n_classes: int = 10,
        embedding_dim: int = 64, dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size: expected a multiple of 4, got {image_size}")
        self.params = {
            "in_channels": in_channels, "image_size": image_size, "n_classes": n_classes,
            "embedding_dim": embedding_dim, "dropout": dropout,
        }
        self.in_channels, self.image_size, self.n_classes = in_channels, image_size, n_classes
        self.dropout_p = dropout
        side = image_size // 4
        self.backbone = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * side * side, embedding_dim), nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embedding_dim, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) of inputs (B, C, H, W); deterministic."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed(x)))


class FeatureMLP(nn.Module):
    """An MLP for feature vectors: two dense layers (the backbone), dropout and a linear head."""

    input_kind = "features"

    def __init__(
        self, *, n_features: int, n_classes: int, hidden_dim: int = 128,
        embedding_dim: int = 64, dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.params = {
            "n_features": n_features, "n_classes": n_classes, "hidden_dim": hidden_dim,
            "embedding_dim": embedding_dim, "dropout": dropout,
        }
        self.n_features, self.n_classes = n_features, n_classes
        self.dropout_p = dropout
        self.backbone = nn.Sequential(
            nn.Linear(n_features, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, embedding_dim), nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embedding_dim, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) of feature vectors (B, F); deterministic."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed(x)))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"small_cnn": SmallCNN, "feature_mlp": FeatureMLP}


def architecture_name(model: nn.Module) -> str:
    """Registry name of a built-in model."""
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ValueError(f"model: {type(model).__name__} is not a registered architecture")


def save_checkpoint(model: nn.Module, path: str | Path, *, metadata: dict[str, Any] | None = None) -> None:
    """Save a built-in model as plain tensors and primitives, loadable with ``weights_only=True``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "architecture": architecture_name(model),
        "params": dict(model.params),  # type: ignore[arg-type]
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata or {},
    }
    torch.save(payload, path)


def load_checkpoint(path: str | Path, *, expected_classes: int | None = None) -> nn.Module:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything that needs pickle.

    Raises InputError naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model.checkpoint: {path}: file not found")
    if not zipfile.is_zipfile(path):
        raise InputError(f"model.checkpoint: {path}: unreadable checkpoint (not a torch.save file)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(
            f"model.checkpoint: {path}: refused, it needs pickle to load (save a state dict of tensors)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(f"model.checkpoint: {path}: unreadable checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"model.checkpoint: {path}: not an alray checkpoint (expected format {CHECKPOINT_FORMAT})")
    name = payload.get("architecture")
    if name not in ARCHITECTURES:
        raise InputError(f"model.checkpoint: {path}: unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    try:
        model = ARCHITECTURES[name](**payload["params"])
        model.load_state_dict(payload["state_dict"])
    except (TypeError, RuntimeError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InputError(f"model.checkpoint: {path}: weights do not fit {name} ({first_line})") from None
    n_classes = int(payload["params"].get("n_classes", 0))
    if expected_classes is not None and n_classes != expected_classes:
        raise InputError(f"model.checkpoint: {path}: has {n_classes} classes, expected {expected_classes}")
    model.eval()
    return model


# --- MC dropout ---------------------------------------------------------------------------

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # A counter-based generator: every mask bit is a pure function of (seed, sample id, position),
    # so masks do not depend on batch composition, actor count or order of arrival.
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def id_keys(ids: Sequence[str]) -> np.ndarray:
    """A stable 64-bit key per sample id (BLAKE2b), shape (B,) uint64."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little") for i in ids],
        dtype=np.uint64,
    )


def dropout_masks(keys: np.ndarray, *, n_samples: int, width: int, p: float, seed: int) -> np.ndarray:
    """Inverted-dropout multipliers of shape (B, T, D): 0 where dropped, 1/(1-p) where kept.

    Row b depends only on ``keys[b]`` and ``seed``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p: expected a dropout rate in [0, 1), got {p}")
    seed_key = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    sample_keys = _splitmix64(keys.astype(np.uint64) ^ seed_key)
    counters = np.arange(n_samples * width, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
    with np.errstate(over="ignore"):
        bits = _splitmix64(sample_keys[:, None] ^ counters[None, :])
    uniform = (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    keep = (uniform >= p).astype(np.float32) / np.float32(1.0 - p)
    return keep.reshape(len(keys), n_samples, width)


@torch.no_grad()
def mc_predict(
    model: nn.Module, x: torch.Tensor, masks: torch.Tensor, *, head_only: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings and MC-dropout class probabilities.

    Parameters
    ----------
    model : a built-in model (``embed``, ``classifier``)
    x : tensor of inputs, batch first (B, ...)
    masks : tensor (B, T, D) of dropout multipliers from :func:`dropout_masks`
    head_only : run the backbone once and sample only the head (fast); otherwise T full passes
        with the same masks, which gives the same numbers for these models.

    Returns
    -------
    embeddings (B, D) and probabilities (B, T, C)
    """
    embedding = model.embed(x)  # type: ignore[operator]
    classifier: nn.Module = model.classifier  # type: ignore[assignment]
    if head_only:
        logits = classifier(embedding[:, None, :] * masks)
    else:
        passes = [classifier(model.embed(x) * masks[:, t, :]) for t in range(masks.shape[1])]  # type: ignore[operator]
        logits = torch.stack(passes, dim=1)
    return embedding, torch.softmax(logits, dim=-1)


def pick_device(requested: str) -> torch.device:
    """The torch device for ``model.device`` (auto: CUDA when visible, else CPU)."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("model.device: cuda was asked for but no GPU is visible to this worker")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")
