"""Train a built-in model on a small labeled set: what the demo, the tests and the simulator use.

A model with a loss prediction module (``SmallCNN(loss_head=True)``) is trained jointly, as in
Yoo & Kweon, "Learning Loss for Active Learning" (CVPR 2019): cross-entropy plus ``loss_weight``
times their margin ranking loss between the predicted and the true per-sample losses.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def loss_ranking_loss(pred_loss: torch.Tensor, true_loss: torch.Tensor, *, margin: float = 1.0) -> torch.Tensor:
    """Margin ranking loss of Yoo & Kweon over the pairs of a batch split in halves.

    Sample i of the first half is paired with sample B-1-i (the batch reversed); the pair's
    target sign is that of the difference of their true losses, and the loss is
    ``max(0, margin - sign * (pred_i - pred_j))`` averaged over pairs. An odd last sample is
    left out.

    Parameters
    ----------
    pred_loss : tensor (B,) of predicted losses
    true_loss : tensor (B,) of true per-sample losses (no gradient flows into them)
    margin : the margin xi (1 in the paper)

    Returns
    -------
    scalar tensor
    """
    if pred_loss.shape != true_loss.shape or pred_loss.dim() != 1:
        raise ValueError(f"pred_loss, true_loss: expected two tensors (B,), got {tuple(pred_loss.shape)} "
                         f"and {tuple(true_loss.shape)}")
    n_pairs = pred_loss.shape[0] // 2
    if n_pairs == 0:
        return pred_loss.sum() * 0.0
    even = 2 * n_pairs
    pred = pred_loss[:even]
    true = true_loss[:even].detach()
    pred_diff = (pred - pred.flip(0))[:n_pairs]
    sign = torch.where((true - true.flip(0))[:n_pairs] > 0, 1.0, -1.0)
    return torch.clamp(margin - sign * pred_diff, min=0.0).mean()


def train_classifier(
    model: nn.Module, inputs: np.ndarray, labels: np.ndarray, *, epochs: int = 30, batch_size: int = 32,
    learning_rate: float = 3e-3, seed: int = 0, loss_weight: float = 1.0, loss_margin: float = 1.0,
    detach_loss_after: float = 0.6,
) -> nn.Module:
    """Fit ``model`` with Adam and cross-entropy; deterministic for a given seed.

    A model with a loss prediction module learns it jointly: the objective adds ``loss_weight``
    (lambda) times :func:`loss_ranking_loss`. After ``detach_loss_after`` of the epochs, the loss
    module's inputs are detached so its gradient no longer shapes the backbone (the paper does
    this after 120 of 200 epochs, 0.6).

    Parameters
    ----------
    model : a built-in model
    inputs : float32 array (N, ...) of model inputs
    labels : int array (N,)
    loss_weight, loss_margin : lambda and the margin of the ranking loss (1 and 1 in the paper)
    detach_loss_after : share of the epochs after which the loss module's inputs are detached

    Returns
    -------
    the same model, trained, in eval mode
    """
    if len(inputs) != len(labels):
        raise ValueError(f"labels: expected {len(inputs)} labels, got {len(labels)}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    learns_loss = bool(getattr(model, "has_loss_head", False))
    detach_epoch = round(detach_loss_after * epochs)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            optimiser.zero_grad()
            if learns_loss:
                logits, pred_loss = model.forward_train(  # type: ignore[operator]
                    x[index], detach_loss_features=epoch >= detach_epoch)
                per_sample = loss_fn(logits, y[index])
                loss = per_sample.mean() + loss_weight * loss_ranking_loss(pred_loss, per_sample, margin=loss_margin)
            else:
                loss = loss_fn(model(x[index]), y[index]).mean()
            loss.backward()
            optimiser.step()
    model.eval()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, inputs: np.ndarray, labels: np.ndarray) -> float:
    """Share of correct deterministic predictions (dropout off)."""
    model.eval()
    logits = model(torch.as_tensor(np.asarray(inputs, dtype=np.float32)))
    return float((logits.argmax(dim=1).numpy() == np.asarray(labels)).mean())


@torch.no_grad()
def per_sample_loss(model: nn.Module, inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy (N,) of each sample's deterministic prediction: the loss a loss head predicts."""
    model.eval()
    logits = model(torch.as_tensor(np.asarray(inputs, dtype=np.float32)))
    return nn.functional.cross_entropy(logits, torch.as_tensor(np.asarray(labels, dtype=np.int64)),
                                       reduction="none").numpy()


def train_head(embeddings: np.ndarray, labels: np.ndarray, *, n_classes: int, dropout: float = 0.5,
               epochs: int = 200, learning_rate: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0) -> nn.Linear:
    """Fit a linear head (D -> C) on frozen embeddings (N, D) with dropout before it; deterministic.

    Full-batch Adam on cross-entropy, the embeddings dropped at rate ``dropout`` in training as
    MC dropout drops them at scoring. Returns the layer in eval mode.
    """
    x = torch.from_numpy(np.array(embeddings, dtype=np.float32))
    y = torch.from_numpy(np.array(labels, dtype=np.int64))
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"embeddings, labels: expected (N, D) and (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    torch.manual_seed(seed)
    layer = nn.Linear(x.shape[1], n_classes)
    drop = nn.Dropout(dropout)
    optimiser = torch.optim.Adam(layer.parameters(), lr=learning_rate, weight_decay=weight_decay)
    for _ in range(epochs):
        optimiser.zero_grad()
        nn.functional.cross_entropy(layer(drop(x)), y).backward()
        optimiser.step()
    return layer.eval()
