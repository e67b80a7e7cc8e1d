"""``badge``: k-means++ seeding on the gradient embeddings of the last layer.

After Ash, Zhang, Krishnamurthy, Langford and Agarwal, "Deep Batch Active Learning by Diverse,
Uncertain Gradient Lower Bounds" (ICLR 2020). A candidate's gradient embedding is the gradient
of the cross-entropy loss, at the model's own prediction, with respect to the last linear layer:
``g = (p - onehot(argmax p)) outer h``, where ``p`` (C,) are its class probabilities (the
``probs`` column) and ``h`` (D,) its embedding. Its norm grows with the uncertainty (a confident
prediction has ``p`` close to the one-hot) and its direction says which classes and which
features; k-means++ seeding on these vectors (the first pick the largest norm, each next one
drawn with probability proportional to its squared distance to the nearest pick) mixes
uncertainty with diversity without a weight to tune.

The C x D vectors are never formed: with ``a = p - onehot``, ``<g_i, g_j> = <a_i, a_j> <h_i, h_j>``,
so one pick's distances to every candidate cost one product with the probabilities and one
with the embeddings (C + D numbers per candidate, not C x D).

The seeding costs picks x rows x (C + D). It is distributed as the coreset is, in two rounds.
Round one: every hash partition of the candidates (the ``selection.n_partitions`` partitions of
the Spark stage) splits its rows into blocks of at most ``BLOCK_ROWS`` (by a seeded hash of the
id), and each block runs the seeding on its rows and keeps its share of ``oversample`` x the
partition's share of the batch, so that the work is bounded by picks x ``BLOCK_ROWS`` x (C + D)
in all. The merge: the driver runs the seeding again on the union of the local picks when that
union holds at most ``MERGE_MAX_UNION`` rows and picks x union stays under ``MERGE_MAX_WORK``
(so that a merge stays within a minute); otherwise (large batches) round one keeps exactly its
share (``oversample`` 1) and the merge interleaves the blocks' pick orders (every block's first
pick, then the second, ...: a block's i-th pick comes at i / its share). The approximation: in
round one a pick is repelled only by the picks of its own block; the merge restores the
repulsion across blocks when it runs. The randomness of a block is seeded by the run seed and
its first id, so every engine draws the same picks. Labeled samples play no part (as in the
paper: only the unlabeled candidates' gradient embeddings are seeded); a candidate without
probabilities has a zero gradient embedding.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import xxhash

from alray.errors import ConfigError
from alray.selection.partitions import spark_xxhash64
from alray.strategies.base import Candidates, Picks, Selector, embedding_matrix, float_lists

if TYPE_CHECKING:
    from alray.config import StrategyConfig

PROBS = "probs"
# Round one seeds blocks of at most this many rows of a partition.
BLOCK_ROWS = 20_000
_BLOCK_SALT = 0x3C6EF372
# The merge round runs k-means++ on the union while it holds at most this many rows ...
MERGE_MAX_UNION = 200_000
# ... and its cost, picks x union rows, stays below this; beyond, the partitions' orders interleave.
MERGE_MAX_WORK = 2_000_000_000
ORDER, SHARE = "_badge_order", "_badge_share"
# Squared distances below this share of the two squared norms are rounding noise of a duplicate.
_ROUNDING = 1e-9
UNION_SCHEMA = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32())), (PROBS, pa.list_(pa.float32())),
                          (ORDER, pa.int64()), (SHARE, pa.int64())])


def gradient_factors(probs: npt.ArrayLike) -> np.ndarray:
    """``p - onehot(argmax p)`` (N, C) float64: the gradient embedding's class factor."""
    p = np.asarray(probs, dtype=np.float64)
    a = p.copy()
    if a.size:
        a[np.arange(len(a)), np.argmax(p, axis=1)] -= 1.0
    return a


def gradient_embeddings(probs: npt.ArrayLike, embeddings: npt.ArrayLike) -> np.ndarray:
    """The explicit gradient embeddings (N, C x D); for tests and small pools only."""
    a = gradient_factors(probs)
    h = np.asarray(embeddings, dtype=np.float64)
    return (a[:, :, None] * h[:, None, :]).reshape(len(a), -1)


