"""TorchScript models: with embed and head, or a forward to logits sampled with its own dropout;
refused without or with bad alray.json metadata."""

from __future__ import annotations

import pytest
import torch

from alray.errors import InputError
from alray.models import FeatureMLP, SmallCNN, id_keys, load_model, mc_predict, save_torchscript


class SplitNet(torch.nn.Module):
    """A scripted model that follows the split contract: embed and head (of a built-in model's layers)."""

    def __init__(self, mlp: FeatureMLP | SmallCNN) -> None:
        super().__init__()
        self.backbone, self.classifier = mlp.backbone, mlp.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))

    @torch.jit.export
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    @torch.jit.export
    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.classifier(embedding)


class _LogitsNet(torch.nn.Module):
    """A scripted model with only a forward to logits, with dropout and batch norm inside."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                        torch.nn.Dropout(0.3), torch.nn.Linear(32, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_torchscript_with_embed_and_head_equals_the_built_in_model(tmp_path):
    torch.manual_seed(0)
    mlp = FeatureMLP(n_features=6, n_classes=3).eval()
    save_torchscript(SplitNet(mlp), tmp_path / "split.pt", input_kind="features", n_classes=3, n_features=6,
                     dropout=0.5)
    model = load_model(tmp_path / "split.pt", expected_classes=3)
    assert model.splits_head and model.embedding_dim == 64 and model.input_kind == "features"
    x, keys = torch.rand(5, 6), id_keys(list("abcde"))
    scripted = mc_predict(model, x, keys, n_samples=6, seed=2)
    built_in = mc_predict(mlp, x, keys, n_samples=6, seed=2)
    torch.testing.assert_close(scripted.probs, built_in.probs)
    torch.testing.assert_close(scripted.embedding, built_in.embedding)
    full = mc_predict(model, x, keys, n_samples=6, seed=2, head_only=False)
    torch.testing.assert_close(full.probs, scripted.probs)


def test_torchscript_forward_only_samples_its_own_dropout_per_sample(tmp_path):
    torch.manual_seed(0)
    net = _LogitsNet()
    net.train()(torch.rand(64, 6))  # give batch norm non-trivial running statistics
    save_torchscript(net, tmp_path / "logits.pt", input_kind="features", n_classes=3, n_features=6)
    model = load_model(tmp_path / "logits.pt")
    assert not model.splits_head and model.embedding_dim == 3
    running_mean = getattr(model.scripted.body, "1").running_mean.clone()
    x, keys = torch.rand(6, 6), id_keys([f"s{i}" for i in range(6)])
    whole = mc_predict(model, x, keys, n_samples=5, seed=1)
    part = mc_predict(model, x[[4, 1]], keys[[4, 1]], n_samples=5, seed=1)
    assert whole.probs.shape == (6, 5, 3)
    torch.testing.assert_close(part.probs, whole.probs[[4, 1]])  # batch composition does not matter
    assert whole.probs.std(dim=1).max() > 0  # dropout is active in the MC passes...
    torch.testing.assert_close(whole.embedding, model.encode(x)[0])  # ...and off for the embedding
    torch.testing.assert_close(getattr(model.scripted.body, "1").running_mean, running_mean)  # batch norm stays in eval
    assert not getattr(model.scripted.body, "3").training
    again = mc_predict(model, x, keys, n_samples=5, seed=1)
    torch.testing.assert_close(again.probs, whole.probs)
    assert not torch.equal(mc_predict(model, x, keys, n_samples=5, seed=2).probs, whole.probs)


def test_torchscript_without_metadata_or_with_bad_metadata_is_refused(tmp_path):
    torch.jit.save(torch.jit.script(_LogitsNet().eval()), str(tmp_path / "bare.pt"))
    with pytest.raises(InputError, match=r"without alray\.json"):
        load_model(tmp_path / "bare.pt")
    torch.jit.save(torch.jit.script(_LogitsNet().eval()), str(tmp_path / "bad.pt"),
                   _extra_files={"alray.json": '{"input_kind": "audio"}'})
    with pytest.raises(InputError, match="input_kind must be one of"):
        load_model(tmp_path / "bad.pt")
    save_torchscript(_LogitsNet(), tmp_path / "short.pt", input_kind="image", n_classes=3)
    with pytest.raises(InputError, match=r"missing \['in_channels', 'image_size'\]"):
        load_model(tmp_path / "short.pt")
    save_torchscript(_LogitsNet(), tmp_path / "shape.pt", input_kind="features", n_classes=3, n_features=9)
    with pytest.raises(InputError, match="fails on a blank input"):
        load_model(tmp_path / "shape.pt")
