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


def test_sequence_cnn_learns_mnist1d_where_the_mlp_cannot_and_round_trips(tmp_path):
    import numpy as np

    from alray.models import FeatureMLP, SequenceCNN
    from alray.simulate import _mnist1d
    from alray.simulate_config import SimulateConfig
    from alray.training import accuracy, train_classifier

    data = _mnist1d(SimulateConfig(dataset="mnist1d"), 0)
    x, y = data.x_pool[:2000], data.y_pool[:2000]
    scores = {}
    torch.manual_seed(0)
    for name, model in (("cnn", SequenceCNN(n_features=40, n_classes=10, dropout=0.2)),
                        ("mlp", FeatureMLP(n_features=40, n_classes=10, dropout=0.2))):
        train_classifier(model, x, y, epochs=25, batch_size=100, learning_rate=1e-2, seed=0)
        scores[name] = accuracy(model, data.x_test, data.y_test)
    assert scores["cnn"] > 0.7 and scores["cnn"] > scores["mlp"] + 0.15, scores
    cnn = SequenceCNN(n_features=40, n_classes=10, channels=8).eval()
    save_checkpoint(cnn, tmp_path / "cnn.pt")
    loaded = load_checkpoint(tmp_path / "cnn.pt")
    assert isinstance(loaded, SequenceCNN) and loaded.params == cnn.params
    batch = torch.from_numpy(np.ascontiguousarray(data.x_test[:6]))
    keys = id_keys([f"t{i}" for i in range(6)])
    ours = mc_predict(loaded, batch, keys, n_samples=5, seed=1)
    theirs = mc_predict(cnn, batch, keys, n_samples=5, seed=1)
    torch.testing.assert_close(ours.embedding, theirs.embedding)
    torch.testing.assert_close(ours.probs, theirs.probs)
    assert ours.probs is not None and ours.probs.shape == (6, 5, 10)
