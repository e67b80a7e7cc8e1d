"""The self-supervised encoder as an embedding-only task model: shapes, no classes, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alray.models import ARCHITECTURES, TaskModel, load_model, save_checkpoint
from alray.models.encoders import ConvEncoder


def test_an_embedding_only_task_model():
    torch.manual_seed(0)
    model = ConvEncoder(in_channels=3, image_size=16, width=8).eval()
    assert isinstance(model, TaskModel)
    assert (model.n_classes, model.embedding_dim, model.input_kind, model.splits_head) == (0, 32, "image", True)
    x = torch.rand(5, 3, 16, 16)
    embedding, pred_loss = model.encode(x)
    assert embedding.shape == (5, 32) and pred_loss is None
    assert model.head(embedding).shape == (5, 0)
    assert model.head(embedding[:, None, :].expand(5, 4, 32)).shape == (5, 4, 0)
    assert model.stochastic_logits(x, np.zeros(5, dtype=np.uint64), 3).shape == (5, 3, 0)
    # no batch statistics: a sample's embedding is the same alone and in a batch
    assert torch.allclose(model.embed(x[2:3]), embedding[2:3], atol=1e-6)


def test_registered_and_reloads_bitwise(tmp_path):
    assert ARCHITECTURES["conv_encoder"] is ConvEncoder
    torch.manual_seed(1)
    model = ConvEncoder(in_channels=1, image_size=24, width=4).eval()
    path = tmp_path / "encoder.pt"
    save_checkpoint(model, path, metadata={"epochs": 3})
    loaded = load_model(str(path))
    assert isinstance(loaded, ConvEncoder) and loaded.n_classes == 0 and loaded.image_size == 24
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    x = torch.rand(3, 1, 24, 24)
    assert torch.equal(loaded.embed(x), model.embed(x))


def test_refuses_bad_shapes():
    with pytest.raises(ValueError, match="in_channels"):
        ConvEncoder(in_channels=2)
    with pytest.raises(ValueError, match="image_size"):
        ConvEncoder(image_size=4)
