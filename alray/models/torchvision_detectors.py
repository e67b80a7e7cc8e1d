"""torchvision detection models by name (``torchvision:fasterrcnn_resnet50_fpn``, ...) with a state-dict
weights file, behind :class:`~alray.models.detector.DetectorModel`. torchvision is optional: it is
imported when such a model is loaded, and a torchvision that does not import beside this torch
gives a one-line error.

torchvision's detectors number their classes from 1 (0 is the background): alray's class ids
are theirs minus one. They take images of any size; alray hands them the S x S model input
(``model.image_size``). They give no class probabilities, image embeddings or object features:
images are embedded by the backbone's pooled last feature map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alray.detection.boxes import Detections, flip_boxes
from alray.errors import InputError
from alray.models.detector import DetectorOutput
from alray.models.files import first_line, torch_load_weights


class TorchvisionDetector(nn.Module):
    """A torchvision detection model in eval mode (see the module docstring)."""

    input_kind = "image"
    in_channels = 3
    n_features = 0
    class_names: list[str] | None = None
    has_dropout = False
    gives_probs = False
    can_embed = True

    def __init__(self, network: nn.Module, n_classes: int, image_size: int) -> None:
        super().__init__()
        self.network = network
        self.n_classes = n_classes
        self.image_size = image_size

    def _detections(self, x: torch.Tensor) -> list[Detections]:
        with torch.no_grad():
            outputs = self.network(list(x))
        side = float(self.image_size)
        return [Detections.of(np.clip(o["boxes"].double().cpu().numpy(), 0.0, side), o["labels"].cpu().numpy() - 1,
                              o["scores"].double().cpu().numpy()) for o in outputs]

    def detect(self, x: torch.Tensor) -> DetectorOutput:
        """One pass; no object features, image embeddings from :meth:`embed`."""
        detections = self._detections(x)
        return DetectorOutput(detections, [None] * len(detections), self.embed(x).cpu().numpy())

    def detect_passes(self, x: torch.Tensor, seeds: np.ndarray, n_samples: int, how: str) -> list[list[Detections]]:
        """Only ``hflip``: torchvision's detectors have no dropout to sample."""
        if how != "hflip":
            raise InputError("detection.samples: torchvision detectors have no dropout layers; use hflip or none")
        side = float(self.image_size)
        return [[Detections(flip_boxes(d.boxes, side), d.labels, d.scores)]
                for d in self._detections(torch.flip(x, dims=[3]))]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The mean over space of the backbone's last feature map, (B, D)."""
        with torch.no_grad():
            network: Any = self.network  # a torchvision GeneralizedRCNN / RetinaNet / SSD
            images, _ = network.transform(list(x))
            features = network.backbone(images.tensors)
            last = features[list(features)[-1]] if isinstance(features, dict) else features
            return last.mean(dim=(2, 3))


def head_classes(state: dict[str, torch.Tensor]) -> int | None:
    """How many classes (the background among them) a torchvision detector's weights classify, or None
    when no head is known. Faster / Mask R-CNN's box predictor has one row per class; the dense heads
    (RetinaNet, FCOS, SSD, SSDlite) one row per anchor and class, so the count is their rows over the
    anchors, which the regression layer beside them gives (4 rows an anchor)."""
    for key, weight in state.items():
        if key.endswith("box_predictor.cls_score.weight"):
            return int(weight.shape[0])
    dense = sorted(k for k, weight in state.items() if k.endswith("weight") and weight.ndim == 4 and k.startswith(
        ("head.classification_head.cls_logits.", "head.classification_head.module_list.0.")))
    for key in reversed(dense):  # the first level's last conv (SSDlite's pointwise one) gives the scores
        regression = state.get(key.replace("classification_head.cls_logits", "regression_head.bbox_reg")
                                .replace("classification_head.", "regression_head."))
        if regression is not None and regression.shape[0] % 4 == 0 and regression.shape[0]:
            anchors = regression.shape[0] // 4
            if state[key].shape[0] % anchors == 0:
                return int(state[key].shape[0] // anchors)
    return None


def load_torchvision_detector(path: Path, name: str, *, image_size: int) -> TorchvisionDetector:
    """Build torchvision's detector ``name`` with as many classes as the weights of ``path`` have."""
    try:
        import torchvision
    except ImportError:  # also raised when an installed torchvision does not fit this torch
        raise InputError(f"model.architecture: torchvision:{name} needs torchvision, which is not importable here "
                         "(install the torchvision build that matches your torch)") from None
    if not path.is_file():
        raise InputError(f"model.checkpoint: {path}: file not found")
    state = torch_load_weights(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"model.checkpoint: {path}: expected a state dict of tensors for torchvision:{name}")
    n_with_background = head_classes(state)
    if n_with_background is None:
        raise InputError(f"model.checkpoint: {path}: no classification head weights for torchvision:{name}")
    try:
        network = torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                               num_classes=n_with_background)
    except ValueError:
        raise InputError(f"model.architecture: unknown torchvision model {name!r}") from None
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"model.checkpoint: {path}: weights do not fit torchvision:{name} "
                         f"({first_line(exc)})") from None
    model = TorchvisionDetector(network.eval(), n_with_background - 1, image_size)
    model.eval()
    return model
