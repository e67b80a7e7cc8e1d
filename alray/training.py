"""Train a built-in model on a small labeled set: what the demo, the tests and the simulator use."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def train_classifier(
    model: nn.Module, inputs: np.ndarray, labels: np.ndarray, *, epochs: int = 30, batch_size: int = 32,
    learning_rate: float = 3e-3, seed: int = 0,
) -> nn.Module:
    """Fit ``model`` with Adam and cross-entropy; deterministic for a given seed.

    Parameters
    ----------
    model : a built-in model
    inputs : float32 array (N, ...) of model inputs
    labels : int array (N,)

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
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model(x[index]), y[index])
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
