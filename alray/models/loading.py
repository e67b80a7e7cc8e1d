"""Loading a task model from any of the sources that give one, and choosing the torch device.

Five sources give a :class:`~alray.models.contract.TaskModel`:

1. an alray checkpoint (:func:`~alray.models.checkpoints.save_checkpoint`): a registered
   architecture and its state dict;
2. a TorchScript file (:func:`~alray.models.torchscript.save_torchscript`) with an ``alray.json``
   extra file naming the input;
3. an ONNX file (:mod:`~alray.models.onnx_models`, the ``onnx`` extra);
4. a Hugging Face directory (:mod:`~alray.models.huggingface`): an image or text classifier, or
   a feature-extraction model (embeddings only);
5. a torchvision architecture by name (``torchvision:resnet18``) with a state-dict weights file.

A file goes to the first entry of :data:`FILE_FORMATS` whose detector accepts its content (its
name plays no part), or to the entry ``model.format`` names; ``model.architecture`` goes to the
entry of :data:`ARCHITECTURE_SOURCES` whose prefix it starts with. Another format is one more entry in either.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch

from alray.errors import InputError
from alray.models.checkpoints import load_checkpoint
from alray.models.contract import TaskModel
from alray.models.files import check_classes, check_exists, check_file, unrecognised_file
from alray.models.huggingface import is_huggingface, load_huggingface
from alray.models.onnx_models import is_onnx, load_onnx
from alray.models.torchscript import is_torchscript, load_torchscript
from alray.models.torchvision_models import TorchvisionModel


@dataclass(frozen=True)
class LoadOptions:
    """What :func:`load_model` was asked besides the path, for the loaders that use it."""

    image_size: int
    dropout: float | None
    max_tokens: int | None = None


@dataclass(frozen=True)
class FileFormat:
    """A format a model file may be in: ``detect(path)`` tells it by the file's content (only
    files that exist are given), ``load(path, options)`` loads it; ``key`` is its ``model.format``."""

    key: str
    name: str
    detect: Callable[[Path], bool]
    load: Callable[[Path, LoadOptions], TaskModel]


@dataclass(frozen=True)
class ArchitectureSource:
    """Models named by ``model.architecture`` = ``prefix`` + NAME: ``load(path, NAME, options)``
    builds NAME and loads the weights file ``path`` into it."""

    prefix: str
    load: Callable[[Path, str, LoadOptions], TaskModel]


def _load_torchscript(path: Path, options: LoadOptions) -> TaskModel:
    return load_torchscript(path, dropout=options.dropout)


def _load_onnx(path: Path, options: LoadOptions) -> TaskModel:
    return cast(TaskModel, load_onnx(path, image_size=options.image_size, dropout=options.dropout))


def _load_huggingface(path: Path, options: LoadOptions) -> TaskModel:
    return cast(TaskModel, load_huggingface(path, dropout=options.dropout, max_tokens=options.max_tokens))


def _load_checkpoint(path: Path, options: LoadOptions) -> TaskModel:
    return cast(TaskModel, load_checkpoint(path))


def _load_torchvision(path: Path, name: str, options: LoadOptions) -> TaskModel:
    check_file(path)
    return TorchvisionModel.load(path, name, image_size=options.image_size, dropout=options.dropout)


# In the order they are tried: a TorchScript archive is a zip file too.
FILE_FORMATS: tuple[FileFormat, ...] = (
    FileFormat("torchscript", "TorchScript file",
               lambda path: zipfile.is_zipfile(path) and is_torchscript(path), _load_torchscript),
    FileFormat("alray", "alray checkpoint", zipfile.is_zipfile, _load_checkpoint),
    FileFormat("onnx", "ONNX file", is_onnx, _load_onnx),
    FileFormat("huggingface", "Hugging Face directory (config.json)", is_huggingface, _load_huggingface),
)
MODEL_FORMATS = ("auto", *(f.key for f in FILE_FORMATS))

ARCHITECTURE_SOURCES: tuple[ArchitectureSource, ...] = (
    ArchitectureSource("torchvision:", _load_torchvision),
)


def load_model(
    path: str | Path, *, architecture: str | None = None, image_size: int = 224, dropout: float | None = None,
    expected_classes: int | None = None, model_format: str = "auto", max_tokens: int | None = None,
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
    model_format : one of :data:`MODEL_FORMATS`; ``auto`` tells the format from the content
    max_tokens : tokens a Hugging Face text model's inputs are cut or padded to

    Raises InputError naming the file and what is wrong with it.
    """
    path = Path(path)
    options = LoadOptions(image_size=image_size, dropout=dropout, max_tokens=max_tokens)
    if architecture is not None:
        model = _load_architecture(path, architecture, options)
    elif model_format != "auto":
        model = _load_as(path, model_format, options)
    else:
        model = _load_file(path, options)
    check_classes(path, model.n_classes, expected_classes)
    return model


def _load_architecture(path: Path, architecture: str, options: LoadOptions) -> TaskModel:
    for source in ARCHITECTURE_SOURCES:
        if architecture.startswith(source.prefix):
            return source.load(path, architecture.removeprefix(source.prefix), options)
    expected = " or ".join(f"'{source.prefix}NAME'" for source in ARCHITECTURE_SOURCES)
    raise InputError(f"model.architecture: expected {expected}, got {architecture!r}")


def _load_file(path: Path, options: LoadOptions) -> TaskModel:
    if is_huggingface(path):
        return _load_huggingface(path, options)
    check_exists(path)
    for file_format in FILE_FORMATS:
        if file_format.detect(path):
            return file_format.load(path, options)
    raise unrecognised_file(path)


def _load_as(path: Path, key: str, options: LoadOptions) -> TaskModel:
    chosen = next((f for f in FILE_FORMATS if f.key == key), None)
    if chosen is None:
        raise InputError(f"model.format: expected one of {list(MODEL_FORMATS)}, got {key!r}")
    if not path.exists():
        raise InputError(f"model.checkpoint: {path}: not found")
    if not (path.is_file() or chosen.key == "huggingface") or not chosen.detect(path):
        article = "an" if chosen.name[0] in "AEIOUaeiou" else "a"
        raise InputError(f"model.checkpoint: {path}: not {article} {chosen.name}, as model.format {key} says")
    return chosen.load(path, options)


def pick_device(requested: str) -> torch.device:
    """The torch device for ``model.device`` (auto: CUDA when visible, else CPU)."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("model.device: cuda was asked for but no GPU is visible to this worker")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")
