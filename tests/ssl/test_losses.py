"""NT-Xent: its closed form, its invariances and its gradient."""

from __future__ import annotations

import math

import pytest
import torch

from alray.ssl import NTXentLoss, nt_xent


def test_identical_orthogonal_pairs_give_the_closed_form():
    z = torch.eye(4, 8)
    tau = 0.5
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * 4 - 2))
    assert float(nt_xent(z, z.clone(), temperature=tau)) == pytest.approx(expected, rel=1e-6)


def test_aligned_views_score_below_shuffled_ones():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(16, 32, generator=generator)
    noisy = z + 0.05 * torch.randn(16, 32, generator=generator)
    aligned = nt_xent(z, noisy, temperature=0.2)
    shuffled = nt_xent(z, noisy[torch.randperm(16, generator=generator)], temperature=0.2)
    assert aligned < shuffled


def test_invariant_to_scale_and_to_the_order_of_samples():
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(8, 5, generator=generator), torch.randn(8, 5, generator=generator)
    order = torch.randperm(8, generator=generator)
    base = nt_xent(a, b, temperature=0.3)
    assert torch.allclose(nt_xent(3 * a, 0.5 * b, temperature=0.3), base, atol=1e-6)
    assert torch.allclose(nt_xent(a[order], b[order], temperature=0.3), base, atol=1e-6)
    assert torch.allclose(nt_xent(b, a, temperature=0.3), base, atol=1e-6)  # the two views play the same part


def test_module_has_gradients_and_refuses_bad_inputs():
    a = torch.randn(4, 3, requires_grad=True)
    NTXentLoss(0.2)(a, torch.randn(4, 3)).backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent(torch.randn(1, 3), torch.randn(1, 3), temperature=0.2)
    with pytest.raises(ValueError, match="one shape"):
        nt_xent(torch.randn(4, 3), torch.randn(5, 3), temperature=0.2)
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)
