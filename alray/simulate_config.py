"""The simulator's configuration: a ``simulate:`` YAML section read into pydantic models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alray.config import EmbedConfig, OutputConfig, RayConfig, StrategyConfig, _format_validation_error, apply_override
from alray.errors import ConfigError
from alray.strategies.base import EMBEDDINGS

# Named selections the simulator compares, as `selection.strategies` of `alray run` would hold
# them. `random` is the baseline (no strategy). Any other name is read as registry strategies
# joined by "+", each `strategy` (embeddings input) or `strategy:input`, e.g. diversity+weights:entropy.
PRESETS: dict[str, str | None] = {
    "random": None,
    "entropy": "weights:entropy",
    "margin": "weights:margin",
    "bald": "weights:bald",
    "power_bald": "power:bald",
    "badge": "badge",
    "cluster_margin": "cluster_margin:margin",
    "typiclust": "typiclust",
    "auto": "auto",
    "coreset": "diversity",
    "uncertainty_diversity": "diversity+weights:bald",
    "typicality": "diversity+typicality",
}
STRATEGY_NAMES = tuple(PRESETS)


@dataclass(frozen=True)
class PeerQuery:
    """What another library's query strategy sees in a simulator round (``benchmarks/peers.py``)."""

    mc_probs: np.ndarray  # (U, T, C) MC-dropout probabilities of the unlabeled rows
    embeddings: np.ndarray  # (U, D) the task model's embeddings of the unlabeled rows
    labeled_embeddings: np.ndarray  # (L, D) the same of the labeled rows
    labeled_y: np.ndarray  # (L,) their labels
    n_classes: int
    n_select: int
    seed: int


# Query strategies of other libraries, run on the simulator's exact loop: a name (``library:method``) to
# a function of a PeerQuery giving rows (n_select,) of the unlabeled rows in pick order. Registered by
# ``benchmarks/peers.py`` (their libraries are dev-only dependencies), empty otherwise.
PEER_STRATEGIES: dict[str, Callable[[PeerQuery], np.ndarray]] = {}


def strategy_entries(name: str, *, n_neighbors: int = 20) -> list[StrategyConfig] | None:
    """The ``selection.strategies`` entries a simulator strategy name stands for (None: random picks).

    ValueError names the part that is no registered strategy or does not fit its input.
    """
    spelled = PRESETS.get(name, name)
    if spelled is None:
        return None
    entries = []
    for part in spelled.split("+"):
        strategy, _, column = part.strip().partition(":")
        options: dict[str, object] = {"n_neighbors": n_neighbors} if strategy == "typicality" else {}
        entries.append(StrategyConfig(input=column or EMBEDDINGS, strategy=strategy, **options))  # type: ignore[arg-type]
    return entries


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SimModelConfig(_Section):
    architecture: Literal["feature_mlp", "sequence_cnn"] = Field(
        "feature_mlp", description="feature_mlp: a two-layer MLP; sequence_cnn: the built-in 1-D CNN (three strided "
        "convolutions, for MNIST-1D).")
    channels: int = Field(25, ge=1, description="sequence_cnn: channels of each convolution.")
    hidden_dim: int = Field(128, ge=1, description="FeatureMLP hidden width.")
    embedding_dim: int = Field(64, ge=1, description="FeatureMLP embedding width (what k-center measures).")
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="Dropout rate: in training and for MC dropout.")
    train_steps: int = Field(150, ge=1, description="Optimiser steps per round, rounded up to whole epochs; the "
                             "model is retrained from scratch each round, so a round costs the same at any size.")
    batch_size: int = Field(64, ge=1, description="Training batch size.")
    learning_rate: float = Field(3e-3, gt=0, description="Adam learning rate.")


def _digits_embed() -> EmbedConfig:
    # Digits fill their 8x8 frame and a mirror changes them: crops keep most of the image, no flips.
    return EmbedConfig(epochs=30, batch_size=256, image_size=16, channels=1, width=16,
                       augment={"flip_probability": 0.0, "crop_min_scale": 0.4})  # type: ignore[arg-type]


class SimLakeConfig(_Section):
    output: OutputConfig = Field(description="The lake the run wrote (a run config's output section).")
    run_id: str = Field(description="The run whose features table (id, embedding) the loop replays on.")
    labels_path: str = Field(description="Table of the true labels: `id` and the label column.")
    labels_format: Literal["parquet", "delta"] = Field("parquet", description="Format of the labels table.")
    label_column: str = Field("label", description="The labels table's column of labels (any type).")


