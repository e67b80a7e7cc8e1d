"""Detector models: what detection scoring needs of a detector (:class:`DetectorModel`), TorchScript
detectors with an ``alray.json`` contract, and :func:`load_detector`.

A TorchScript detector's ``forward(x)`` takes images (B, C, S, S) in 0..1 and returns one
``Dict[str, Tensor]`` per image, the torchvision convention:

- ``boxes`` (K, 4) x0, y0, x1, y1 in pixels of the S x S input, ``scores`` (K,), ``labels`` (K,)
  class ids in 0..n_classes-1: required;
- ``probs`` (K, C) class probabilities, ``features`` (K, F) per-object features (the crops'
  embeddings), ``embedding`` (D,) the image's embedding: optional; the ``outputs`` list of its
  ``alray.json`` says which it gives.

Its ``alray.json`` holds ``task: detection``, ``input_kind: image``, ``in_channels``,
``image_size``, ``n_classes``, ``outputs`` and optionally ``class_names``. A module that exports
``embed(x) -> (B, D)`` gives image embeddings that way too, and crops are embedded with it
when it has no ``features`` output. Dropout layers in the module allow MC dropout (their
passes run in train mode, seeded per sample); test-time flips need nothing of the model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from alray.detection.boxes import Detections, flip_boxes
from alray.errors import InputError
from alray.models.files import first_line
from alray.models.torchscript import TORCHSCRIPT_METADATA

#: What a detector's output dicts may hold besides boxes, scores and labels.
OPTIONAL_OUTPUTS = ("probs", "features", "embedding")
_DROPOUT_MODULES = frozenset({"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"})


@dataclass
class DetectorOutput:
    """What one detector pass gave for B images: their detections (boxes in pixels of the model input),
    each object's features (K, F) or None, and the image embeddings (B, D) or None."""

    detections: list[Detections]
    features: list[np.ndarray | None]
    embedding: np.ndarray | None


