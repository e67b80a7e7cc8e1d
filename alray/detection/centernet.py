"""A tiny anchor-free detector in plain torch (CenterNet style, one scale): small enough to train on a
CPU in seconds, scriptable, and it speaks the detector contract of :mod:`alray.models.detector`.

The backbone brings an image (B, C, S, S) to a feature map at stride 4 (D channels). Four 1x1
heads read it: an objectness heat map (an object's centre cell is hot), class logits, the box
size (log of width and height in cells) and the centre's offset within its cell. A dropout
layer before the heads makes MC dropout possible. Decoding keeps the local maxima of the heat
map (3 x 3) above ``score_threshold``, at most ``max_objects`` per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 4


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class TinyCenterNet(nn.Module):
    """The detector of the module docstring; ``forward`` returns one dict per image (boxes in input
    pixels, scores, labels, probs, features, embedding)."""

    def __init__(self, n_classes: int, *, in_channels: int = 3, width: int = 16, dropout: float = 0.2,
                 max_objects: int = 16, score_threshold: float = 0.05) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.stride = STRIDE
        self.max_objects = max_objects
        self.score_threshold = score_threshold
        self.backbone = nn.Sequential(
            _block(in_channels, width, 1), _block(width, 2 * width, 2), _block(2 * width, 2 * width, 1),
            _block(2 * width, 4 * width, 2), _block(4 * width, 4 * width, 1),
        )
        self.dropout = nn.Dropout2d(dropout)
        channels = 4 * width
        self.objectness = nn.Conv2d(channels, 1, 1)
        self.classes = nn.Conv2d(channels, n_classes, 1)
        self.size = nn.Conv2d(channels, 2, 1)
        self.offset = nn.Conv2d(channels, 2, 1)
        assert self.objectness.bias is not None
        nn.init.constant_(self.objectness.bias, -2.19)  # a prior of 0.1 keeps the focal loss stable at the start

    @torch.jit.export
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, D): the backbone's feature map averaged over space."""
        return self.backbone(x).mean(dim=(2, 3))

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Objectness logits (B, 1, H, W), class logits (B, C, H, W), log sizes (B, 2, H, W), offsets
        (B, 2, H, W) and the features (B, D, H, W) the heads read."""
        features = self.backbone(x)
        dropped = self.dropout(features)
        return (self.objectness(dropped), self.classes(dropped), self.size(dropped),
                torch.sigmoid(self.offset(dropped)), features)

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        objectness, class_logits, size, offset, features = self.heads(x)
        heat = torch.sigmoid(objectness)[:, 0]
        peaks = heat * (heat == F.max_pool2d(heat[:, None], 3, stride=1, padding=1)[:, 0]).float()
        b, h, w = heat.shape
        k = min(self.max_objects, h * w)
        top_scores, top_index = peaks.reshape(b, -1).topk(k, dim=1)
        probs_all = torch.softmax(class_logits, dim=1).reshape(b, self.n_classes, -1)
        size_all = size.reshape(b, 2, -1)
        offset_all = offset.reshape(b, 2, -1)
        features_all = features.reshape(b, features.shape[1], -1)
        embedding = features.mean(dim=(2, 3))
        out: list[dict[str, torch.Tensor]] = []
        for i in range(b):
            keep = top_scores[i] > self.score_threshold
            index = top_index[i][keep]
            cx = (index % w).float() + offset_all[i, 0, index]
            cy = torch.div(index, w, rounding_mode="floor").float() + offset_all[i, 1, index]
            half_w = torch.exp(size_all[i, 0, index]) / 2.0
            half_h = torch.exp(size_all[i, 1, index]) / 2.0
            boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1) * float(self.stride)
            probs = probs_all[i, :, index].t()
            out.append({"boxes": boxes, "scores": top_scores[i][keep], "labels": probs.argmax(dim=1),
                        "probs": probs, "features": features_all[i, :, index].t(), "embedding": embedding[i]})
        return out
