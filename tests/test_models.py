"""Checkpoints (weights only, refused when they need pickle), TorchScript and torchvision models,
the loss prediction module, and MC-dropout prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alray.errors import InputError
from alray.models import (
    FeatureMLP,
    SmallCNN,
    dropout_masks,
    dropout_masks_torch,
    id_keys,
    load_checkpoint,
    load_model,
    mc_predict,
    save_checkpoint,
    save_torchscript,
)


class NeedsPickle:
    """An arbitrary object: loading it would run pickle's code paths."""


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN(image_size=16, n_classes=4)
    save_checkpoint(model, tmp_path / "m.pt")
    loaded = load_checkpoint(tmp_path / "m.pt", expected_classes=4)
    x = torch.rand(3, 1, 16, 16)
    model.eval()
    torch.testing.assert_close(loaded(x), model(x))
    assert not loaded.training


def test_checkpoint_that_needs_pickle_is_refused(tmp_path):
    torch.save({"format": "alray-checkpoint/1", "obj": NeedsPickle()}, tmp_path / "p.pt")
    with pytest.raises(InputError, match="refused, it needs pickle"):
        load_checkpoint(tmp_path / "p.pt")
    torch.save(SmallCNN(), tmp_path / "whole.pt")  # a pickled module, not a state dict
    with pytest.raises(InputError, match="needs pickle"):
        load_checkpoint(tmp_path / "whole.pt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a checkpoint at all", "unreadable checkpoint"),
        (None, "file not found"),
    ],
)
def test_unreadable_or_missing_checkpoint(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_checkpoint(path)


def test_incompatible_checkpoints(tmp_path):
    model = SmallCNN(n_classes=10)
    save_checkpoint(model, tmp_path / "m.pt")
    with pytest.raises(InputError, match="has 10 classes, expected 3"):
        load_checkpoint(tmp_path / "m.pt", expected_classes=3)
    torch.save({"format": "alray-checkpoint/1", "architecture": "resnet9000", "params": {}, "state_dict": {}},
               tmp_path / "arch.pt")
    with pytest.raises(InputError, match="unknown architecture 'resnet9000'"):
        load_checkpoint(tmp_path / "arch.pt")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier")}
    torch.save({"format": "alray-checkpoint/1", "architecture": "small_cnn", "params": model.params,
                "state_dict": state}, tmp_path / "partial.pt")
    with pytest.raises(InputError, match="weights do not fit small_cnn"):
        load_checkpoint(tmp_path / "partial.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(InputError, match="not an alray checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_masks_depend_only_on_seed_and_id():
    keys = id_keys(["a", "b", "c", "d"])
    whole = dropout_masks(keys, n_samples=5, width=16, p=0.5, seed=3)
    part = dropout_masks(keys[[2, 0]], n_samples=5, width=16, p=0.5, seed=3)
    np.testing.assert_array_equal(part, whole[[2, 0]])
    assert not np.array_equal(whole, dropout_masks(keys, n_samples=5, width=16, p=0.5, seed=4))
    assert set(np.unique(whole)) == {0.0, 2.0}
    # the keep rate is close to 1 - p over many draws
    many = dropout_masks(id_keys([str(i) for i in range(200)]), n_samples=20, width=64, p=0.3, seed=0)
    assert (many > 0).mean() == pytest.approx(0.7, abs=0.01)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.123456789, 0.9])
def test_torch_masks_are_the_numpy_masks_bit_for_bit(p):
    keys = id_keys([f"row-{i}" for i in range(40)])
    for seed in (0, 7, -3, 2**63 + 5):
        expected = dropout_masks(keys, n_samples=6, width=33, p=p, seed=seed)
        made = dropout_masks_torch(keys, n_samples=6, width=33, p=p, seed=seed)
        assert made.dtype == torch.float32
        np.testing.assert_array_equal(made.numpy(), expected)
    with pytest.raises(ValueError, match="dropout rate"):
        dropout_masks_torch(keys, n_samples=1, width=1, p=1.0, seed=0)


