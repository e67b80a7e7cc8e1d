"""One batch of pool images through a detector (or the pool's detections and an encoder) to features rows."""

from __future__ import annotations

import dataclasses
from typing import Dict, List  # noqa: UP035 (TorchScript reads the annotations)

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from alray.detection.boxes import DETECTIONS_TYPE, Detections, check_detections, scale_boxes
from alray.detection.columns import DetectionOptions
from alray.detection.demo import MODEL_SIDE, POOL_SIDE, decoded_inputs
from alray.detection.objects import OBJECTS_COLUMN, explode_objects
from alray.detection.scorer import score_detection_batch
from alray.detection.scores import object_stability
from alray.inference import ScoringOptions
from alray.models import SmallCNN
from alray.models.detector import load_detector, save_detector
from alray.tables import REJECT_REASON

SCALE = POOL_SIDE / MODEL_SIDE


@pytest.fixture(scope="module")
def pool(detection_files):
    return pq.read_table(detection_files.pool)


@pytest.fixture(scope="module")
def detector(detection_files):
    return load_detector(detection_files.checkpoint)


def _options(**kwargs) -> ScoringOptions:
    return ScoringOptions(payload="image", mc_samples=kwargs.pop("mc_samples", 3), seed=0, run_id="r", **kwargs)


DETECTION = DetectionOptions(known_labels=frozenset({0, 1, 2}), n_classes=3, score_threshold=0.05, max_objects=6)


def _rows(table: pa.Table) -> dict[str, dict]:
    return {row["id"]: row for row in table.to_pylist()}


