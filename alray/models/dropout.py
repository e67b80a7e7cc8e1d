"""MC dropout: a stable key per sample id, a seed per sample, inverted-dropout masks (NumPy and,
bit for bit the same, torch on any device), and :func:`mc_predict`, which samples a
:class:`~alray.models.contract.TaskModel` with them.

Every mask bit is a pure function of (run seed, sample id, position), so the masks, and the
scores made with them, do not depend on batch composition, actor count or order of arrival.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from alray.models.contract import TaskModel

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # A counter-based generator: every mask bit is a pure function of (seed, sample id, position),
    # so masks do not depend on batch composition, actor count or order of arrival.
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def id_keys(ids: Sequence[str]) -> np.ndarray:
    """A stable 64-bit key per sample id (BLAKE2b), shape (B,) uint64."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little") for i in ids],
        dtype=np.uint64,
    )


def sample_seeds(keys: np.ndarray, *, seed: int) -> np.ndarray:
    """A 64-bit seed per sample, shape (B,) uint64, a function of its key and ``seed`` alone."""
    seed_key = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    return _splitmix64(keys.astype(np.uint64) ^ seed_key)


def dropout_masks(keys: np.ndarray, *, n_samples: int, width: int, p: float, seed: int) -> np.ndarray:
    """Inverted-dropout multipliers of shape (B, T, D): 0 where dropped, 1/(1-p) where kept.

    Row b depends only on ``keys[b]`` and ``seed``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p: expected a dropout rate in [0, 1), got {p}")
    counters = np.arange(n_samples * width, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
    with np.errstate(over="ignore"):
        bits = _splitmix64(sample_seeds(keys, seed=seed)[:, None] ^ counters[None, :])
    uniform = (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    keep = (uniform >= p).astype(np.float32) / np.float32(1.0 - p)
    return keep.reshape(len(keys), n_samples, width)


def _int64(constant: int) -> int:
    # A uint64 constant as the int64 of the same bits: torch has no uint64 arithmetic.
    return constant - (1 << 64) if constant >= 1 << 63 else constant


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    # A logical right shift of int64 tensors (torch's >> is arithmetic: it copies the sign bit).
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64_torch(z: torch.Tensor) -> torch.Tensor:
    # _splitmix64 on int64 tensors: multiplication and addition wrap modulo 2**64 like uint64's.
    z = z + _int64(0x9E3779B97F4A7C15)
    z = (z ^ _shift_right(z, 30)) * _int64(0xBF58476D1CE4E5B9)
    z = (z ^ _shift_right(z, 27)) * _int64(0x94D049BB133111EB)
    return z ^ _shift_right(z, 31)


def dropout_masks_torch(keys: np.ndarray, *, n_samples: int, width: int, p: float, seed: int,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """:func:`dropout_masks` made on ``device``, bit for bit the same: float32 (B, T, D).

    Scoring uses this one, so a GPU makes its own masks instead of receiving B x T x D floats
    from the host.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p: expected a dropout rate in [0, 1), got {p}")
    seeds = torch.from_numpy(sample_seeds(keys, seed=seed).view(np.int64)).to(device)
    counters = torch.arange(n_samples * width, dtype=torch.int64, device=device) * _int64(0xD1B54A32D192ED03)
    bits = _splitmix64_torch(seeds[:, None] ^ counters[None, :])
    # numpy keeps a bit where (bits >> 11) * 2**-53 >= p; with integers that is bits >> 11 >= ceil(p * 2**53).
    keep = _shift_right(bits, 11) >= math.ceil(p * float(1 << 53))
    scale = float(np.float32(1.0) / np.float32(1.0 - p))
    masks = torch.where(keep, torch.tensor(scale, dtype=torch.float32, device=device),
                        torch.tensor(0.0, dtype=torch.float32, device=device))
    return masks.reshape(len(keys), n_samples, width)


@dataclass
class Prediction:
    """What one scoring pass gives per sample: embeddings (B, D), MC class probabilities
    (B, T, C) or None for an embedding-only model, and predicted losses (B,) or None when the
    model has no loss head."""

    embedding: torch.Tensor
    probs: torch.Tensor | None
    pred_loss: torch.Tensor | None


@torch.no_grad()
def mc_predict(
    model: TaskModel, x: torch.Tensor, keys: np.ndarray, *, n_samples: int, seed: int, head_only: bool = True
) -> Prediction:
    """Embeddings, MC-dropout class probabilities and predicted losses of a batch.

    Parameters
    ----------
    model : a :class:`TaskModel` in eval mode on ``x.device``
    x : tensor of inputs, batch first (B, ...)
    keys : uint64 array (B,) of :func:`id_keys`: with ``seed``, they alone fix each sample's masks
    n_samples : MC samples T
    seed : the run's seed
    head_only : run the backbone once and sample only the head T times in one batched call (fast);
        otherwise T full passes with the same masks, which gives the same numbers. Models that do
        not split (``splits_head`` False) always run T full passes.

    Returns
    -------
    Prediction with embeddings (B, D), probabilities (B, T, C) (None when the model gives
    embeddings only, ``n_classes`` 0), predicted losses (B,) or None
    """
    embedding, pred_loss = model.encode(x)
    if model.n_classes == 0:
        return Prediction(embedding, None, pred_loss)
    if not model.splits_head:
        logits = model.stochastic_logits(x, sample_seeds(keys, seed=seed), n_samples)
        return Prediction(embedding, torch.softmax(logits.float(), dim=-1), pred_loss)
    masks = dropout_masks_torch(keys, n_samples=n_samples, width=int(embedding.shape[1]), p=model.dropout_p,
                                seed=seed, device=embedding.device).to(embedding.dtype)
    if head_only:
        logits = model.head(embedding[:, None, :] * masks)
    else:
        logits = torch.stack([model.head(model.encode(x)[0] * masks[:, t, :]) for t in range(n_samples)], dim=1)
    return Prediction(embedding, torch.softmax(logits.float(), dim=-1), pred_loss)
