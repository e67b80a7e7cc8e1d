"""Reading model files: the checks that every format's loader makes, ``torch.load`` restricted to
weights (never pickle), and the wording of their errors, which name the file and the config key."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from alray.errors import InputError


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 160 characters), else its class name."""
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else exc.__class__.__name__


def check_exists(path: Path) -> None:
    """Refuse a path that is not a file."""
    if not path.is_file():
        raise InputError(f"model.checkpoint: {path}: file not found")


def unrecognised_file(path: Path) -> InputError:
    """The error for a file that is in none of the formats alray reads."""
    return InputError(f"model.checkpoint: {path}: unreadable checkpoint (not a torch.save or TorchScript file)")


def check_file(path: Path) -> None:
    """Refuse a path that is not a file, or not a zip archive (as ``torch.save`` and ``torch.jit.save`` write)."""
    check_exists(path)
    if not zipfile.is_zipfile(path):
        raise unrecognised_file(path)


def check_classes(path: Path, n_classes: int, expected_classes: int | None) -> None:
    """Refuse a model with other than ``expected_classes`` classes (when that is given)."""
    if expected_classes is not None and n_classes != expected_classes:
        raise InputError(f"model.checkpoint: {path}: has {n_classes} classes, expected {expected_classes}")


def torch_load_weights(path: Path) -> Any:
    """``torch.load`` of tensors and primitives only (``weights_only``), on the CPU."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(
            f"model.checkpoint: {path}: refused, it needs pickle to load (save a state dict of tensors)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(f"model.checkpoint: {path}: unreadable checkpoint ({exc.__class__.__name__})") from None


def checkpoint_digest(path: str | Path) -> str:
    """A digest of a checkpoint's content: its file, or every file of its folder (a Hugging Face
    directory) by relative path, and the encoder file an alray head checkpoint names (its weights live
    there). Two checkpoints with equal digests score alike, whatever their paths or times."""
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(f"{file.relative_to(path) if path.is_dir() else ''}\0".encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    for encoder in _named_encoders(path):
        digest.update(f"encoder\0{checkpoint_digest(encoder)}".encode())
    return digest.hexdigest()[:32]


def _named_encoders(path: Path) -> list[str]:
    """The encoder path an alray checkpoint's parameters name (an EncoderHead's), if any."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return []
    with zipfile.ZipFile(path) as archive:
        if any(name.endswith("/constants.pkl") for name in archive.namelist()):
            return []  # a TorchScript archive, whose loading would run it; it names no encoder
    try:  # mmap: the tensors are not read, only the parameters
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # TorchScript archives and other zips are no alray checkpoint
        return []
    params = payload.get("params") if isinstance(payload, dict) else None
    encoder = params.get("encoder") if isinstance(params, dict) else None
    return [encoder] if isinstance(encoder, str) and Path(encoder).exists() else []