def test_boxes_are_the_detectors_scaled_to_the_image_and_bad_images_are_rejected(pool, detector):
    batch = pool.slice(60, pool.num_rows - 60)  # shapes, blank and corrupt images
    features = _rows(score_detection_batch(batch, _options(), DETECTION, detector=detector))
    corrupt = [i for i in features if i.startswith("corrupt")]
    assert corrupt and all(features[i][REJECT_REASON].startswith("image: ") for i in corrupt)
    shapes = [i for i in batch.column("id").to_pylist() if i.startswith("shape")]
    payloads = dict(zip(batch.column("id").to_pylist(), batch.column("image").to_pylist(), strict=True))
    direct = detector.detect(torch.from_numpy(decoded_inputs([payloads[i] for i in shapes]))).detections
    assert sum(len(d) for d in direct) > 0
    for identifier, found in zip(shapes, direct, strict=True):
        keep = np.argsort(-found.scores, kind="stable")
        keep = keep[found.scores[keep] >= 0.05][:6]
        row = features[identifier]
        got = check_detections(row["detections"], width=POOL_SIDE, height=POOL_SIDE, known_labels=None, n_classes=3)
        np.testing.assert_allclose(got.boxes, scale_boxes(found.boxes[keep], SCALE, SCALE), rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(got.labels, found.labels[keep])
        assert row["n_objects"] == len(keep) and row["width"] == POOL_SIDE
        assert row[REJECT_REASON] is None and row["entropy"] is None and len(row["embedding"]) == 32
        assert row["box_instability"] is None  # no sample passes asked for


def test_flip_passes_give_box_instability_and_scores_do_not_depend_on_the_batch(pool, detector):
    batch = pool.slice(0, 20)
    options = _options()
    detection = dataclasses.replace(DETECTION, samples="hflip")
    whole = score_detection_batch(batch, options, detection, detector=detector)
    halves = pa.concat_tables([score_detection_batch(batch.slice(0, 7), options, detection, detector=detector),
                               score_detection_batch(batch.slice(7), options, detection, detector=detector)])
    assert whole.equals(halves)
    alone = pa.concat_tables([score_detection_batch(batch.slice(i, 1), options, detection, detector=detector)
                              for i in range(batch.num_rows)])  # a batch of one: the flipped pass padded too
    assert whole.equals(alone)
    rows = _rows(whole)
    payloads = batch.column("image").to_pylist()
    x = torch.from_numpy(decoded_inputs(payloads))
    flipped = detector.detect_passes(x, np.zeros(len(payloads), dtype=np.uint64), 1, "hflip")
    checked = 0
    for identifier, passes in zip(batch.column("id").to_pylist(), flipped, strict=True):
        row = rows[identifier]
        image = check_detections(row["detections"], width=POOL_SIDE, height=POOL_SIDE, known_labels=None,
                                 n_classes=3)
        sample = passes[0]
        keep = np.argsort(-sample.scores, kind="stable")
        keep = keep[sample.scores[keep] >= 0.05][:6]
        sample = Detections(scale_boxes(sample.boxes[keep], SCALE, SCALE), sample.labels[keep], sample.scores[keep])
        if len(image):
            stability, disagreement = object_stability(image, [sample])
            assert row["box_instability"] == pytest.approx(1 - stability.mean(), abs=1e-5)
            assert row["class_disagreement"] == pytest.approx(disagreement.mean())
            checked += 1
        else:
            assert row["box_instability"] == 0.0
    assert checked > 5


def test_objects_carry_their_crops_features_and_metrics(pool, detector):
    batch = pool.slice(0, 12)
    detection = dataclasses.replace(DETECTION, objects=True)
    scored = score_detection_batch(batch, _options(), detection, detector=detector)
    assert scored.column_names[-2:] == [OBJECTS_COLUMN, REJECT_REASON]
    objects = explode_objects(scored.select(["id", OBJECTS_COLUMN]), run_id="r")
    counts = dict(zip(scored.column("id").to_pylist(), scored.column("n_objects").to_pylist(), strict=True))
    assert objects.num_rows == sum(counts.values()) > 0
    direct = detector.detect(torch.from_numpy(decoded_inputs(batch.column("image").to_pylist())))
    first = objects.to_pylist()[0]
    image = batch.column("id").to_pylist().index(first["image_id"])
    found = direct.detections[image]
    best = int(np.argmax(found.scores))
    np.testing.assert_allclose(first["embedding"], direct.features[image][best], rtol=1e-5)
    assert first["id"] == f"{first['image_id']}#0" and first["pred"] == found.labels[best]
    assert first["entropy"] is not None and 0 < first["area_fraction"] < 1 and first["sharpness"] >= 0
    assert first["box_width"] == pytest.approx((found.boxes[best, 2] - found.boxes[best, 0]) * SCALE, rel=1e-5)


def test_without_a_detector_the_pools_detections_are_checked_and_an_encoder_embeds(pool, detection_files):
    labeled = pq.read_table(detection_files.labeled)
    truths = dict(zip(labeled.column("id").to_pylist(), labeled.column("detections").to_pylist(), strict=True))
    batch = pool.slice(0, 10)
    ids = batch.column("id").to_pylist()
    values = [truths[i] for i in ids]
    values[3] = [{**values[3][0], "x1": 200.0}] if values[3] else [{"x0": 0.0, "y0": 0.0, "x1": 200.0, "y1": 5.0,
                                                                     "label": 0, "score": 1.0, "probs": None}]
    batch = batch.append_column("detections", pa.array(values, pa.list_(pa.struct([
        *(pa.field(k, pa.float32()) for k in ("x0", "y0", "x1", "y1")), pa.field("label", pa.int32()),
        pa.field("score", pa.float32()), pa.field("probs", pa.list_(pa.float32()))]))))
    torch.manual_seed(0)
    encoder = SmallCNN(in_channels=3, image_size=32, n_classes=0, embedding_dim=24).eval()
    rows = _rows(score_detection_batch(batch, _options(), DETECTION, encoder=encoder))
    assert rows[ids[3]][REJECT_REASON] == "detections[0].x1: 200 outside the image (width 96)"
    for i in (0, 1, 2, 4):
        assert rows[ids[i]]["n_objects"] == len(truths[ids[i]]) and len(rows[ids[i]]["embedding"]) == 24
        assert rows[ids[i]]["object_entropy_max"] == pytest.approx(0.0)  # one-hot truths


def test_a_pool_size_other_than_the_decoded_images_quarantines_the_row(pool):
    batch = pool.slice(0, 4)
    ids = batch.column("id").to_pylist()
    batch = (batch.append_column("detections", pa.array([[]] * 4, DETECTIONS_TYPE))
             .append_column("width", pa.array([96.0, 128.0, None, 96.0]))
             .append_column("height", pa.array([96, 96, 96, 95.75])))
    torch.manual_seed(0)
    encoder = SmallCNN(in_channels=3, image_size=32, n_classes=0, embedding_dim=8).eval()
    rows = _rows(score_detection_batch(batch, _options(), DETECTION, encoder=encoder))
    assert rows[ids[1]][REJECT_REASON] == ("width, height: the pool says 128 x 96, the image decodes to 96 x 96; "
                                           "the detections' pixels are another image's")
    for i in (0, 2, 3):  # a missing size is not checked, a rounded one is the same
        assert rows[ids[i]][REJECT_REASON] is None and (rows[ids[i]]["width"], rows[ids[i]]["height"]) == (96, 96)
    assert "_pool_width" not in rows[ids[0]]


class _BrightIsClassSeven(torch.nn.Module):
    """A box of class 7 on a bright image (outside a 3-class detector's ids), else of class 1, and a box
    without area (beyond the input, clipped to its edge) of class 2; no embedding output and no embed():
    images are embedded by their object profile."""

    def forward(self, x: torch.Tensor) -> List[Dict[str, torch.Tensor]]:  # noqa: UP006
        out: List[Dict[str, torch.Tensor]] = []  # noqa: UP006
        for i in range(x.shape[0]):
            label = 7 if bool(x[i].mean() > 0.5) else 1
            out.append({"boxes": torch.tensor([[1.0, 2.0, 5.0, 6.0], [8.0, 2.0, 12.0, 6.0]]),
                        "scores": torch.tensor([0.5, 0.9]), "labels": torch.tensor([label, 2])})
        return out


def test_a_class_id_outside_the_detector_rejects_its_image_boxes_without_area_are_dropped(tmp_path):
    from alray.demo import png_bytes

    save_detector(_BrightIsClassSeven(), tmp_path / "det.pt", n_classes=3, in_channels=3, image_size=8)
    detector = load_detector(tmp_path / "det.pt")
    images = [np.full((16, 16, 3), value, dtype=np.uint8) for value in (255, 0)]
    batch = pa.table({"id": ["bright", "dark"], "image": [png_bytes(i) for i in images]})
    rows = _rows(score_detection_batch(batch, _options(), DETECTION, detector=detector))
    assert rows["bright"][REJECT_REASON] == "model: class id 7 outside 0..2"
    assert rows["bright"]["embedding"] is None and rows["dark"][REJECT_REASON] is None
    # per class: objects, then the sum of their scores; the box clipped to no area is no object
    assert rows["dark"]["embedding"] == pytest.approx([0.0, 1.0, 0.0, 0.0, 0.5, 0.0])
    assert rows["dark"]["n_objects"] == 1 and [o["label"] for o in rows["dark"]["detections"]] == [1]