def test_head_only_mc_equals_full_passes():
    torch.manual_seed(0)
    model = FeatureMLP(n_features=6, n_classes=3).eval()
    x = torch.rand(4, 6)
    keys = id_keys(list("wxyz"))
    fast = mc_predict(model, x, keys, n_samples=7, seed=1, head_only=True)
    full = mc_predict(model, x, keys, n_samples=7, seed=1, head_only=False)
    torch.testing.assert_close(fast.probs, full.probs)
    torch.testing.assert_close(fast.embedding, full.embedding)
    assert fast.probs.shape == (4, 7, 3)
    assert fast.pred_loss is None
    torch.testing.assert_close(fast.probs.sum(-1), torch.ones(4, 7))
    # different masks give different samples: MC dropout is really sampling
    assert fast.probs.std(dim=1).max() > 0
    # the head path applies exactly the masks of dropout_masks
    masks = torch.from_numpy(dropout_masks(keys, n_samples=7, width=64, p=0.5, seed=1))
    expected = torch.softmax(model.classifier(model.embed(x)[:, None, :] * masks), dim=-1)
    torch.testing.assert_close(fast.probs, expected)


def test_loss_head_checkpoint_round_trip_and_old_checkpoints_still_load(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN(image_size=8, n_classes=3, embedding_dim=16, loss_head=True).eval()
    assert model.params["loss_head"] is True
    save_checkpoint(model, tmp_path / "loss.pt")
    loaded = load_checkpoint(tmp_path / "loss.pt")
    assert loaded.has_loss_head
    x = torch.rand(5, 1, 8, 8)
    prediction = mc_predict(loaded, x, id_keys(list("abcde")), n_samples=4, seed=0)
    assert prediction.pred_loss is not None and prediction.pred_loss.shape == (5,)
    torch.testing.assert_close(prediction.pred_loss, model.encode(x)[1])
    # the loss head does not change the embedding or the class probabilities
    plain = SmallCNN(image_size=8, n_classes=3, embedding_dim=16)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("loss_module")})
    torch.testing.assert_close(plain.eval().embed(x), prediction.embedding)
    # a checkpoint written before the loss head existed: params without loss_head or channels
    old_params = {"in_channels": 1, "image_size": 8, "n_classes": 3, "embedding_dim": 16, "dropout": 0.5}
    torch.save({"format": "alray-checkpoint/1", "architecture": "small_cnn", "params": old_params,
                "state_dict": plain.state_dict(), "metadata": {}}, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert not old.has_loss_head
    assert mc_predict(old, x, id_keys(list("abcde")), n_samples=4, seed=0).pred_loss is None


def test_wide_cnn_records_its_width(tmp_path):
    model = SmallCNN(image_size=8, n_classes=2, channels=8)
    assert model.params["channels"] == 8 and "channels" not in SmallCNN().params
    save_checkpoint(model, tmp_path / "w.pt")
    assert load_checkpoint(tmp_path / "w.pt").backbone[0].out_channels == 8


class _SplitNet(torch.nn.Module):
    """A scripted model that follows the split contract: embed and head."""

    def __init__(self, mlp: FeatureMLP) -> None:
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
    save_torchscript(_SplitNet(mlp), tmp_path / "split.pt", input_kind="features", n_classes=3, n_features=6,
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


def _torchvision_importable() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_torchvision_importable(), reason="torchvision is importable here")
def test_torchvision_model_without_torchvision_is_a_clear_error(tmp_path):
    torch.save({"fc.weight": torch.zeros(3, 512)}, tmp_path / "weights.pt")
    with pytest.raises(InputError, match="torchvision:resnet18 needs torchvision"):
        load_model(tmp_path / "weights.pt", architecture="torchvision:resnet18")
    with pytest.raises(InputError, match="expected 'torchvision:NAME'"):
        load_model(tmp_path / "weights.pt", architecture="timm:resnet18")


@pytest.mark.skipif(not _torchvision_importable(), reason="torchvision is not installed (cannot be, beside torch 2.13)")
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
