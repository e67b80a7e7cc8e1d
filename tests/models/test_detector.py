"""Detectors behind the detector contract: TorchScript with alray.json, and torchvision by name where it imports."""

from __future__ import annotations

from typing import Dict, List  # noqa: UP035 (TorchScript reads the annotations)

import numpy as np
import pytest
import torch

from alray.detection.boxes import flip_boxes
from alray.detection.centernet import TinyCenterNet
from alray.errors import InputError
from alray.models import load_model, save_torchscript
from alray.models.detector import load_detector, save_detector
from tests.models.optional import torchvision_importable


def _detector(tmp_path, **kwargs):
    torch.manual_seed(0)
    module = TinyCenterNet(3, width=4, score_threshold=0.0, max_objects=5)
    save_detector(module, tmp_path / "det.pt", n_classes=3, in_channels=3, image_size=32,
                  outputs=("probs", "features", "embedding"), class_names=["a", "b", "c"], **kwargs)
    return module, load_detector(tmp_path / "det.pt")


def test_a_scripted_detector_gives_what_its_alray_json_says(tmp_path):
    module, detector = _detector(tmp_path)
    assert (detector.n_classes, detector.image_size, detector.in_channels) == (3, 32, 3)
    assert detector.class_names == ["a", "b", "c"] and detector.can_embed and detector.has_dropout
    x = torch.rand(4, 3, 32, 32)
    out = detector.detect(x)
    with torch.no_grad():
        direct = module.eval()(x)
    for found, expected, features in zip(out.detections, direct, out.features, strict=True):
        np.testing.assert_allclose(found.boxes, expected["boxes"].clamp(0, 32).double().numpy(), rtol=1e-6)
        np.testing.assert_array_equal(found.labels, expected["labels"].numpy())
        assert found.probs.shape == (5, 3) and features.shape == (5, 16)
    assert out.embedding.shape == (4, 16)
    np.testing.assert_allclose(detector.embed(x).numpy(), module.embed(x).detach().numpy(), rtol=1e-5)


def test_mc_passes_depend_on_the_sample_seed_only_and_flips_map_back(tmp_path):
    _, detector = _detector(tmp_path)
    x = torch.rand(3, 3, 32, 32)
    seeds = np.array([11, 12, 13], dtype=np.uint64)
    together = detector.detect_passes(x, seeds, 4, "mc_dropout")
    alone = detector.detect_passes(x[1:2], seeds[1:2], 4, "mc_dropout")
    assert len(together) == 3 and len(together[1]) == 4
    for a, b in zip(together[1], alone[0], strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes)
    assert not all(np.allclose(p.scores, together[1][0].scores) for p in together[1][1:])  # dropout is on
    flipped = detector.detect_passes(x, seeds, 1, "hflip")
    direct = detector.detect(torch.flip(x, dims=[3])).detections
    for passes, expected in zip(flipped, direct, strict=True):
        assert len(passes) == 1
        np.testing.assert_allclose(passes[0].boxes, flip_boxes(expected.boxes, 32))
    assert detector.detect(x).detections[0].scores.tolist() == detector.detect(x).detections[0].scores.tolist()


def test_a_detector_is_not_a_classifier_and_the_other_way_round(tmp_path):
    _detector(tmp_path)
    with pytest.raises(InputError, match=r"a detector .* task: detection"):
        load_model(tmp_path / "det.pt")
    save_torchscript(torch.nn.Linear(4, 2), tmp_path / "clf.pt", input_kind="features", n_classes=2, n_features=4)
    with pytest.raises(InputError, match="not a detector"):
        load_detector(tmp_path / "clf.pt")
    with pytest.raises(InputError, match="file not found"):
        load_detector(tmp_path / "missing.pt")



class _OneBox(torch.nn.Module):
    """One box per image, with ``n_probs`` class probabilities when ``n_probs`` > 0."""

    def __init__(self, n_probs: int) -> None:
        super().__init__()
        self.n_probs = n_probs

    def forward(self, x: torch.Tensor) -> List[Dict[str, torch.Tensor]]:  # noqa: UP006
        out: List[Dict[str, torch.Tensor]] = []  # noqa: UP006
        for _ in range(x.shape[0]):
            found: Dict[str, torch.Tensor] = {  # noqa: UP006
                "boxes": torch.tensor([[1.0, 2.0, 5.0, 6.0]]), "scores": torch.tensor([0.5]),
                "labels": torch.tensor([1])}
            if self.n_probs > 0:
                found["probs"] = torch.full((1, self.n_probs), 1.0 / self.n_probs)
            out.append(found)
        return out