@runtime_checkable
class DetectorModel(Protocol):
    """What detection scoring needs of a detector.

    Attributes
    ----------
    input_kind : "image"; inputs are (B, in_channels, image_size, image_size) in 0..1
    n_classes : class ids are 0..n_classes-1
    class_names : names of the classes, or None
    has_dropout : whether MC dropout can sample it
    gives_probs : whether its objects carry class probabilities (the class uncertainty scores need them)
    can_embed : whether :meth:`embed` gives image embeddings (else only the ``embedding`` output)
    """

    input_kind: str
    in_channels: int
    image_size: int
    n_features: int
    n_classes: int
    class_names: list[str] | None
    has_dropout: bool
    gives_probs: bool
    can_embed: bool

    def detect(self, x: torch.Tensor) -> DetectorOutput:
        """One deterministic pass."""
        ...

    def detect_passes(self, x: torch.Tensor, seeds: np.ndarray, n_samples: int, how: str) -> list[list[Detections]]:
        """Per image, the detections of each extra pass: ``mc_dropout`` (T passes seeded by ``seeds[b]``)
        or ``hflip`` (one pass on the mirrored image, boxes mirrored back)."""
        ...

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, D)."""
        ...

    def to(self, device: torch.device) -> Any:
        """Move to a device (nn.Module.to)."""
        ...


def save_detector(module: nn.Module, path: str | Path, *, n_classes: int, in_channels: int, image_size: int,
                  outputs: Sequence[str] = (), class_names: Sequence[str] | None = None) -> None:
    """Script ``module`` and save it with the ``alray.json`` that :func:`load_detector` reads."""
    unknown = sorted(set(outputs) - set(OPTIONAL_OUTPUTS))
    if unknown:
        raise ValueError(f"outputs: unknown {unknown}; expected some of {list(OPTIONAL_OUTPUTS)}")
    metadata = {"task": "detection", "input_kind": "image", "n_classes": n_classes, "in_channels": in_channels,
                "image_size": image_size, "outputs": list(outputs),
                "class_names": list(class_names) if class_names is not None else None}
    scripted = torch.jit.script(module.eval())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path), _extra_files={TORCHSCRIPT_METADATA: json.dumps(metadata)})


def detector_metadata(path: str | Path) -> dict[str, Any] | None:
    """The ``alray.json`` of a TorchScript file when it describes a detector (``task: detection``), else None."""
    extra = {TORCHSCRIPT_METADATA: ""}
    try:
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, OSError, ValueError):
        return None
    try:
        metadata = json.loads(extra[TORCHSCRIPT_METADATA] or "null")
    except ValueError:
        return None
    return metadata if isinstance(metadata, dict) and metadata.get("task") == "detection" else None


class ScriptedDetector(nn.Module):
    """A TorchScript detector behind :class:`DetectorModel` (see the module docstring)."""

    input_kind = "image"
    n_features = 0

    def __init__(self, scripted: torch.jit.ScriptModule, metadata: dict[str, Any], path: Path) -> None:
        super().__init__()
        self.scripted = scripted
        self.path = path
        self.n_classes = int(metadata["n_classes"])
        self.in_channels = int(metadata["in_channels"])
        self.image_size = int(metadata["image_size"])
        names = metadata.get("class_names")
        self.class_names = [str(n) for n in names] if names else None
        self.outputs = frozenset(metadata.get("outputs") or ())
        self.gives_probs = "probs" in self.outputs
        self.can_embed = hasattr(scripted, "embed")
        self._dropouts = [m for m in scripted.modules() if getattr(m, "original_name", "") in _DROPOUT_MODULES]
        self.has_dropout = bool(self._dropouts)

    def _run(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = self.scripted(x)
        if not isinstance(out, (list, tuple)) or len(out) != x.shape[0]:
            raise InputError(f"model.checkpoint: {self.path}: forward must return one dict per image "
                             f"(got {type(out).__name__})")
        return list(out)

    def _parse(self, outputs: list[dict[str, torch.Tensor]]) -> DetectorOutput:
        """The output dicts as the contract says: the required keys and the declared ``outputs``, each of the
        shape it must have; an undeclared output is not read."""
        detections, features, embeddings = [], [], []
        for out in outputs:
            missing = [k for k in ("boxes", "scores", "labels", *sorted(self.outputs)) if k not in out]
            if missing:
                raise InputError(f"model.checkpoint: {self.path}: the output dicts lack {missing} (required, or "
                                 f"declared in {TORCHSCRIPT_METADATA} outputs)")
            given = {k: out[k].detach().cpu() for k in ("boxes", "scores", "labels", *self.outputs)}
            k = given["scores"].reshape(-1).shape[0]
            shapes = {"boxes": (k, 4), "scores": (k,), "labels": (k,), "probs": (k, self.n_classes)}
            for name, shape in shapes.items():
                if name in given and tuple(given[name].shape) != shape:
                    raise InputError(f"model.checkpoint: {self.path}: output {name} has the shape "
                                     f"{tuple(given[name].shape)}, expected {shape} ({k} objects, "
                                     f"{self.n_classes} classes)")
            if "features" in given and (given["features"].ndim != 2 or given["features"].shape[0] != k):
                raise InputError(f"model.checkpoint: {self.path}: output features has the shape "
                                 f"{tuple(given['features'].shape)}, expected ({k}, F): one row per object")
            probs = given["probs"].double().numpy() if "probs" in given else None
            detections.append(Detections.of(
                np.clip(given["boxes"].double().numpy(), 0.0, float(self.image_size)), given["labels"].numpy(),
                given["scores"].double().numpy(), probs))
            features.append(given["features"].float().numpy() if "features" in given else None)
            if "embedding" in given:
                embeddings.append(given["embedding"].float().numpy().reshape(-1))
        embedding = np.stack(embeddings) if len(embeddings) == len(outputs) and embeddings else None
        return DetectorOutput(detections, features, embedding)

    def detect(self, x: torch.Tensor) -> DetectorOutput:
        """One deterministic pass (dropout off)."""
        with torch.no_grad():
            return self._parse(self._run(x))

    def detect_passes(self, x: torch.Tensor, seeds: np.ndarray, n_samples: int, how: str) -> list[list[Detections]]:
        """Per image, the detections of each extra pass (see :class:`DetectorModel`)."""
        if how == "hflip":
            with torch.no_grad():
                flipped = self._parse(self._run(torch.flip(x, dims=[3]))).detections
            side = float(self.image_size)
            return [[Detections(flip_boxes(d.boxes, side), d.labels, d.scores, d.probs)] for d in flipped]
        if how != "mc_dropout":
            raise ValueError(f"how: expected mc_dropout or hflip, got {how!r}")
        for module in self._dropouts:
            module.train()
        try:
            devices = [x.device.index or 0] if x.device.type == "cuda" else []
            passes: list[list[Detections]] = []
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                for b in range(x.shape[0]):
                    # seeded per sample, so a sample's passes do not depend on its batch
                    torch.manual_seed(int(seeds[b]))
                    out = self._run(x[b: b + 1].expand(n_samples, *x.shape[1:]))
                    passes.append(self._parse(out).detections)
        finally:
            for module in self._dropouts:
                module.eval()
        return passes

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, D) of the exported ``embed``, or of the ``embedding`` output."""
        with torch.no_grad():
            if self.can_embed:
                return self.scripted.embed(x)
            embedding = self._parse(self._run(x)).embedding
        if embedding is None:
            raise InputError(f"model.checkpoint: {self.path}: gives no image embedding (no embed(x), no "
                             "embedding output)")
        return torch.from_numpy(embedding)


