"""Checkpoints (weights only, refused when they need pickle) and MC-dropout prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alray.errors import InputError
from alray.models import FeatureMLP, SmallCNN, dropout_masks, id_keys, load_checkpoint, mc_predict, save_checkpoint


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


def test_head_only_mc_equals_full_passes():
    torch.manual_seed(0)
    model = FeatureMLP(n_features=6, n_classes=3).eval()
    x = torch.rand(4, 6)
    masks = torch.from_numpy(dropout_masks(id_keys(list("wxyz")), n_samples=7, width=64, p=0.5, seed=1))
    emb_fast, probs_fast = mc_predict(model, x, masks, head_only=True)
    emb_full, probs_full = mc_predict(model, x, masks, head_only=False)
    torch.testing.assert_close(probs_fast, probs_full)
    torch.testing.assert_close(emb_fast, emb_full)
    assert probs_fast.shape == (4, 7, 3)
    torch.testing.assert_close(probs_fast.sum(-1), torch.ones(4, 7))
    # different masks give different samples: MC dropout is really sampling
    assert probs_fast.std(dim=1).max() > 0
