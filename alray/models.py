"""Task models: what scoring needs of a model (:class:`TaskModel`), the built-in architectures,
loading checkpoints, TorchScript files and torchvision weights (never through pickle), and
MC-dropout prediction.

The model contract
------------------
A task model maps a batch of inputs (B, ...) to

- ``encode(x) -> (embedding (B, D), pred_loss (B,) or None)``: deterministic;
- ``head(embedding) -> logits (..., C)``: the layer after the MC-dropout point; alray multiplies
  the embedding by its own dropout masks, so one backbone pass serves all T samples;
- or, for a model that does not split (``splits_head`` False), ``stochastic_logits(x, seeds, T)``:
  T full passes with the model's own dropout layers active, seeded per sample.

Three sources give such a model:

1. an alray checkpoint (:func:`save_checkpoint`): a registered architecture and its state dict;
2. a TorchScript file (:func:`save_torchscript`) with an ``alray.json`` extra file naming the input
   (``input_kind``, ``n_classes``, and ``in_channels`` + ``image_size`` or ``n_features``,
   optionally ``dropout`` and ``text_encoder``). Either the scripted module exports ``embed(x)``
   and ``head(embedding)`` (head-only MC dropout at rate ``dropout``), or its ``forward`` returns
   logits: then the embedding is the deterministic logits and MC dropout runs T full passes with
   the module's dropout layers in train mode (BatchNorm stays in eval mode);
3. a torchvision architecture by name (``torchvision:resnet18``) with a state-dict weights file:
   the last linear layer is the head, everything before it the backbone; inputs are normalised
   with the ImageNet mean and std.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
import torch
from torch import nn

from alray.errors import InputError

CHECKPOINT_FORMAT = "alray-checkpoint/1"
TORCHSCRIPT_METADATA = "alray.json"
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
    n_classes, embedding_dim : sizes C and D
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
        """Not used: built-in models split at the head (see :func:`mc_predict`)."""
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else exc.__class__.__name__


def _torch_load_weights(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(
            f"model.checkpoint: {path}: refused, it needs pickle to load (save a state dict of tensors)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(f"model.checkpoint: {path}: unreadable checkpoint ({exc.__class__.__name__})") from None


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"model.checkpoint: {path}: file not found")
    if not zipfile.is_zipfile(path):
        raise InputError(f"model.checkpoint: {path}: unreadable checkpoint (not a torch.save or TorchScript file)")


def _check_classes(path: Path, n_classes: int, expected_classes: int | None) -> None:
    if expected_classes is not None and n_classes != expected_classes:
        raise InputError(f"model.checkpoint: {path}: has {n_classes} classes, expected {expected_classes}")


def load_checkpoint(path: str | Path, *, expected_classes: int | None = None) -> _BuiltIn:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything that needs pickle.

    Raises InputError naming the file and what is wrong with it.
    """
    path = Path(path)
    _check_file(path)
    payload = _torch_load_weights(path)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"model.checkpoint: {path}: not an alray checkpoint (expected format {CHECKPOINT_FORMAT})")
    name = payload.get("architecture")
    if name not in ARCHITECTURES:
        raise InputError(f"model.checkpoint: {path}: unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    try:
        model = ARCHITECTURES[name](**payload["params"])
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise InputError(f"model.checkpoint: {path}: weights do not fit {name} ({_first_line(exc)})") from None
    _check_classes(path, int(payload["params"].get("n_classes", 0)), expected_classes)
    model.eval()
    return cast(_BuiltIn, model)


def is_torchscript(path: str | Path) -> bool:
    """Whether a file is a TorchScript archive (``torch.jit.save``) rather than a ``torch.save`` one."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def load_model(
    path: str | Path, *, architecture: str | None = None, image_size: int = 224, dropout: float | None = None,
    expected_classes: int | None = None,
) -> TaskModel:
    """Load a task model in eval mode on the CPU, from any of the sources of the module docstring.

    Parameters
    ----------
    path : an alray checkpoint, a TorchScript file, or (with ``architecture``) a state dict
    architecture : ``"torchvision:NAME"`` to build torchvision's NAME and load ``path`` into it
    image_size : input side of a torchvision model
    dropout : MC-dropout rate for models that record none (torchvision, TorchScript); ignored
        for alray checkpoints, which record theirs
    expected_classes : refuse a model with another number of classes

    Raises InputError naming the file and what is wrong with it.
    """
    path = Path(path)
    if architecture is not None:
        if not architecture.startswith("torchvision:"):
            raise InputError(f"model.architecture: expected 'torchvision:NAME', got {architecture!r}")
        _check_file(path)
        model: TaskModel = TorchvisionModel.load(
            path, architecture.removeprefix("torchvision:"), image_size=image_size, dropout=dropout
        )
    else:
        _check_file(path)
        loaded: nn.Module = load_torchscript(path, dropout=dropout) if is_torchscript(path) else load_checkpoint(path)
        model = cast(TaskModel, loaded)
    _check_classes(path, model.n_classes, expected_classes)
    return model


# --- TorchScript ---------------------------------------------------------------------------

_DROPOUT_MODULES = frozenset({"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"})


def save_torchscript(module: nn.Module, path: str | Path, *, input_kind: str, n_classes: int,
                     in_channels: int = 0, image_size: int = 0, n_features: int = 0,
                     dropout: float | None = None, text_encoder: str | None = None) -> None:
    """Script ``module`` and save it with the ``alray.json`` metadata :func:`load_model` reads.

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
    """A TorchScript module behind the :class:`TaskModel` contract (see the module docstring)."""

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
        raise InputError(f"model.checkpoint: {path}: unreadable TorchScript file ({_first_line(exc)})") from None
    raw = extra[TORCHSCRIPT_METADATA]
    if not raw:
        raise InputError(f"model.checkpoint: {path}: TorchScript file without {TORCHSCRIPT_METADATA} "
                         "(save it with alray.models.save_torchscript)")
    try:
        metadata = json.loads(raw)
    except ValueError:
        raise InputError(f"model.checkpoint: {path}: {TORCHSCRIPT_METADATA} is not valid JSON") from None
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
                         f"{TORCHSCRIPT_METADATA} gives ({_first_line(exc)})") from None
    model.eval()
    return model


