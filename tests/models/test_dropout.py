"""MC dropout: masks keyed by sample id and seed alone, the same in NumPy and torch, and
head-only sampling equal to full passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alray.models import FeatureMLP, dropout_masks, dropout_masks_torch, id_keys, mc_predict


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