def load_scripted_detector(path: Path, metadata: dict[str, Any]) -> ScriptedDetector:
    """A TorchScript detector whose ``alray.json`` is ``metadata``; InputError names what is missing."""
    missing = [key for key in ("n_classes", "in_channels", "image_size") if not metadata.get(key)]
    if missing:
        raise InputError(f"model.checkpoint: {path}: {TORCHSCRIPT_METADATA}: missing {missing}")
    unknown = sorted(set(metadata.get("outputs") or ()) - set(OPTIONAL_OUTPUTS))
    if unknown:
        raise InputError(f"model.checkpoint: {path}: {TORCHSCRIPT_METADATA}: unknown outputs {unknown}; expected "
                         f"some of {list(OPTIONAL_OUTPUTS)}")
    scripted = torch.jit.load(str(path), map_location="cpu")
    model = ScriptedDetector(scripted.eval(), metadata, path)
    side = model.image_size
    try:
        model.detect(torch.zeros(1, model.in_channels, side, side))
    except (RuntimeError, IndexError) as exc:
        raise InputError(f"model.checkpoint: {path}: the detector fails on a blank input of the shape "
                         f"{TORCHSCRIPT_METADATA} gives ({first_line(exc)})") from None
    model.eval()
    return model


def load_detector(path: str | Path, *, architecture: str | None = None, image_size: int = 224) -> DetectorModel:
    """Load a detector: a TorchScript file whose ``alray.json`` says ``task: detection``, or a torchvision
    detection architecture by name (``torchvision:NAME``, with a state-dict weights file)."""
    path = Path(path)
    if architecture is not None:
        from alray.models.torchvision_detectors import load_torchvision_detector

        return load_torchvision_detector(path, architecture.removeprefix("torchvision:"), image_size=image_size)
    if not path.is_file():
        raise InputError(f"model.checkpoint: {path}: file not found")
    metadata = detector_metadata(path)
    if metadata is None:
        raise InputError(f"model.checkpoint: {path}: not a detector: task detection needs a TorchScript file whose "
                         f"{TORCHSCRIPT_METADATA} says task: detection (alray.models.save_detector)")
    return load_scripted_detector(path, metadata)
