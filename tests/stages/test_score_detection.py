"""A detection run's checks before any engine starts: its pool, detector or encoder, and selection."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from alray.config import config_from_dict
from alray.demo import png_bytes
from alray.detection.boxes import DETECTIONS_TYPE
from alray.errors import ConfigError, InputError
from alray.models import SmallCNN, save_checkpoint
from alray.models.detector import save_detector
from alray.stages.score_detection import prepare_detection
from tests.models.test_detector import _OneBox


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A pool of 5 images with empty detections, a 3-class detector without class probabilities, one with
    them, and an encoder."""
    root = tmp_path_factory.mktemp("prepare")
    image = png_bytes(np.zeros((16, 16, 3), dtype=np.uint8))
    pq.write_table(pa.table({"id": [f"i{k}" for k in range(5)], "image": [image] * 5,
                             "detections": pa.array([[]] * 5, DETECTIONS_TYPE)}), str(root / "pool.parquet"))
    save_detector(_OneBox(0), root / "plain.pt", n_classes=3, in_channels=3, image_size=8)
    save_detector(_OneBox(3), root / "probs.pt", n_classes=3, in_channels=3, image_size=8, outputs=("probs",))
    torch.manual_seed(0)
    save_checkpoint(SmallCNN(in_channels=3, image_size=16, n_classes=0, embedding_dim=4), root / "enc.pt")
    return root


def _prepare(files, checkpoint: str | None = "plain.pt", strategies=None, pool: str = "pool.parquet", **detection):
    data = {"task": "detection", "pool": {"path": str(files / pool)}, "detection": detection,
            "output": {"path": str(files / "lake")},
            "selection": {"n_samples": 2, "strategies": strategies or [{"input": "embeddings",
                                                                         "strategy": "diversity"}]}}
    if checkpoint is not None:
        data["model"] = {"checkpoint": str(files / checkpoint)}
    config = config_from_dict(data)
    return prepare_detection(config.pool, config.model, config.detection, staging=None, selection=config.selection)


def test_a_detector_sets_the_class_ids_and_the_pool_is_counted(files):
    source, payload, spec, options = _prepare(files)
    assert payload == "image" and source.n_rows == 5 and spec is not None and spec.image_size == 8
    assert options.known_labels == frozenset({0, 1, 2}) and options.n_classes == 3 and not options.objects
    _, _, _, options = _prepare(files, level="objects", classes=["a", "b", "c"])
    assert options.class_names == ("a", "b", "c") and options.objects


@pytest.mark.parametrize("level, column", [("images", "object_entropy_max"), ("objects", "margin")])
def test_class_uncertainty_needs_a_detector_that_gives_probabilities(files, level, column):
    strategies = [{"input": "embeddings", "strategy": "diversity"}, {"input": column, "strategy": "weights"}]
    with pytest.raises(ConfigError) as info:
        _prepare(files, strategies=strategies, level=level)
    assert str(info.value) == (f"selection.strategies.1: {column!r} needs class probabilities, and model.checkpoint "
                               f"{files / 'plain.pt'} gives none (no probs output); objectness_least_confidence "
                               "scores its confidence")
    _, _, _, options = _prepare(files, "probs.pt", strategies=strategies, level=level)
    assert options.n_classes == 3
    # without a detector the pool's detections may hold probs: nothing to refuse before reading them
    _prepare(files, "enc.pt", strategies=strategies, level=level)


def test_what_a_detection_run_refuses_before_any_engine_starts(files):
    with pytest.raises(ConfigError, match=r"^detection.classes: 2 names, the detector has 3 classes$"):
        _prepare(files, classes=["a", "b"])
    with pytest.raises(ConfigError, match=r"^detection.samples: mc_dropout, but model.checkpoint .* has no dropout"):
        _prepare(files, samples="mc_dropout")
    with pytest.raises(ConfigError, match=r"^detection.samples: hflip needs a detector model"):
        _prepare(files, "enc.pt", samples="hflip")
    root = files
    table = pq.read_table(root / "pool.parquet")
    pq.write_table(table.drop_columns(["detections"]), str(root / "bare.parquet"))
    with pytest.raises(InputError, match=r"is no detector, so the objects must come from the pool: it needs a "
                                         r"detections column"):
        _prepare(files, "enc.pt", pool="bare.parquet")
    pq.write_table(table.append_column("n_objects", pa.array([1] * 5)), str(root / "clash.parquet"))
    with pytest.raises(InputError, match=r"metadata columns \['n_objects'\] clash with features columns"):
        _prepare(files, pool="clash.parquet")
