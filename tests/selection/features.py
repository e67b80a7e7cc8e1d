"""A small features table for selection tests: clustered embeddings, scores, predictions, metadata."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def clustered_features(n: int = 900, dim: int = 6, seed: int = 0) -> pa.Table:
    """``n`` rows in 12 Gaussian clusters with bald, entropy, pred (4 classes), probs and a size column."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(12, dim))
    members = rng.integers(0, 12, size=n)
    embeddings = (centres[members] + rng.normal(size=(n, dim))).astype(np.float32)
    return pa.table({
        "id": [f"row-{i:05d}-{rng.integers(1 << 30):x}" for i in range(n)],
        "embedding": pa.array(list(embeddings), pa.list_(pa.float32())),
        "bald": rng.gamma(2.0, 0.1, size=n),
        "entropy": rng.random(n) * 2.0,
        "pred": (members % 4).astype(np.int32),
        "size": rng.integers(1, 100, size=n).astype(np.int64),
        "probs": pa.array(list(_softmax(rng.normal(scale=2.0, size=(n, 4)) + 3.0 * np.eye(4)[members % 4])),
                          pa.list_(pa.float32())),
    })


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
