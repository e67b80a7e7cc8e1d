"""Hugging Face image classification models from a save_pretrained directory (built from a config, no download)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import alray
from alray.errors import InputError
from alray.image_samples import encode, image_of_mode
from alray.models import load_model
from alray.models.huggingface import HuggingFaceImageModel

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, num_labels=3)
    path = tmp_path_factory.mktemp("vit")
    transformers.ViTForImageClassification(config).save_pretrained(str(path))
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3,
                                   image_std=[0.25] * 3).save_pretrained(str(path))
    return path


def test_a_vit_directory_loads_and_splits_at_its_classifier(vit_dir):
    model = load_model(vit_dir, dropout=0.3)
    assert isinstance(model, HuggingFaceImageModel)
    assert (model.n_classes, model.embedding_dim, model.image_size, model.in_channels) == (3, 16, 16, 3)
    network = transformers.ViTForImageClassification.from_pretrained(str(vit_dir)).eval()
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        expected = network(pixel_values=(x - 0.5) / 0.25).logits
        embedding, _ = model.encode(x)
        np.testing.assert_allclose(model.head(embedding).numpy(), expected.numpy(), atol=1e-5)


def test_a_vit_directory_scores_a_pool_end_to_end(vit_dir):
    images = [encode(image_of_mode("RGB", width=20, height=20, seed=i), "PNG") for i in range(24)]
    pool = pd.DataFrame({"id": [f"img-{i:02d}" for i in range(24)], "image": images})
    features = alray.score(pool, str(vit_dir), mc_samples=10, seed=0)
    assert len(features) == 24 and len(features.embedding.iloc[0]) == 16
    assert (features.bald > 0).all()  # MC dropout on the head: the passes disagree
    ranking = alray.select(features, n_samples=5, strategies=["diversity", "weights:bald"])
    assert ranking.selected.sum() == 5


def test_a_directory_without_its_processor_is_a_one_line_error(vit_dir, tmp_path):
    transformers.ViTForImageClassification.from_pretrained(str(vit_dir)).save_pretrained(str(tmp_path / "bare"))
    with pytest.raises(InputError, match=r"needs its preprocessor_config\.json"):
        load_model(tmp_path / "bare")