def kmeanspp_gradients(probs: npt.ArrayLike, embeddings: npt.ArrayLike, k: int, *,
                       rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on the gradient embeddings of ``probs`` (N, C) and ``embeddings`` (N, D).

    Returns up to ``k`` rows in pick order: the largest gradient norm first (ties: the first
    row), then each row drawn with probability proportional to its squared distance to the
    nearest pick. When every remaining row coincides with a pick, the next rows are taken in
    order.
    """
    a = gradient_factors(probs)
    h = np.asarray(embeddings, dtype=np.float64)
    n = len(a)
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, np.int64)
    a_sq, h_sq = np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", h, h)
    norms = a_sq * h_sq
    picks = [int(np.argmax(norms))]
    picked = np.zeros(n, dtype=bool)
    picked[picks[0]] = True
    d2 = np.full(n, np.inf)
    while True:
        c = picks[-1]
        scale = norms + norms[c]
        to_c = norms + norms[c] - 2.0 * (a @ a[c]) * (h @ h[c])
        to_c[to_c <= _ROUNDING * scale] = 0.0  # a duplicate of the pick: zero, not rounding noise
        d2 = np.minimum(d2, to_c)
        d2[picked] = 0.0
        if len(picks) == k:
            break
        total = float(d2.sum())
        if total > 0.0:
            cumulative = np.cumsum(d2)
            nxt = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
            nxt = min(nxt, n - 1)
            if picked[nxt] or d2[nxt] <= 0.0:  # a rounding edge: the last row with mass
                nxt = int(np.flatnonzero(d2 > 0.0)[-1])
        else:
            nxt = int(np.flatnonzero(~picked)[0])
        picks.append(nxt)
        picked[nxt] = True
    return np.array(picks, dtype=np.int64)


def partition_rng(seed: int, first_id: str) -> np.random.Generator:
    """The random generator of a partition: the run seed and the partition's first id."""
    return np.random.default_rng([seed & 0xFFFFFFFF, xxhash.xxh64_intdigest(first_id.encode("utf-8")) & 0xFFFFFFFF])


def probabilities(table: pa.Table | pa.RecordBatch, n_rows: int) -> np.ndarray:
    """The ``probs`` column as (N, C) float64; a null or empty entry is a row of zeros."""
    column = table.column(PROBS)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    lengths = column.value_lengths().to_numpy(zero_copy_only=False)
    lengths = np.nan_to_num(lengths.astype(np.float64), nan=0.0).astype(np.int64)
    width = int(lengths.max()) if n_rows else 0
    out = np.zeros((n_rows, width))
    full = lengths == width
    if width and full.any():
        values = column.filter(pa.array(full)).flatten().to_numpy(zero_copy_only=False)
        out[full] = np.asarray(values, dtype=np.float64).reshape(-1, width)
    if width and (~full & (lengths > 0)).any():
        raise ConfigError("badge: every probs entry must have the same number of classes")
    return out


def local_share(n_select: int, n_partitions: int, oversample: float, rows: int) -> int:
    """Picks a partition keeps in round one: ``oversample`` x its share of the batch, at most its rows."""
    return max(0, min(rows, math.ceil(oversample * n_select / n_partitions)))


def merge_runs(n_select: int, union: int) -> bool:
    """Whether the merge round reruns the seeding on the union (else the partitions' orders interleave)."""
    return union <= MERGE_MAX_UNION and n_select * union <= MERGE_MAX_WORK


def blocks_of(ids: list[str], seed: int, block_rows: int | None = None) -> np.ndarray:
    """Block (N,) of each of a partition's ids: ceil(N / ``block_rows``) blocks by a seeded hash of the id."""
    n_blocks = max(1, math.ceil(len(ids) / (block_rows or BLOCK_ROWS)))
    if n_blocks == 1:
        return np.zeros(len(ids), np.int64)
    return np.mod(spark_xxhash64(ids, (seed ^ _BLOCK_SALT) & 0x7FFFFFFF), n_blocks)


def round_one_oversample(n_select: int, oversample: float) -> float:
    """The oversampling round one uses: ``oversample`` when the merge will reseed, else 1 (exact shares)."""
    return oversample if merge_runs(n_select, math.ceil(oversample * n_select)) else 1.0


def local_round(table: pa.Table, n_select: int, n_partitions: int, oversample: float, seed: int) -> pa.Table:
    """One partition's round (rows sorted by id): its blocks' picks with their pick order and block share."""
    n = table.num_rows
    if n == 0 or n_select == 0:
        return UNION_SCHEMA.empty_table()
    k = local_share(n_select, n_partitions, round_one_oversample(n_select, oversample), n)
    ids = [str(i) for i in table.column("id").to_pylist()]
    block = blocks_of(ids, seed)
    probs, embeddings = probabilities(table, n), embedding_matrix(table)
    rows_out, order_out, share_out = [], [], []
    for b in range(int(block.max()) + 1):
        members = np.flatnonzero(block == b)
        if not len(members):
            continue
        share = min(len(members), math.ceil(k * len(members) / n))
        picks = members[kmeanspp_gradients(probs[members], embeddings[members], share,
                                           rng=partition_rng(seed, ids[members[0]]))]
        rows_out.append(picks)
        order_out.append(np.arange(len(picks)))
        share_out.append(np.full(len(picks), share))
    take = pa.array(np.concatenate(rows_out), pa.int64())
    return pa.table([table.column("id").take(take).cast(pa.string()),
                     float_lists(table.column("embedding").take(take)),
                     table.column(PROBS).take(take).cast(UNION_SCHEMA.field(PROBS).type),
                     pa.array(np.concatenate(order_out), pa.int64()),
                     pa.array(np.concatenate(share_out), pa.int64())], schema=UNION_SCHEMA)


def merge(union: pa.Table, n_select: int, seed: int) -> tuple[pa.Table, str]:
    """The final picks from the union of the local rounds, in pick order, and how they were merged."""
    from alray.selection.rounds import sorted_by_id

    union = sorted_by_id(union)
    if merge_runs(n_select, union.num_rows):
        rows = kmeanspp_gradients(probabilities(union, union.num_rows), embedding_matrix(union), n_select,
                                  rng=np.random.default_rng([seed & 0xFFFFFFFF, 1]))
        return union.take(pa.array(rows, pa.int64())), "kmeans++"
    order = union.column(ORDER).to_numpy()
    share = union.column(SHARE).to_numpy()
    ids = np.array(union.column("id").to_pylist(), dtype=object)
    rows = np.lexsort((ids, order / np.maximum(share, 1)))[:n_select]  # each partition's i-th pick at i / share
    return union.take(pa.array(rows, pa.int64())), "interleaved"


class Badge(Selector):
    """k-means++ on the last layer's gradient embeddings (module docstring)."""

    name = "badge"
    inputs = "embeddings"
    summary = "uncertainty and diversity: k-means++ seeding on the last layer's gradient embeddings (BADGE)"

    def reads(self, entry: StrategyConfig) -> tuple[str, ...]:
        return (PROBS,)

    def select(self, entry: StrategyConfig, candidates: Candidates, n_select: int,
               labeled: np.ndarray | None) -> Picks:
        n_partitions, oversample, seed = candidates.n_partitions, candidates.oversample, candidates.seed
        if PROBS not in candidates.columns:
            raise ConfigError("selection.strategies: badge needs the features' probs column (a model's class "
                              "probabilities); this features table has none")

        def round_one(table: pa.Table) -> pa.Table:
            return local_round(table, n_select, n_partitions, oversample, seed)

        union = candidates.partition_map(round_one, UNION_SCHEMA)
        if union.num_rows == 0 or n_select == 0:
            return Picks([], np.zeros((0, 0), np.float32), {})
        picked, how = merge(union, n_select, seed)
        return Picks([str(i) for i in picked.column("id").to_pylist()], embedding_matrix(picked),
                     {"union": float(union.num_rows), "merged_by_kmeanspp": float(how == "kmeans++")})
