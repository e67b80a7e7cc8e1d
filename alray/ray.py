"""Scoring on a Ray Dataset the caller already holds: what ``alray score`` itself runs.

>>> import ray, alray.ray  # doctest: +SKIP
>>> from alray.config import ModelConfig, ScoreConfig
>>> from alray.inference import ScoringOptions
>>> scored = alray.ray.score_dataset(ray.data.read_parquet("pool/"), ModelConfig(checkpoint="model.pt"),
...                                  ScoreConfig(mc_samples=20), ScoringOptions("image", 20, seed=0, run_id="r1"))
"""

from alray.stages.score import score_dataset

__all__ = ["score_dataset"]
