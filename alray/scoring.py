"""Uncertainty scores of class probabilities: NumPy arrays in, one score per sample out.

Every score is higher for a more uncertain sample, uses the natural log, and is finite for
probabilities of exactly 0 and 1. :func:`all_scores_torch` computes the same scores on torch
tensors, so scoring on a GPU keeps the (N, T, C) samples where they were made.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

# p * log(p) at p = 0 must be 0; clipping the argument of log keeps the product finite.
_TINY = np.finfo(np.float64).tiny


def _check_probs(probs: npt.ArrayLike, ndim: int, name: str) -> np.ndarray:
    array = np.asarray(probs, dtype=np.float64)
    shape = "(N, C)" if ndim == 2 else "(N, T, C)"
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected an array of shape {shape}, got shape {array.shape}")
    if array.shape[-1] < 1:
        raise ValueError(f"{name}: expected at least one class, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: probabilities must be finite (found NaN or Inf)")
    if array.size and (array.min() < -1e-6 or array.max() > 1 + 1e-6):
        raise ValueError(f"{name}: probabilities must lie in [0, 1]")
    return array


def _entropy(p: np.ndarray) -> np.ndarray:
    return -np.sum(p * np.log(np.clip(p, _TINY, 1.0)), axis=-1)


def entropy(probs: npt.ArrayLike) -> np.ndarray:
    """Shannon entropy of each row.

    Parameters
    ----------
    probs : array of shape (N, C)
        Class probabilities, rows summing to 1.

    Returns
    -------
    ndarray of shape (N,)
        ``-sum_c p_c log p_c``; 0 for a one-hot row, ``log C`` for a uniform row.

    Examples
    --------
    >>> float(entropy([[0.5, 0.5]])[0])  # doctest: +ELLIPSIS
    0.693...
    """
    return _entropy(_check_probs(probs, 2, "probs"))


def margin(probs: npt.ArrayLike) -> np.ndarray:
    """One minus the gap between the two most probable classes, shape (N,) from (N, C).

    0 for a one-hot row, 1 when the top two classes tie. A single-class input has margin 0.
    """
    p = _check_probs(probs, 2, "probs")
    if p.shape[1] == 1:
        return np.zeros(p.shape[0])
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def least_confidence(probs: npt.ArrayLike) -> np.ndarray:
    """One minus the top class probability, shape (N,) from (N, C)."""
    p = _check_probs(probs, 2, "probs")
    return 1.0 - p.max(axis=1)


def variation_ratio(mc_probs: npt.ArrayLike) -> np.ndarray:
    """Fraction of MC samples that disagree with the modal predicted class.

    Parameters
    ----------
    mc_probs : array of shape (N, T, C)
        Class probabilities of T stochastic forward passes.

    Returns
    -------
    ndarray of shape (N,)
        ``1 - (votes of the modal class) / T``; 0 when all T passes agree.
    """
    p = _check_probs(mc_probs, 3, "mc_probs")
    n, t, c = p.shape
    votes = np.zeros((n, c), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(n), t), p.argmax(axis=2).ravel()), 1)
    return 1.0 - votes.max(axis=1) / t


def mean_std(mc_probs: npt.ArrayLike) -> np.ndarray:
    """Standard deviation over the T samples, averaged over classes: shape (N,) from (N, T, C)."""
    p = _check_probs(mc_probs, 3, "mc_probs")
    return p.std(axis=1).mean(axis=1)


def bald(mc_probs: npt.ArrayLike) -> np.ndarray:
    """BALD: mutual information between the prediction and the model parameters.

    Entropy of the mean prediction minus the mean entropy of each sample, shape (N,) from
    (N, T, C). 0 when all T passes agree; never negative (rounding is clipped).
    """
    p = _check_probs(mc_probs, 3, "mc_probs")
    score = _entropy(p.mean(axis=1)) - _entropy(p).mean(axis=1)
    return np.maximum(score, 0.0)


def all_scores(mc_probs: npt.ArrayLike) -> dict[str, np.ndarray]:
    """Every score of MC samples (N, T, C), the probability scores taken on the mean over T.

    Returns a mapping of score name to an array of shape (N,), plus ``probs`` (N, C) and
    ``pred`` (N,).
    """
    p = _check_probs(mc_probs, 3, "mc_probs")
    mean = p.mean(axis=1)
    return {
        "probs": mean,
        "pred": mean.argmax(axis=1),
        "entropy": entropy(mean),
        "margin": margin(mean),
        "least_confidence": least_confidence(mean),
        "variation_ratio": variation_ratio(p),
        "bald": bald(p),
        "mean_std": mean_std(p),
    }


def all_scores_torch(mc_probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`all_scores` on a tensor, on its device, in float64: the same names and numbers.

    Parameters
    ----------
    mc_probs : tensor of shape (N, T, C)
        Finite class probabilities of T stochastic passes (the caller checks finiteness:
        checking here would wait for the device).

    Returns
    -------
    dict of tensors: ``probs`` (N, C), ``pred`` (N,) int64 and each score (N,), float64
    """
    if mc_probs.dim() != 3 or mc_probs.shape[-1] < 1:
        raise ValueError(f"mc_probs: expected a tensor of shape (N, T, C), got shape {tuple(mc_probs.shape)}")
    p = mc_probs.double()
    n, t, c = p.shape
    tiny = float(_TINY)

    def plogp_sum(q: torch.Tensor) -> torch.Tensor:
        return -(q * torch.log(q.clamp(min=tiny, max=1.0))).sum(dim=-1)

    mean = p.mean(dim=1)
    mean_entropy = plogp_sum(mean)
    top = mean.topk(min(2, c), dim=1).values
    votes = torch.zeros(n, c, dtype=torch.int64, device=p.device).scatter_add_(
        1, p.argmax(dim=2), torch.ones(n, t, dtype=torch.int64, device=p.device))
    return {
        "probs": mean,
        "pred": mean.argmax(dim=1),
        "entropy": mean_entropy,
        "margin": 1.0 - (top[:, 0] - top[:, 1]) if c > 1 else torch.zeros(n, dtype=p.dtype, device=p.device),
        "least_confidence": 1.0 - top[:, 0],
        "variation_ratio": 1.0 - votes.max(dim=1).values.double() / t if n else torch.zeros(0, dtype=p.dtype),
        "bald": (mean_entropy - plogp_sum(p).mean(dim=1)).clamp(min=0.0),
        "mean_std": ((p - mean[:, None, :]) ** 2).mean(dim=1).sqrt().mean(dim=1),
    }