class SimulateConfig(_Section):
    dataset: Literal["digits", "mnist1d", "lake"] = Field(
        "digits", description="digits: scikit-learn's 1,797 8x8 digits (64 pixel features); mnist1d: MNIST-1D "
        "generated locally by the mnist1d package (40 features, 4,000 train / 1,000 test); lake: a run's "
        "features table and a labels table of your own (simulate.lake), a head trained on the embeddings.")
    lake: SimLakeConfig | None = Field(None, description="dataset lake: where the features and labels are.")
    n_test: int = Field(500, ge=10, description="digits: held-out test rows (MNIST-1D has its own test split).")
    n_pool: int | None = Field(None, ge=10, description="Cap on the pool size (all training rows when absent).")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1,
                             description="One simulation per seed: split, seed set, training and MC masks.")
    initial_labels: int = Field(20, ge=2, description="Size of the seed set labeled before round 1.")
    initial_strategies: list[str] = Field(
        default_factory=lambda: ["random"], min_length=1,
        description="How the seed set is picked, with no labels and no model: random, or a strategy that needs no "
        "predictions (typiclust, probcover, coreset, typicality, ...) run on the dataset's features. Each is "
        "crossed with every strategy; its curves are named INITIAL>STRATEGY (random's keep the strategy's name).")
    initial_embedding: Literal["features", "ssl"] = Field(
        "features", description="What the seed set's strategies measure: the dataset's features, or (ssl, digits "
        "only) the embeddings of a self-supervised encoder trained on each seed's pool by alray embed's code path "
        "(Ray Train), once per seed and cached.")
    embed: EmbedConfig = Field(default_factory=_digits_embed, description="ssl: the encoder's training settings "
                               "(as a run's embed section); its seed is the simulation's seed.")
    cache: str | None = Field(None, description="ssl: folder of the seeds' pools (as PNGs) and their encoders "
                              "(default OUTPUT/ssl-cache); a rerun reuses an encoder trained on the same pool "
                              "with the same settings.")
    ray: RayConfig = Field(default_factory=lambda: RayConfig(), description="ssl: the Ray instance of the training.")
    batch_size: int = Field(20, ge=1, description="Labels revealed per round.")
    rounds: int = Field(20, ge=0, description="Selection rounds after the seed set.")
    strategies: list[str] = Field(default_factory=lambda: list(STRATEGY_NAMES), min_length=1,
                                  description=f"Strategies to compare: {', '.join(STRATEGY_NAMES)}, or registry "
                                  "strategies joined by '+', e.g. diversity+weights:entropy.")
    n_partitions: int = Field(4, ge=1, description="Partitions of the first coreset round (as selection's).")
    oversample: float = Field(4.0, ge=1, description="Local centres per partition share (as selection's).")
    targets: list[float] = Field(default_factory=lambda: [0.90, 0.95],
                                 description="Test accuracies whose label cost is reported.")
    mc_samples: int = Field(20, ge=2, description="MC-dropout samples T for the uncertainty scores.")
    n_neighbors: int = Field(20, ge=1, description="typicality: neighbours averaged (as selection's knn).")
    full_pool_reference: bool = Field(True, description="Also train on the whole labeled pool: the ceiling.")
    model: SimModelConfig = Field(default_factory=lambda: SimModelConfig(), description="The task model.")
    output: str = Field("simulate-out", description="Folder for curves.csv, curves.png and summary.json.")

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, value: list[str]) -> list[str]:
        for name in value:
            if name in PEER_STRATEGIES:
                continue
            try:
                strategy_entries(name)
            except (ValueError, ValidationError) as exc:
                raise ValueError(f"strategy {name!r}: not a preset ({', '.join(STRATEGY_NAMES)}) nor registry "
                                 f"strategies joined by '+' ({_first_line(exc)})") from None
        if len(set(value)) != len(value):
            raise ValueError("a strategy is listed twice")
        return value

    @field_validator("initial_strategies")
    @classmethod
    def _model_free(cls, value: list[str]) -> list[str]:
        for name in value:
            try:
                entries = strategy_entries(name)
            except (ValueError, ValidationError) as exc:
                raise ValueError(f"strategy {name!r}: not a preset nor registry strategies "
                                 f"({_first_line(exc)})") from None
            if entries is not None and any(e.input != EMBEDDINGS for e in entries):
                raise ValueError(f"{name!r} reads scores or predictions; the seed set is picked with no model")
        if len(set(value)) != len(value):
            raise ValueError("a strategy is listed twice")
        return value

    @model_validator(mode="after")
    def _lake_needs_tables(self) -> SimulateConfig:
        if self.dataset == "lake" and self.lake is None:
            raise ValueError("dataset lake needs simulate.lake (output, run_id, labels_path)")
        return self

    @model_validator(mode="after")
    def _ssl_needs_images(self) -> SimulateConfig:
        if self.initial_embedding == "ssl" and self.dataset != "digits":
            raise ValueError(f"initial_embedding: ssl trains an image encoder; {self.dataset} has no images "
                             "(use features)")
        return self

    def curve_names(self) -> list[tuple[str, str, str]]:
        """(curve name, initial strategy, strategy) of every curve, in order."""
        return [(name if initial == "random" else f"{initial}>{name}", initial, name)
                for initial in self.initial_strategies for name in self.strategies]

    @field_validator("targets")
    @classmethod
    def _accuracies(cls, value: list[float]) -> list[float]:
        if any(not 0.0 < t <= 1.0 for t in value):
            raise ValueError("expected accuracies in (0, 1]")
        return sorted(value)


def _first_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
    return str(exc).splitlines()[0]


class SimulateFile(_Section):
    simulate: SimulateConfig = Field(description="The active-learning simulation.")


def load_simulate_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SimulateConfig:
    """Read a YAML file with a ``simulate:`` section, apply ``KEY=VALUE`` overrides, validate.

    Raises ConfigError naming the file or the dotted key at fault.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a `simulate:` section")
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        return SimulateFile.model_validate(data).simulate
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(path))) from None
