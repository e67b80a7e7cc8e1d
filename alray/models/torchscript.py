"""TorchScript models: a scripted module saved with an ``alray.json`` extra file that names its
input (``input_kind``, ``n_classes``, and ``in_channels`` + ``image_size`` or ``n_features``,
optionally ``dropout`` and ``text_encoder``), loaded behind the
:class:`~alray.models.contract.TaskModel` contract as a :class:`ScriptedModel`.

Either the scripted module exports ``embed(x)`` and ``head(embedding)`` (head-only MC dropout at
rate ``dropout``), or its ``forward`` returns logits: then the embedding is the deterministic
logits and MC dropout runs T full passes with the module's dropout layers in train mode
(BatchNorm stays in eval mode).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alray.errors import InputError
from alray.models.contract import INPUT_KINDS, TEXT_ENCODERS
from alray.models.files import first_line

TORCHSCRIPT_METADATA = "alray.json"

_DROPOUT_MODULES = frozenset({"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"})


def save_torchscript(module: nn.Module, path: str | Path, *, input_kind: str, n_classes: int,
                     in_channels: int = 0, image_size: int = 0, n_features: int = 0,
                     dropout: float | None = None, text_encoder: str | None = None) -> None:
    """Script ``module`` and save it with the ``alray.json`` metadata that
    :func:`~alray.models.loading.load_model` reads.

    To allow head-only MC dropout, give the module ``@torch.jit.export`` methods ``embed(x)``
    returning (B, D) and ``head(embedding)`` returning (B, C) logits; otherwise ``forward`` must
    return logits (B, C) and its dropout layers are sampled with T full passes.
    """
    metadata = {"input_kind": input_kind, "n_classes": n_classes, "in_channels": in_channels,
                "image_size": image_size, "n_features": n_features, "dropout": dropout,
                "text_encoder": text_encoder}
    scripted = torch.jit.script(module.eval())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path), _extra_files={TORCHSCRIPT_METADATA: json.dumps(metadata)})


class ScriptedModel(nn.Module):
    """A TorchScript module behind the :class:`~alray.models.contract.TaskModel` contract (see the
    module docstring)."""

    has_loss_head = False

    def __init__(self, scripted: torch.jit.ScriptModule, metadata: dict[str, Any], *, dropout: float | None) -> None:
        super().__init__()
        self.scripted = scripted
        self.input_kind = str(metadata["input_kind"])
        self.n_classes = int(metadata["n_classes"])
        self.in_channels = int(metadata.get("in_channels") or 0)
        self.image_size = int(metadata.get("image_size") or 0)
        self.n_features = int(metadata.get("n_features") or 0)
        self.text_encoder = metadata.get("text_encoder")
        self.splits_head = hasattr(scripted, "embed") and hasattr(scripted, "head")
        recorded = metadata.get("dropout")
        self.dropout_p = float(recorded if recorded is not None else (dropout if dropout is not None else 0.5))
        self._dropouts = [m for m in scripted.modules() if getattr(m, "original_name", "") in _DROPOUT_MODULES]
        # The width D is not recorded: one pass over a blank input tells it.
        blank = (torch.zeros(1, self.in_channels, self.image_size, self.image_size) if self.input_kind == "image"
                 else torch.zeros(1, self.n_features))
        with torch.no_grad():
            self.embedding_dim = int(self.encode(blank)[0].shape[1])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings (B, D): ``embed(x)`` when exported, else the deterministic logits (B, C)."""
        return (self.scripted.embed(x) if self.splits_head else self.scripted(x)), None

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits (..., C) of the scripted ``head``, flattened to 2-D for it."""
        shape = embedding.shape
        logits = self.scripted.head(embedding.reshape(-1, shape[-1]))
        return logits.reshape(*shape[:-1], logits.shape[-1])

    def stochastic_logits(self, x: torch.Tensor, seeds: np.ndarray, n_samples: int) -> torch.Tensor:
        """Logits (B, T, C): per sample, one forward of T copies with only the dropout layers in
        train mode, the RNG seeded by that sample's seed so results do not depend on the batch."""
        for module in self._dropouts:
            module.train()
        try:
            devices = [x.device.index or 0] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                rows = []
                for b in range(x.shape[0]):
                    torch.manual_seed(int(seeds[b]))
                    rows.append(self.scripted(x[b : b + 1].expand(n_samples, *x.shape[1:])))
        finally:
            for module in self._dropouts:
                module.eval()
        return torch.stack(rows) if rows else torch.zeros(0, n_samples, self.n_classes, device=x.device)


def load_torchscript(path: str | Path, *, dropout: float | None = None) -> ScriptedModel:
    """Load a TorchScript file with its ``alray.json`` metadata (see :func:`save_torchscript`)."""
    path = Path(path)
    extra = {TORCHSCRIPT_METADATA: ""}
    try:
        scripted = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, OSError, ValueError) as exc:
        raise InputError(f"model.checkpoint: {path}: unreadable TorchScript file ({first_line(exc)})") from None
    raw = extra[TORCHSCRIPT_METADATA]
    if not raw:
        raise InputError(f"model.checkpoint: {path}: TorchScript file without {TORCHSCRIPT_METADATA} "
                         "(save it with alray.models.save_torchscript)")
    try:
        metadata = json.loads(raw)
    except ValueError:
        raise InputError(f"model.checkpoint: {path}: {TORCHSCRIPT_METADATA} is not valid JSON") from None
    if isinstance(metadata, dict) and metadata.get("task") == "detection":
        raise InputError(f"model.checkpoint: {path}: a detector ({TORCHSCRIPT_METADATA} says task: detection); "
                         "score it with task: detection")
    if not isinstance(metadata, dict) or metadata.get("input_kind") not in INPUT_KINDS:
        raise InputError(f"model.checkpoint: {path}: {TORCHSCRIPT_METADATA}: input_kind must be one of "
                         f"{list(INPUT_KINDS)}")
    needs = {"image": ("n_classes", "in_channels", "image_size"), "features": ("n_classes", "n_features"),
             "text": ("n_classes", "n_features", "text_encoder")}[metadata["input_kind"]]
    missing = [key for key in needs if not metadata.get(key)]
    if missing:
        raise InputError(f"model.checkpoint: {path}: {TORCHSCRIPT_METADATA}: missing {missing}")
    if metadata["input_kind"] == "text" and metadata["text_encoder"] not in TEXT_ENCODERS:
        raise InputError(f"model.checkpoint: {path}: {TORCHSCRIPT_METADATA}: unknown text_encoder "
                         f"{metadata['text_encoder']!r}; known: {list(TEXT_ENCODERS)}")
    try:
        model = ScriptedModel(scripted.eval(), metadata, dropout=dropout)
    except (RuntimeError, IndexError) as exc:
        raise InputError(f"model.checkpoint: {path}: the module fails on a blank input of the shape "
                         f"{TORCHSCRIPT_METADATA} gives ({first_line(exc)})") from None
    model.eval()
    return model


def is_torchscript(path: str | Path) -> bool:
    """Whether a file is a TorchScript archive (``torch.jit.save``) rather than a ``torch.save`` one."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)
