"""Stochastic batch acquisition: ``power``, ``softmax`` and ``softrank`` sampling of a score.

After Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron and Gal, "Stochastic Batch
Acquisition: A Simple Baseline for Deep Active Learning" (TMLR 2023). Taking the top k of a
score fills a large batch with near-duplicates of the most uncertain region; sampling the batch
without replacement with probabilities that grow with the score keeps most of its value and
spreads the picks. With beta = 1 / ``temperature``, a candidate of score s and rank r (1 for the
highest score; equal scores share a rank) is drawn with probability proportional to

- ``power``: s ** beta (scores below 0 count as 0: for non-negative scores such as BALD or entropy);
- ``softmax``: exp(beta * s);
- ``softrank``: r ** -beta (only the order of the scores matters).

The batch is drawn by Gumbel-top-k: each candidate's key is its log-probability plus a Gumbel
noise, and the k largest keys are an exact sample without replacement of those probabilities
(the Plackett-Luce model); the whole ranking, ordered by key, is one such draw of every
candidate. The noise of a candidate is a function of its id and the seed alone (Spark's xxhash64
of the id), so the keys are computed batch by batch where the candidates live, with no shuffle
of scores, and every engine draws the same batch. The selection then takes the largest keys as
it takes the largest weights (the log of the other objectives' product adds to the key, so the
probability is the sampling's times that product; balance quotas apply). A candidate whose score
is null comes after all others (ordered by its noise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from alray.selection.partitions import spark_xxhash64
from alray.strategies.base import CandidateBatch, Candidates, Sampler, ascending_non_null

if TYPE_CHECKING:
    from alray.config import StrategyConfig

SAMPLINGS = ("power", "softmax", "softrank")
# Mixed into the run seed so that the noise is not the hash that assigns the partitions.
_NOISE_SALT = 0x6A09E667


def gumbel_noise(ids: Sequence[str], seed: int) -> np.ndarray:
    """Standard Gumbel noise (N,) float64 for each id, a function of the id and ``seed`` alone."""
    hashed = spark_xxhash64(list(ids), (seed ^ _NOISE_SALT) & 0x7FFFFFFF).astype(np.int64).view(np.uint64)
    uniform = ((hashed >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)  # in (0, 1)
    return -np.log(-np.log(uniform))


def competition_ranks(values: npt.ArrayLike, sorted_values: npt.ArrayLike) -> np.ndarray:
    """Rank (N,) of each value among ``sorted_values`` (ascending, no NaN): 1 + how many are larger."""
    ordered = np.asarray(sorted_values, dtype=np.float64)
    return 1.0 + (len(ordered) - np.searchsorted(ordered, np.asarray(values, dtype=np.float64), side="right"))


def log_weights(scores: npt.ArrayLike, sampling: str, beta: float, *, ranks: npt.ArrayLike | None = None,
                ) -> np.ndarray:
    """Log of the unnormalised sampling probability (N,) of each score; -inf where the score is null."""
    s = np.asarray(scores, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if sampling == "power":
            out = beta * np.log(np.maximum(s, 0.0))
        elif sampling == "softmax":
            out = beta * s
        elif sampling == "softrank":
            if ranks is None:
                raise ValueError("softrank needs the ranks of the scores")
            out = -beta * np.log(np.asarray(ranks, dtype=np.float64))
        else:
            raise ValueError(f"sampling must be one of {list(SAMPLINGS)}, got {sampling!r}")
    return np.where(np.isnan(s), -np.inf, out)


def top_k_order(ids: Sequence[str], keys: npt.ArrayLike, k: int) -> np.ndarray:
    """Rows (min(k, N),) of the largest ``keys``, largest first; -inf keys and ties by id."""
    values = np.asarray(keys, dtype=np.float64)
    return np.lexsort((np.array(list(ids), dtype=object), -values))[:k]


def sampling_keys(ids: Sequence[str], scores: npt.ArrayLike, *, sampling: str, beta: float, seed: int,
                  sorted_scores: npt.ArrayLike | None = None) -> np.ndarray:
    """Gumbel-top-k keys (N,): log-probability plus noise; a null score's key comes after every finite one.

    ``sorted_scores`` (ascending, no NaN) are all the candidates' scores, which softrank ranks against.
    """
    ranks = None
    if sampling == "softrank":
        if sorted_scores is None:
            raise ValueError("softrank needs the sorted scores of all candidates")
        ranks = competition_ranks(scores, sorted_scores)
    values = log_weights(scores, sampling, beta, ranks=ranks)
    noise = gumbel_noise(ids, seed)
    # A null score's key sits far below any finite one and still follows its noise (in steps of
    # 1e290, well above the spacing of float64 near 1e300), so nulls come last in a random order.
    return np.where(np.isneginf(values), -1e300 + 1e290 * noise, values + noise)


def gumbel_top_k(ids: Sequence[str], scores: npt.ArrayLike, k: int, *, sampling: str, temperature: float = 1.0,
                 seed: int = 0) -> np.ndarray:
    """Rows (min(k, N),) of a sample without replacement of ``scores`` (N,) by ``sampling``, in draw order."""
    s = np.asarray(scores, dtype=np.float64)
    keys = sampling_keys(ids, s, sampling=sampling, beta=1.0 / temperature, seed=seed,
                         sorted_scores=ascending_non_null(s) if sampling == "softrank" else None)
    return top_k_order(ids, keys, k)


class StochasticSampling(Sampler):
    """A batch sampled without replacement with probabilities from a score (module docstring)."""

    inputs = "column"
    sampling: ClassVar[str]

    def label(self, entry: StrategyConfig) -> str:
        return f"{self.name}:{entry.input}@{entry.temperature:g}"

    def prepare(self, entry: StrategyConfig, column: str, candidates: Candidates) -> Any:
        # softrank ranks each score among all candidates' scores: those travel with the tasks
        return candidates.seed, candidates.sorted_values(column) if self.sampling == "softrank" else None

    def keys(self, entry: StrategyConfig, column: str, state: Any, batch: CandidateBatch) -> np.ndarray:
        seed, ordered = state
        return sampling_keys(batch.ids, batch.column(column), sampling=self.sampling, beta=1.0 / entry.temperature,
                             seed=seed, sorted_scores=ordered)


class PowerSampling(StochasticSampling):
    name = "power"
    sampling = "power"
    summary = "stochastic batch: sample without replacement with probability score ** (1 / temperature)"


class SoftmaxSampling(StochasticSampling):
    name = "softmax"
    sampling = "softmax"
    summary = "stochastic batch: sample without replacement with probability exp(score / temperature)"


class SoftrankSampling(StochasticSampling):
    name = "softrank"
    sampling = "softrank"
    summary = "stochastic batch: sample without replacement with probability rank ** (-1 / temperature)"
