"""``diversity``: the weighted k-center greedy over the embeddings (farthest point by weight x distance).

The selection core runs it (:mod:`alray.selection.rounds`): distributed in two rounds on Spark,
the same rounds on one machine. Its ``strength`` is the exponent of the distance, its
``min_distance`` a stop: no two picks closer than that.
"""

from __future__ import annotations

from alray.strategies.base import Strategy


class Diversity(Strategy):
    """Spread the picks over the embedding space, weighted by the objectives."""

    name = "diversity"
    role = "diversity"
    inputs = "embeddings"
    summary = "k-center greedy over the embeddings, each distance weighted by the objectives"
