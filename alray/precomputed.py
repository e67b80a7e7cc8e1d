"""Features from predictions a pool already holds: no model, the scores from the pool's own columns.

A precomputed pool has ``id``, ``embedding`` (D floats) and optionally ``probs`` or ``logits``
(C floats) or ``mc_probs`` (T x C floats: T stochastic passes). The uncertainty scores come from
those columns by :func:`alray.scoring.all_scores`: every score from ``mc_probs``; from ``probs`` or
``logits`` the single-pass ones (entropy, margin, least_confidence), the MC scores (BALD,
variation ratio, mean std) then stay null. Rows whose vectors have the wrong width, non-finite
values, or probabilities that do not sum to 1 are rejected with a reason naming the column.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from alray.scoring import all_scores
from alray.tables import MC_SCORES, features_rows

PREDICTION_COLUMNS = ("probs", "logits", "mc_probs")
PRECOMPUTED_COLUMNS = ("embedding", *PREDICTION_COLUMNS)
# Scores a single pass of probabilities gives; the others need T passes (mc_probs).
SINGLE_PASS_SCORES = ("entropy", "margin", "least_confidence")
# How far a row of probabilities may sum from 1.
SUM_TOLERANCE = 1e-3


def available_scores(columns: Sequence[str]) -> set[str]:
    """The uncertainty scores a precomputed pool with ``columns`` can give."""
    if "mc_probs" in columns:
        return set(MC_SCORES)
    if "probs" in columns or "logits" in columns:
        return set(SINGLE_PASS_SCORES)
    return set()


def check_vectors(values: list[object], name: str, width: int | None, reasons: list[str | None]) -> list[np.ndarray]:
    """Each value of a list column as an array; the first fault of a row (missing, wrong width,
    non-finite) goes to ``reasons`` naming the column, where the row has none yet."""
    rows: list[np.ndarray] = []
    for i, value in enumerate(values):
        try:
            row = np.asarray(value if value is not None else [], dtype=np.float64)
        except (TypeError, ValueError):  # ragged lists
            row = np.zeros(0)
            if reasons[i] is None:
                reasons[i] = f"{name}: rows of unequal length"
        if reasons[i] is None:
            if value is None or row.size == 0:
                reasons[i] = f"{name}: missing"
            elif width is not None and row.shape[-1] != width:
                reasons[i] = f"{name}: {row.shape[-1]} values, expected {width}"
            elif not np.isfinite(row).all():
                reasons[i] = f"{name}: non-finite values"
        rows.append(row)
    return rows


def _check_sums(rows: list[np.ndarray], name: str, reasons: list[str | None]) -> None:
    for i, row in enumerate(rows):
        if reasons[i] is None:
            if (row < 0).any():
                reasons[i] = f"{name}: negative probabilities"
            elif np.abs(row.sum(axis=-1) - 1.0).max() > SUM_TOLERANCE:
                reasons[i] = f"{name}: probabilities sum to {float(np.ravel(row.sum(axis=-1))[0]):.4g}, not 1"


def score_precomputed(batch: pa.Table, *, run_id: str, embedding_dim: int | None) -> pa.Table:
    """Features rows (:func:`alray.tables.features_schema`) of a batch of a precomputed pool, in input order."""
    ids = [str(i) for i in batch.column("id").to_pylist()]
    n = len(ids)
    reasons: list[str | None] = [None] * n
    embeddings = check_vectors(batch.column("embedding").to_pylist(), "embedding", embedding_dim, reasons)
    source = next((c for c in ("mc_probs", "probs", "logits") if c in batch.column_names), None)
    mc: list[np.ndarray] = []
    if source is not None:
        rows = check_vectors(batch.column(source).to_pylist(), source, None, reasons)
        if source == "mc_probs":
            for i, r in enumerate(rows):
                if reasons[i] is None and r.ndim == 1:  # one pass read as T=1 would make every MC score 0
                    reasons[i] = ("mc_probs: a flat list of values; expected T lists of C probabilities "
                                  "(one pass goes in probs)")
                elif reasons[i] is None and r.ndim != 2:
                    reasons[i] = "mc_probs: expected T lists of C probabilities"
        if source == "logits":
            rows = [np.exp(r - r.max()) / np.exp(r - r.max()).sum() if r.size and np.isfinite(r).all() else r
                    for r in rows]
        else:
            _check_sums(rows, source, reasons)
        widths = {r.shape[-1] for i, r in enumerate(rows) if reasons[i] is None}
        if len(widths) > 1:
            common = max(widths, key=lambda w: sum(1 for r in rows if r.shape[-1] == w))
            for i, r in enumerate(rows):
                if reasons[i] is None and r.shape[-1] != common:
                    reasons[i] = f"{source}: {r.shape[-1]} classes, expected {common}"
        mc = [r if r.ndim == 2 else r[None, :] for r in rows]
    ok = np.array([r is None for r in reasons], dtype=bool)
    good = np.flatnonzero(ok)
    columns: dict[str, pa.Array] = {
        "embedding": pa.array([embeddings[i].astype(np.float32) if ok[i] else None for i in range(n)],
                              pa.list_(pa.float32()))}
    if source is not None and len(good):
        scores = all_scores(np.stack([mc[i] for i in good]))
        given = MC_SCORES if source == "mc_probs" else SINGLE_PASS_SCORES
        probs: list[np.ndarray | None] = [None] * n
        pred: list[int | None] = [None] * n
        values: dict[str, list[float | None]] = {name: [None] * n for name in given}
        for j, i in enumerate(good.tolist()):
            probs[i] = scores["probs"][j].astype(np.float32)
            pred[i] = int(scores["pred"][j])
            for name in given:
                values[name][i] = float(scores[name][j])
        columns["probs"] = pa.array(probs, pa.list_(pa.float32()))
        columns["pred"] = pa.array(pred, pa.int32())
        for name in given:
            columns[name] = pa.array(values[name], pa.float64())
    return features_rows(batch, PRECOMPUTED_COLUMNS, columns, run_id=run_id, reasons=reasons)
