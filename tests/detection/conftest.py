"""A small detection demo (pool, labeled boxes, a TorchScript detector) shared by the detection tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def detection_files(tmp_path_factory):
    """80 shape images (96 px; the detector takes 64), blank and corrupt ones, 50 labeled, a detector."""
    from alray.detection.demo import build_detection_demo

    root = tmp_path_factory.mktemp("detection")
    return build_detection_demo(pool_path=str(root / "pool"), labeled_path=str(root / "labeled"),
                                checkpoint_path=str(root / "detector.pt"), n_images=80, n_labeled=50, epochs=15,
                                width=8, seed=0)
