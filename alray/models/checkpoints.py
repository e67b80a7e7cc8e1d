"""alray checkpoints: a built-in network saved as its registered architecture name, its
constructor parameters and its state dict, all plain tensors and primitives, so that loading
needs no pickle (``torch.load(..., weights_only=True)``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from alray.errors import InputError
from alray.models.files import check_classes, check_file, first_line, torch_load_weights
from alray.models.networks import ARCHITECTURES, _BuiltIn

CHECKPOINT_FORMAT = "alray-checkpoint/1"


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


def load_checkpoint(path: str | Path, *, expected_classes: int | None = None) -> _BuiltIn:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything that needs pickle.

    Raises InputError naming the file and what is wrong with it.
    """
    path = Path(path)
    check_file(path)
    payload = torch_load_weights(path)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"model.checkpoint: {path}: not an alray checkpoint (expected format {CHECKPOINT_FORMAT})")
    name = payload.get("architecture")
    if name not in ARCHITECTURES:
        raise InputError(f"model.checkpoint: {path}: unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    try:
        model = ARCHITECTURES[name](**payload["params"])
        model.load_state_dict(payload["state_dict"])
    except InputError as exc:  # a head checkpoint's encoder file
        raise InputError(f"model.checkpoint: {path}: its encoder: {exc}") from None
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise InputError(f"model.checkpoint: {path}: weights do not fit {name} ({first_line(exc)})") from None
    check_classes(path, int(payload["params"].get("n_classes", 0)), expected_classes)
    model.eval()
    return cast(_BuiltIn, model)