# --- torchvision ---------------------------------------------------------------------------

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
        state = _torch_load_weights(path)
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
                             f"({_first_line(exc)})") from None
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


def sample_seeds(keys: np.ndarray, *, seed: int) -> np.ndarray:
    """A 64-bit seed per sample, shape (B,) uint64, a function of its key and ``seed`` alone."""
    seed_key = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    return _splitmix64(keys.astype(np.uint64) ^ seed_key)


def dropout_masks(keys: np.ndarray, *, n_samples: int, width: int, p: float, seed: int) -> np.ndarray:
    """Inverted-dropout multipliers of shape (B, T, D): 0 where dropped, 1/(1-p) where kept.

    Row b depends only on ``keys[b]`` and ``seed``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p: expected a dropout rate in [0, 1), got {p}")
    counters = np.arange(n_samples * width, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
    with np.errstate(over="ignore"):
        bits = _splitmix64(sample_seeds(keys, seed=seed)[:, None] ^ counters[None, :])
    uniform = (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    keep = (uniform >= p).astype(np.float32) / np.float32(1.0 - p)
    return keep.reshape(len(keys), n_samples, width)


def _int64(constant: int) -> int:
    # A uint64 constant as the int64 of the same bits: torch has no uint64 arithmetic.
    return constant - (1 << 64) if constant >= 1 << 63 else constant


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    # A logical right shift of int64 tensors (torch's >> is arithmetic: it copies the sign bit).
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64_torch(z: torch.Tensor) -> torch.Tensor:
    # _splitmix64 on int64 tensors: multiplication and addition wrap modulo 2**64 like uint64's.
    z = z + _int64(0x9E3779B97F4A7C15)
    z = (z ^ _shift_right(z, 30)) * _int64(0xBF58476D1CE4E5B9)
    z = (z ^ _shift_right(z, 27)) * _int64(0x94D049BB133111EB)
    return z ^ _shift_right(z, 31)


def dropout_masks_torch(keys: np.ndarray, *, n_samples: int, width: int, p: float, seed: int,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """:func:`dropout_masks` made on ``device``, bit for bit the same: float32 (B, T, D).

    Scoring uses this one, so a GPU makes its own masks instead of receiving B x T x D floats
    from the host.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p: expected a dropout rate in [0, 1), got {p}")
    seeds = torch.from_numpy(sample_seeds(keys, seed=seed).view(np.int64)).to(device)
    counters = torch.arange(n_samples * width, dtype=torch.int64, device=device) * _int64(0xD1B54A32D192ED03)
    bits = _splitmix64_torch(seeds[:, None] ^ counters[None, :])
    # numpy keeps a bit where (bits >> 11) * 2**-53 >= p; with integers that is bits >> 11 >= ceil(p * 2**53).
    keep = _shift_right(bits, 11) >= math.ceil(p * float(1 << 53))
    scale = float(np.float32(1.0) / np.float32(1.0 - p))
    masks = torch.where(keep, torch.tensor(scale, dtype=torch.float32, device=device),
                        torch.tensor(0.0, dtype=torch.float32, device=device))
    return masks.reshape(len(keys), n_samples, width)


@dataclass
class Prediction:
    """What one scoring pass gives per sample: embeddings (B, D), MC class probabilities
    (B, T, C) and predicted losses (B,) or None when the model has no loss head."""

    embedding: torch.Tensor
    probs: torch.Tensor
    pred_loss: torch.Tensor | None


@torch.no_grad()
def mc_predict(
    model: TaskModel, x: torch.Tensor, keys: np.ndarray, *, n_samples: int, seed: int, head_only: bool = True
) -> Prediction:
    """Embeddings, MC-dropout class probabilities and predicted losses of a batch.

    Parameters
    ----------
    model : a :class:`TaskModel` in eval mode on ``x.device``
    x : tensor of inputs, batch first (B, ...)
    keys : uint64 array (B,) of :func:`id_keys`: with ``seed``, they alone fix each sample's masks
    n_samples : MC samples T
    seed : the run's seed
    head_only : run the backbone once and sample only the head T times in one batched call (fast);
        otherwise T full passes with the same masks, which gives the same numbers. Models that do
        not split (``splits_head`` False) always run T full passes.

    Returns
    -------
    Prediction with embeddings (B, D), probabilities (B, T, C), predicted losses (B,) or None
    """
    embedding, pred_loss = model.encode(x)
    if not model.splits_head:
        logits = model.stochastic_logits(x, sample_seeds(keys, seed=seed), n_samples)
        return Prediction(embedding, torch.softmax(logits.float(), dim=-1), pred_loss)
    masks = dropout_masks_torch(keys, n_samples=n_samples, width=int(embedding.shape[1]), p=model.dropout_p,
                                seed=seed, device=embedding.device).to(embedding.dtype)
    if head_only:
        logits = model.head(embedding[:, None, :] * masks)
    else:
        logits = torch.stack([model.head(model.encode(x)[0] * masks[:, t, :]) for t in range(n_samples)], dim=1)
    return Prediction(embedding, torch.softmax(logits.float(), dim=-1), pred_loss)


def pick_device(requested: str) -> torch.device:
    """The torch device for ``model.device`` (auto: CUDA when visible, else CPU)."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("model.device: cuda was asked for but no GPU is visible to this worker")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")