@pytest.mark.parametrize("n_probs, outputs, error", [
    (0, ("probs",), r"the output dicts lack \['probs'\] \(required, or declared in alray.json outputs\)"),
    (2, ("probs",), r"output probs has the shape \(1, 2\), expected \(1, 3\) \(1 objects, 3 classes\)"),
    (3, (), None),
    (3, ("probs",), None)])
def test_a_detector_gives_the_outputs_it_declares_in_their_shapes(tmp_path, n_probs, outputs, error):
    save_detector(_OneBox(n_probs), tmp_path / "det.pt", n_classes=3, in_channels=3, image_size=8, outputs=outputs)
    if error is not None:  # found on loading: the blank pass parses the outputs
        with pytest.raises(InputError, match=error):
            load_detector(tmp_path / "det.pt")
        return
    found = load_detector(tmp_path / "det.pt").detect(torch.zeros(2, 3, 8, 8)).detections[0]
    assert found.labels.tolist() == [1]
    # an output the alray.json does not declare is not read
    assert (found.probs is None) == ("probs" not in outputs)


@pytest.mark.skipif(torchvision_importable(), reason="torchvision is importable here")
def test_a_torchvision_detector_without_torchvision_is_a_clear_error(tmp_path):
    torch.save({"roi_heads.box_predictor.cls_score.weight": torch.zeros(4, 8)}, tmp_path / "weights.pt")
    with pytest.raises(InputError, match="torchvision:fasterrcnn_mobilenet_v3_large_320_fpn needs torchvision"):
        load_detector(tmp_path / "weights.pt", architecture="torchvision:fasterrcnn_mobilenet_v3_large_320_fpn")


@pytest.mark.skipif(not torchvision_importable(), reason="torchvision does not import beside torch 2.13.0 here")
def test_a_torchvision_detector_by_name(tmp_path):
    import torchvision

    torch.manual_seed(0)
    network = torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None,
                                           weights_backbone=None, num_classes=4)
    torch.save(network.state_dict(), tmp_path / "frcnn.pt")
    detector = load_detector(tmp_path / "frcnn.pt", architecture="torchvision:fasterrcnn_mobilenet_v3_large_320_fpn",
                             image_size=64)
    assert detector.n_classes == 3
    out = detector.detect(torch.rand(2, 3, 64, 64))
    assert len(out.detections) == 2 and out.embedding.shape[0] == 2


def _conv(rows: int, channels: int = 8, side: int = 3) -> torch.Tensor:
    return torch.zeros(rows, channels, side, side)


@pytest.mark.parametrize("state, classes", [
    # Faster R-CNN: one row per class; its box regression (4 a class) does not count
    ({"roi_heads.box_predictor.cls_score.weight": torch.zeros(5, 16),
      "roi_heads.box_predictor.bbox_pred.weight": torch.zeros(20, 16)}, 5),
    # RetinaNet: 9 anchors a position, so 9 x 91 rows
    ({"head.classification_head.conv.0.0.weight": _conv(8), "head.classification_head.cls_logits.weight": _conv(819),
      "head.regression_head.bbox_reg.weight": _conv(36)}, 91),
    # FCOS: one anchor
    ({"head.classification_head.cls_logits.weight": _conv(4), "head.regression_head.bbox_reg.weight": _conv(4)}, 4),
    # SSD300: per level, anchors x classes; the first level has 4 anchors
    ({"head.classification_head.module_list.0.weight": _conv(4 * 21),
      "head.classification_head.module_list.1.weight": _conv(6 * 21),
      "head.regression_head.module_list.0.weight": _conv(16), "head.regression_head.module_list.1.weight": _conv(24)},
     21),
    # SSDlite: a depthwise conv, then the pointwise one that gives 6 anchors x classes
    ({"head.classification_head.module_list.0.0.0.weight": _conv(8, 1),
      "head.classification_head.module_list.0.1.weight": _conv(6 * 3, side=1),
      "head.regression_head.module_list.0.0.0.weight": _conv(8, 1),
      "head.regression_head.module_list.0.1.weight": _conv(24, side=1)}, 3),
    ({"backbone.body.conv1.weight": _conv(8)}, None)])
def test_the_class_count_of_torchvision_weights(state, classes):
    from alray.models.torchvision_detectors import head_classes

    assert head_classes(state) == classes
