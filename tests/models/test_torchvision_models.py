"""torchvision models: split at their last linear layer, and a clear error without torchvision."""

from __future__ import annotations

import pytest
import torch

from alray.errors import InputError
from alray.models import id_keys, load_model, mc_predict
from tests.models.optional import torchvision_importable


@pytest.mark.skipif(torchvision_importable(), reason="torchvision is importable here")
def test_torchvision_model_without_torchvision_is_a_clear_error(tmp_path):
    torch.save({"fc.weight": torch.zeros(3, 512)}, tmp_path / "weights.pt")
    with pytest.raises(InputError, match="torchvision:resnet18 needs torchvision"):
        load_model(tmp_path / "weights.pt", architecture="torchvision:resnet18")
    with pytest.raises(InputError, match="expected 'torchvision:NAME'"):
        load_model(tmp_path / "weights.pt", architecture="timm:resnet18")


@pytest.mark.skipif(not torchvision_importable(), reason="torchvision is not installed (cannot be, beside torch 2.13)")
def test_torchvision_model_splits_at_its_last_linear_layer(tmp_path):
    import torchvision

    torch.manual_seed(0)
    network = torchvision.models.get_model("resnet18", weights=None, num_classes=5).eval()
    torch.save(network.state_dict(), tmp_path / "resnet.pt")
    model = load_model(tmp_path / "resnet.pt", architecture="torchvision:resnet18", image_size=32, dropout=0.2)
    assert (model.n_classes, model.embedding_dim, model.dropout_p) == (5, 512, 0.2)
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    embedding, _ = model.encode(x)
    torch.testing.assert_close(model.head(embedding), network((x - mean) / std))
    assert mc_predict(model, x, id_keys(["a", "b"]), n_samples=3, seed=0).probs.shape == (2, 3, 5)
