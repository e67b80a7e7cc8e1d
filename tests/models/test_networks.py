"""The built-in networks: the loss prediction module, and the parameters they record (only those
that differ from the defaults, so checkpoints of older versions still load)."""

from __future__ import annotations

import torch

from alray.models import SmallCNN, id_keys, load_checkpoint, mc_predict, save_checkpoint


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
