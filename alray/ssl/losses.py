"""The NT-Xent loss of SimCLR (Chen et al., ICML 2020): each view's positive is the other view of
its sample, its negatives the 2B - 2 other views of the batch."""

from __future__ import annotations

import torch
from torch import nn


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """Normalised temperature-scaled cross entropy of two views' projections.

    Parameters
    ----------
    z_a, z_b : (B, P) projections of the first and second view of the same B samples (row i of
        both is one sample); B >= 2
    temperature : the softmax temperature tau > 0

    Returns
    -------
    The mean over the 2B views of ``-log(exp(s_pos / tau) / sum_{k != self} exp(s_k / tau))``,
    with s the cosine similarity: a scalar tensor. When both views are equal and the samples
    mutually orthogonal it is ``-log(e^{1/tau} / (e^{1/tau} + 2B - 2))``.
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2:
        raise ValueError(f"expected two (B, P) projections of one shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    n = z_a.shape[0]
    if n < 2:
        raise ValueError("NT-Xent needs at least 2 samples per batch (the other samples are the negatives)")
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    z = nn.functional.normalize(torch.cat([z_a, z_b], dim=0), dim=1)
    logits = z @ z.T / temperature
    # A view is not its own negative: its similarity to itself leaves the softmax.
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return nn.functional.cross_entropy(logits, targets)


class NTXentLoss(nn.Module):
    """:func:`nt_xent` as a module with its temperature."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature: expected > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """Scalar loss of two (B, P) projections of the same samples."""
        return nt_xent(z_a, z_b, temperature=self.temperature)
