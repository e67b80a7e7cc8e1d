"""Scoring one batch: scores for good rows, a reason for bad ones, metadata passed through."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from alray.demo import png_bytes
from alray.inference import REJECT_REASON, ScoringOptions, features_schema, score_batch
from alray.models import FeatureMLP, SmallCNN


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN(image_size=16, n_classes=4).eval()


def _images(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [png_bytes((rng.random((16, 16)) * 255).astype(np.uint8)) for _ in range(n)]


def test_scores_good_rows_and_rejects_bad_ones_in_order(cnn, tmp_path):
    good = _images(3)
    (tmp_path / "on-disk.png").write_bytes(good[0])
    batch = pa.table({
        "id": ["a", "b", "c", "d", "e", "f"],
        "image": pa.array([good[0], b"", b"\x89PNG\r\n\x1a\n" + b"x" * 20, good[1], b"hello", good[2]], pa.binary()),
        "camera": ["c1", "c2", "c3", "c4", "c5", "c6"],
    })
    out = score_batch(cnn, batch, ScoringOptions(payload="image", mc_samples=5, seed=0, run_id="r"))
    assert out.schema.equals(features_schema(pa.schema([("camera", pa.string())])))
    assert out.column("id").to_pylist() == ["a", "b", "c", "d", "e", "f"]
    assert out.column("camera").to_pylist() == ["c1", "c2", "c3", "c4", "c5", "c6"]
    reasons = out.column(REJECT_REASON).to_pylist()
    assert [r is None for r in reasons] == [True, False, False, True, False, True]
    assert reasons[1] == "image: empty payload"
    assert reasons[4] == "image: not a decodable image"
    ok = out.filter(pa.compute.is_null(out.column(REJECT_REASON)))
    assert all(len(e) == 64 for e in ok.column("embedding").to_pylist())
    assert all(abs(sum(p) - 1) < 1e-5 for p in ok.column("probs").to_pylist())
    assert all(v is not None and v >= 0 for v in ok.column("bald").to_pylist())
    assert ok.column("width").to_pylist() == [16.0, 16.0, 16.0]
    bad = out.filter(pa.compute.is_valid(out.column(REJECT_REASON)))
    assert bad.column("embedding").null_count == 3 and bad.column("bald").null_count == 3


def test_result_of_a_row_does_not_depend_on_its_batch(cnn):
    images = _images(6, seed=1)
    ids = [f"id-{i}" for i in range(6)]
    options = ScoringOptions(payload="image", mc_samples=8, seed=7, run_id="r")
    whole = score_batch(cnn, pa.table({"id": ids, "image": pa.array(images, pa.binary())}), options)
    part = score_batch(cnn, pa.table({"id": ids[3:], "image": pa.array(images[3:], pa.binary())}), options)
    np.testing.assert_allclose(whole.column("bald").to_numpy()[3:], part.column("bald").to_numpy(), rtol=1e-6)


def test_feature_vectors_with_wrong_length_or_nan_are_rejected():
    model = FeatureMLP(n_features=3, n_classes=2).eval()
    batch = pa.table({"id": ["a", "b", "c", "d"],
                      "features": [[0.1, 0.2, 0.3], [1.0, 2.0], [0.0, float("nan"), 1.0], None]})
    out = score_batch(model, batch, ScoringOptions(payload="features", mc_samples=4, seed=0, run_id="r"))
    assert out.column(REJECT_REASON).to_pylist() == [
        None, "features: expected 3 values, got 2", "features: non-finite value at position 1", "features: missing"]
    assert out.column("sharpness").null_count == 4  # no image metrics for feature vectors


def test_a_missing_uri_is_rejected(cnn, tmp_path):
    path = tmp_path / "img.png"
    path.write_bytes(_images(1)[0])
    batch = pa.table({"id": ["a", "b"], "uri": [str(path), str(tmp_path / "gone.png")]})
    out = score_batch(cnn, batch, ScoringOptions(payload="uri", mc_samples=3, seed=0, run_id="r"))
    reasons = out.column(REJECT_REASON).to_pylist()
    assert reasons[0] is None
    assert reasons[1].startswith("uri: file not found")
