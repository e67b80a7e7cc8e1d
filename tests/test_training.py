"""Training: the margin ranking loss of Yoo & Kweon and a learned loss that ranks held-out losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits

from alray.models import SmallCNN, id_keys, mc_predict
from alray.training import accuracy, loss_ranking_loss, per_sample_loss, train_classifier


def test_ranking_loss_by_hand():
    # pairs (0, 3) and (1, 2): true losses order 0 > 3 and 1 < 2
    pred = torch.tensor([2.0, 0.5, 0.0, 1.5])
    true = torch.tensor([3.0, 1.0, 2.0, 0.0])
    # pair (0, 3): sign +1, pred diff 0.5 -> max(0, 1 - 0.5) = 0.5
    # pair (1, 2): sign -1, pred diff 0.5 -> max(0, 1 + 0.5) = 1.5
    assert loss_ranking_loss(pred, true).item() == pytest.approx(1.0)
    assert loss_ranking_loss(pred, true, margin=0.0).item() == pytest.approx(0.25)  # (0 + 0.5) / 2
    # an odd last sample is left out; one sample gives no pair and a zero loss
    assert loss_ranking_loss(torch.cat([pred, torch.tensor([9.0])]), torch.cat([true, torch.tensor([9.0])])).item() \
        == pytest.approx(1.0)
    assert loss_ranking_loss(pred[:1], true[:1]).item() == 0.0
    with pytest.raises(ValueError, match="pred_loss, true_loss"):
        loss_ranking_loss(pred, true[:3])


def test_ranking_loss_sends_no_gradient_into_the_true_losses():
    pred = torch.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)
    true = torch.tensor([4.0, 3.0, 2.0, 1.0], requires_grad=True)
    loss_ranking_loss(pred, true).backward()
    assert true.grad is None and pred.grad is not None


@pytest.fixture(autouse=True)
def one_thread():
    # Small models train fastest on one thread; more only contend on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    order = np.random.default_rng(0).permutation(len(images))
    return images, data.target, order[:300], order[1000:1600]


def test_learned_loss_ranks_held_out_losses(digits):
    images, labels, train, held_out = digits
    model = SmallCNN(image_size=8, n_classes=10, embedding_dim=32, loss_head=True)
    train_classifier(model, images[train], labels[train], epochs=15, seed=0)
    assert accuracy(model, images[held_out], labels[held_out]) > 0.7
    x = torch.from_numpy(images[held_out])
    prediction = mc_predict(model, x, id_keys([str(i) for i in held_out]), n_samples=4, seed=0)
    assert prediction.pred_loss is not None
    true_loss = per_sample_loss(model, images[held_out], labels[held_out])
    rho = spearmanr(prediction.pred_loss.numpy(), true_loss).statistic
    assert rho > 0.3, f"Spearman of predicted vs true loss on held-out digits: {rho:.3f}"


def test_training_without_a_loss_head_is_unchanged_and_deterministic(digits):
    images, labels, train, held_out = digits
    first, second = (SmallCNN(image_size=8, n_classes=10, embedding_dim=32) for _ in range(2))
    second.load_state_dict(first.state_dict())
    for model in (first, second):
        train_classifier(model, images[train[:100]], labels[train[:100]], epochs=3, seed=1)
    x = torch.from_numpy(images[held_out[:20]])
    torch.testing.assert_close(first(x), second(x))
    assert not first.has_loss_head and first.encode(x)[1] is None


def test_the_demo_model_is_the_same_whatever_ran_before(tmp_path):
    from alray.demo import build_demo

    states = []
    for attempt in range(2):
        torch.rand(attempt + 1)  # leave the global generator in another state each time
        root = tmp_path / str(attempt)
        build_demo(pool_path=str(root / "pool"), labeled_path=str(root / "labeled"),
                   checkpoint_path=str(root / "model.pt"), n_images=60, per_class=2, epochs=1, seed=3)
        states.append(torch.load(root / "model.pt", weights_only=True)["state_dict"])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
