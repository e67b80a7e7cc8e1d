"""The job configuration: pydantic models read from YAML, with `--set KEY=VALUE` overrides."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alray.errors import ConfigError
from alray.payloads import DEFAULT_MAX_IMAGE_PIXELS
from alray.strategies.base import EMBEDDINGS
from alray.strategies.registry import get_strategy, strategy_names
from alray.tables import UNCERTAINTY_SCORES

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

FilterOp = Literal[
    ">", ">=", "<", "<=", "==", "!=", "in", "not_in", "between", "is_null", "not_null", "within_last"
]
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``"7d"``, ``"12h"``, ``"30m"``; ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"expected a duration such as '7d', '12h' or '30m', got {text!r}")
    return float(match.group(1)) * _DURATION_SECONDS[match.group(2)]


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(value: float | str) -> int:
    """Bytes in a size such as ``"2g"``, ``"512MiB"`` or ``1073741824``; ValueError otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    match = _SIZE.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"expected a size such as '2g', '512m' or a number of bytes, got {value!r}")
    return int(float(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()])


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(_Section):
    seed: int = Field(0, description="Seed of every random choice (dropout masks, partitions, first pick).")
    run_id: str | None = Field(
        None, description="Run id; the same id reruns and replaces that run. Generated when absent."
    )
    resume: bool = Field(
        True, description="A rerun of an interrupted run with the same config reuses its finished scoring.")
    incremental: bool = Field(
        True, description="Score only the pool rows that are new or changed since the last succeeded run with the "
        "same model and scoring settings, and carry the other rows' features and rejects over from it (the same "
        "rows and values a full rescore gives). False: score every row.")

    @field_validator("run_id")
    @classmethod
    def _run_id_is_safe(cls, value: str | None) -> str | None:
        if value is not None and not RUN_ID_PATTERN.match(value):
            raise ValueError("expected letters, digits, '.', '_' or '-' (at most 128), starting alphanumeric")
        return value


class IcebergCatalogConfig(_Section):
    type: Literal["sql", "rest"] = Field("sql", description="Catalog kind: sql (sqlite by default) or rest.")
    name: str = Field("default", description="Catalog name (a SQL catalog keeps tables of several names apart).")
    uri: str | None = Field(
        None, description="Catalog URI: sqlite:///path/catalog.db or a REST endpoint. For output, absent means "
        "an embedded sqlite catalog at OUTPUT/_catalog.db.")
    warehouse: str | None = Field(None, description="Warehouse location or name the catalog needs, if any.")
    namespace: str = Field("alray", description="Namespace of the output tables (ignored for the pool).")
    properties: dict[str, str] = Field(default_factory=dict, description="Extra pyiceberg catalog properties.")


class PoolConfig(_Section):
    path: str = Field(description="Pool table: a parquet file, folder or glob, a Delta table path, an Iceberg "
                      "table identifier (namespace.table), a CSV/JSONL listing (file, folder or glob), or a "
                      "folder, glob or object-store prefix of image files (format images).")
    format: Literal["parquet", "delta", "iceberg", "csv", "jsonl", "images"] = Field(
        "parquet", description="Format of the pool table; csv/jsonl list `id,uri[,metadata...]`; images lists the "
        "image files (jpg, png, webp, bmp, tiff) under path: ids are the paths relative to it, and file_size and "
        "modified_at become metadata.")
    metadata_path: str | None = Field(
        None, description="format images: a parquet table of metadata joined on `id` (the relative path).")
    version: int | None = Field(
        None, description="Delta table version or Iceberg snapshot id to read (latest when absent).")
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="Object-store options in delta-rs form (AWS_ACCESS_KEY_ID, "
        "AWS_ENDPOINT_URL, AWS_REGION, ...); absent ones come from the usual credential chain.")
    catalog: IcebergCatalogConfig | None = Field(None, description="Iceberg catalog of the pool (format iceberg).")

    @model_validator(mode="after")
    def _iceberg_needs_catalog(self) -> PoolConfig:
        if self.format == "iceberg" and (self.catalog is None or not self.catalog.uri):
            raise ValueError("format 'iceberg' needs catalog.uri (sqlite:///... or a REST endpoint)")
        return self


class LabeledConfig(_Section):
    path: str | None = Field(
        None,
        description="Table of already labeled ids (column `id`); excluded from selection, and their "
        "embeddings count as already-selected centres when they are in the pool.",
    )
    format: Literal["parquet", "delta"] = Field("parquet", description="Format of the labeled table.")
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="Object-store options of the labeled table (the pool's when absent).")
    exclude_previous_runs: bool = Field(
        False, description="Also exclude ids selected by earlier succeeded runs of this lake's ranking table.")
    from_lake: bool = Field(
        True, description="Also exclude the ids of the lake's labels table (imported with alray import-labels; "
        "their embeddings count as centres, as labeled.path's do) and the ids out for labeling (sent by "
        "alray export, neither labeled nor expired; centres too).")
    expire_after: str | None = Field(
        "14d", description="A sent id not labeled within this long of its export ('14d', '36h') expires: it is a "
        "candidate again. None: sent ids never expire.")
    classes: list[str] | None = Field(
        None, description="Class names in the order of the model's outputs (`probs`), for the predictions and the "
        "label choices alray export writes; 0, 1, ... when absent.")

    @field_validator("expire_after")
    @classmethod
    def _expire_after_is_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    def expiry(self) -> dt.timedelta | None:
        """How long a sent id waits for its label before it expires (None: forever)."""
        return None if self.expire_after is None else dt.timedelta(seconds=parse_duration(self.expire_after))


class ModelConfig(_Section):
    checkpoint: str = Field(
        description="The model: an alray checkpoint (alray.models.save_checkpoint), a TorchScript file with "
        "alray.json metadata (alray.models.save_torchscript), an ONNX file, a Hugging Face save_pretrained "
        "directory (image or text classifier, or a feature-extraction model: embeddings only), or a state dict "
        "of `architecture`. Loaded without pickle (weights_only=True)."
    )
    format: Literal["auto", "torchscript", "alray", "onnx", "huggingface"] = Field(
        "auto", description="What `checkpoint` is; auto tells it from the content (a directory with config.json, "
        "an ONNX protobuf, a TorchScript archive, an alray checkpoint). A file of another format is an error.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the model runs; auto uses a GPU when the actor was given one."
    )
    architecture: str | None = Field(
        None,
        description="`torchvision:NAME` (e.g. torchvision:resnet18) to load `checkpoint` as a state dict of "
        "that torchvision model (needs torchvision installed); absent for alray and TorchScript files.",
    )
    image_size: int = Field(224, ge=8, description="Input side in pixels of a torchvision model.")
    max_tokens: int | None = Field(
        None, ge=1, description="Tokens a Hugging Face text model's inputs are cut or padded to (default 256, "
        "capped by the model's own limit).",
    )
    dropout: float | None = Field(
        None, ge=0, lt=1,
        description="MC-dropout rate for models that record none (torchvision, TorchScript without one); "
        "alray checkpoints use their own.",
    )

    @field_validator("architecture")
    @classmethod
    def _architecture_is_known(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("torchvision:") and len(value) > len("torchvision:")):
            raise ValueError("expected torchvision:NAME, e.g. torchvision:resnet18")
        return value


class ScoreConfig(_Section):
    mc_samples: int = Field(20, ge=1, le=1000, description="MC-dropout samples T per input.")
    batch_size: int = Field(256, ge=1, description="Rows per batch handed to a scoring actor.")
    num_actors: int = Field(1, ge=1, description="Scoring actors (one model copy each).")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved per scoring actor.")
    cpus_per_decode_task: float = Field(
        1.0, gt=0, description="CPUs reserved per Ray task that decodes a batch of payloads (images, vectors, "
                               "texts) into model inputs before the actors score them.")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per scoring actor; 0 scores on CPU.")
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS, ge=1,
        description="Largest image decoded whole (width x height). A larger JPEG is decoded reduced by 2, 4 or 8 "
        "(DCT scaling) to fit; any other larger image is rejected with its size. A scoring actor's decoding "
        "then holds at most about 8 bytes per pixel of this (400 MB at the default 50 MP) beside its model.",
    )
    max_bad_fraction: float = Field(
        0.05, ge=0, le=1, description="Fail the run when more than this fraction of the pool is rejected."
    )
    mc_mode: Literal["head", "full"] = Field(
        "head",
        description="MC dropout: `head` runs the backbone once and samples only the dropout head T times "
        "(fast); `full` runs T full passes. Both give the same scores for models that split at the head; "
        "models that do not (a TorchScript forward only) always run full passes.",
    )


class FilterConfig(_Section):
    column: str = Field(description="Column of the features table (a score or pool metadata).")
    op: FilterOp = Field(description="Comparison; `within_last` keeps timestamps within a duration of the run time.")
    value: Any = Field(None, description="Operand: a scalar, a list for in/not_in, [low, high] for between, "
                       "a duration such as '7d' for within_last, nothing for is_null/not_null.")

    @model_validator(mode="after")
    def _value_fits_op(self) -> FilterConfig:
        op, value = self.op, self.value
        if op in ("is_null", "not_null"):
            if value is not None:
                raise ValueError(f"op {op!r} takes no value")
        elif op in ("in", "not_in"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"op {op!r} needs a non-empty list value")
        elif op == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise ValueError("op 'between' needs a value [low, high]")
        elif op == "within_last":
            if not isinstance(value, str):
                raise ValueError("op 'within_last' needs a duration such as '7d'")
            parse_duration(value)
        elif value is None or isinstance(value, (list, dict)):
            raise ValueError(f"op {op!r} needs a scalar value")
        return self

    def describe(self) -> str:
        """A short human form, used as the reason of rows this filter removes."""
        if self.value is None:
            return f"{self.column} {self.op}"
        return f"{self.column} {self.op} {json.dumps(self.value, default=str)}"


ThresholdOperation = Literal["bigger", "bigger_equal", "smaller", "smaller_equal"]


def _registered_strategies(schema: dict[str, Any]) -> None:
    # The JSON schema lists what the registry holds when the schema is made, plugins included.
    schema["enum"] = list(strategy_names())


class QueryConfig(_Section):
    path: str | None = Field(None, description="Table with an `embedding` column (list of floats) to be close to.")
    format: Literal["parquet", "delta"] = Field("parquet", description="Format of the query table.")
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="Object-store options of the query table (as the pool's).")
    ids: list[str] = Field(default_factory=list, description="Ids of this run's pool whose embeddings are queries.")


class StrategyConfig(_Section):
    """One entry of ``selection.strategies``: an input and what to do with it."""

    input: str = Field(description="`embeddings`, `predictions`, a score (" + ", ".join(UNCERTAINTY_SCORES)
                       + ", a quality metric) or a metadata column.")
    strategy: str = Field(
        description="A strategy of alray.strategies.registry: " + " | ".join(strategy_names()) + ".",
        json_schema_extra=_registered_strategies)
    strength: float = Field(1.0, gt=0, description="Exponent of this objective in the product of objectives.")
    min_distance: float | None = Field(
        None, ge=0, description="diversity: stop once every candidate is closer than this to a selected one.")
    threshold: float | None = Field(None, description="threshold: the value to compare with.")
    operation: ThresholdOperation | None = Field(None, description="threshold: bigger | bigger_equal | smaller | "
                                                                   "smaller_equal.")
    target: Literal["uniform", "input"] | dict[str, float] = Field(
        "uniform", description="balance: uniform over the classes, as in the input, or {class: share}.")
    query: QueryConfig | None = Field(None, description="similarity: the embeddings to be close to.")
    method: Literal["knn", "kmeans"] = Field("knn", description="typicality: k nearest neighbours or KMeans.")
    n_neighbors: int = Field(20, ge=1, description="typicality knn: neighbours averaged.")
    reference_size: int = Field(4096, ge=2, description="typicality knn: candidates sampled as neighbours.")
    n_clusters: int = Field(32, ge=1, description="typicality kmeans: clusters; probcover: k-means pseudo-labels "
                            "for the purity heuristic (the number of classes you expect); cluster_margin: clusters "
                            "of the average-linkage clustering.")
    max_clusters: int = Field(500, ge=1, description="typiclust: at most this many k-means clusters "
                              "(labeled + n_samples otherwise); cluster_margin: k-means micro-clusters the "
                              "average linkage merges.")
    sample_size: int = Field(20_000, ge=2, description="typiclust, probcover, cluster_margin: candidates (the first "
                             "in the seeded hash order) the clusters and the ball graph are built on; all when fewer.")
    margin_candidates: int | None = Field(None, ge=1, description="cluster_margin: the most uncertain candidates "
                                          "the batch is taken from (default 10 x the batch).")
    delta: float | None = Field(None, gt=0, description="probcover: ball radius; from the purity heuristic when unset.")
    purity: float = Field(0.95, description="probcover: share of pure balls the chosen delta keeps.")
    temperature: float = Field(1.0, gt=0, description="power, softmax, softrank: sampling temperature (1 / beta); "
                               "lower is closer to taking the top scores.")

    @field_validator("strategy")
    @classmethod
    def _registered(cls, value: str) -> str:
        get_strategy(value)
        return value

    @model_validator(mode="after")
    def _fields_fit_strategy(self) -> StrategyConfig:
        strategy = get_strategy(self.strategy)
        name = self.strategy
        if strategy.inputs == "embeddings" and self.input != EMBEDDINGS:
            raise ValueError(f"strategy {name!r} needs input 'embeddings', got {self.input!r}")
        if strategy.inputs != "embeddings" and self.input == EMBEDDINGS:
            raise ValueError(f"strategy {name!r} takes a score, a metadata column or predictions, not embeddings")
        strategy.check(self)
        return self

    def label(self) -> str:
        """Short name used in the ranking's parts, e.g. ``weights:bald``."""
        return get_strategy(self.strategy).label(self)


def _default_strategies() -> list[StrategyConfig]:
    return [StrategyConfig(input=EMBEDDINGS, strategy="auto")]


class SelectionConfig(_Section):
    n_samples: int | None = Field(None, gt=0, description="How many samples to select for labeling.")
    proportion_samples: float | None = Field(
        None, gt=0, le=1, description="Or: this share of the candidates (after filters and thresholds).")
    strategies: list[StrategyConfig] = Field(
        default_factory=_default_strategies,
        description="Objectives; thresholds apply first, the rest combine as a product of each objective "
        "raised to its strength. Default: auto, the budget-aware choice (README: Strategies).")
    mode: Literal["combined", "top_m"] = Field(
        "combined", description="combined: weighted diversity; top_m: keep the top_m candidates by the "
        "weights, then diversify among them.")
    top_m: int | None = Field(None, gt=0, description="top_m mode: candidates kept before diversifying.")
    near_duplicate_distance: float = Field(
        0.0, ge=0, description="Two selected samples (or one and a labeled one) are never closer than this.")
    filters: list[FilterConfig] = Field(default_factory=list, description="Metadata filters, applied in order.")
    engine: Literal["auto", "spark", "local"] = Field(
        "auto", description="Where the selection runs: spark (the configured Spark session), local (in this "
        "process, the same selection core: the same picks and ranking order; no JVM), or auto: local when the "
        "run's features hold fewer than 100,000 rows, else spark.")
    n_partitions: int = Field(
        4, ge=1, description="Partitions of the first coreset round; changes results (see README)."
    )
    oversample: float = Field(
        4.0, ge=1, description="Each partition keeps oversample x its share of n_samples as local centres."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SelectionConfig:
        if self.n_samples is not None and self.proportion_samples is not None:
            raise ValueError("give n_samples or proportion_samples, not both")
        roles = [get_strategy(s.strategy).role for s in self.strategies]
        diversity = [s for s, role in zip(self.strategies, roles, strict=True) if role == "diversity"]
        if len(diversity) > 1:
            raise ValueError("at most one diversity strategy")
        if self.n_samples is None and self.proportion_samples is None and not (
                diversity and diversity[0].min_distance):
            raise ValueError("needs a stop: n_samples, proportion_samples or a diversity min_distance")
        if roles.count("balance") > 1:
            raise ValueError("at most one balance strategy")
        if self.mode == "top_m" and (self.top_m is None or not diversity):
            raise ValueError("mode top_m needs top_m and a diversity strategy")
        return self


class OutputConfig(_Section):
    path: str = Field(description="Lake root; the tables features, ranking, rejects, runs, round_items, labels and "
                      "pool_rows live under it.")
    format: Literal["delta", "iceberg", "parquet"] = Field(
        "delta", description="Table format: delta (deltalake), iceberg (pyiceberg) or plain parquet folders.")
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="Object-store options in delta-rs form (AWS_ACCESS_KEY_ID, "
        "AWS_ENDPOINT_URL, AWS_REGION, AWS_ALLOW_HTTP, ...); absent ones come from the usual credential chain.")
    catalog: IcebergCatalogConfig | None = Field(
        None, description="Iceberg catalog of the output tables; an embedded sqlite catalog when absent.")


class TrainConfig(_Section):
    epochs: int = Field(200, ge=1, description="alray train: full-batch epochs of the head.")
    learning_rate: float = Field(1e-2, gt=0, description="alray train: Adam's learning rate.")
    dropout: float = Field(0.5, ge=0, lt=1, description="alray train: dropout before the head, in training and "
                           "for MC dropout when scoring.")
    run_id: str | None = Field(None, description="alray train: the run whose features to train on (default: the "
                               "latest succeeded run scored with model.checkpoint).")
    output: str | None = Field(None, description="alray train: where the checkpoint goes (default "
                               "OUTPUT/models/head-RUN_ID.pt).")


class RayConfig(_Section):
    address: str | None = Field(None, description="Ray cluster to attach to; local Ray when absent.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray instance (all when absent).")
    object_store_memory: int | None = Field(
        None, description="Size of the local Ray instance's object store, e.g. '2g' (Ray's default when absent: "
        "30% of memory). It holds the blocks between the pool reads, the actors and the writes, shared by all "
        "workers; blocks beyond it spill to disk. A cluster sets its own.")

    @field_validator("object_store_memory", mode="before")
    @classmethod
    def _size(cls, value: float | str | None) -> int | None:
        if value is None:
            return None
        size = parse_size(value)
        if size < 100 * 2**20:
            raise ValueError("must be at least 100m (Ray's floor is 75 MiB)")
        return size


class SparkConfig(_Section):
    master: str = Field("local[2]", description="Spark master URL.")
    conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings.")


class AugmentConfig(_Section):
    crop_min_scale: float = Field(
        0.2, gt=0, le=1, description="Smallest share of an image's area a random crop keeps (SimCLR: 0.08).")
    flip_probability: float = Field(
        0.5, ge=0, le=1, description="Chance of a horizontal flip; 0 for pools where a mirror changes the meaning "
        "(text, digits).")
    jitter: float = Field(
        0.4, ge=0, lt=1, description="Colour jitter: brightness, contrast and saturation factors drawn from "
        "[1 - jitter, 1 + jitter].")
    jitter_probability: float = Field(0.8, ge=0, le=1, description="Chance that a view is colour-jittered.")
    grayscale_probability: float = Field(
        0.2, ge=0, le=1, description="Chance that an RGB view is turned grey (grey images are left as they are).")
    blur_probability: float = Field(0.5, ge=0, le=1, description="Chance of a Gaussian blur.")
    blur_max_sigma: float = Field(
        0.05, gt=0, le=0.5, description="Largest blur sigma as a share of the image side (drawn from 0.1 px up).")


class EmbedConfig(_Section):
    epochs: int = Field(20, ge=1, description="Training epochs over the pool.")
    batch_size: int = Field(
        256, ge=2, description="Images per optimisation step over all workers (each worker takes batch_size / "
        "num_workers; the other images of a worker's batch are the NT-Xent negatives).")
    image_size: int = Field(32, ge=8, description="Side in pixels the images are decoded to (and the encoder takes).")
    channels: Literal[1, 3] = Field(3, description="1 to train on grey images, 3 on RGB.")
    width: int = Field(16, ge=1, description="Channels of the encoder's first stage; the embedding has 4 x width.")
    projection_dim: int = Field(64, ge=1, description="Width of the projection head's output (used by the loss only).")
    learning_rate: float = Field(2e-3, gt=0, description="AdamW learning rate at the start of the cosine schedule.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    temperature: float = Field(0.2, gt=0, description="NT-Xent softmax temperature.")
    augment: AugmentConfig = Field(default_factory=lambda: AugmentConfig(), description="Augmentation strengths.")
    num_workers: int = Field(1, ge=1, description="Ray Train data-parallel workers (gloo on CPU, NCCL on GPU).")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per training worker (torch threads).")
    use_gpu: bool = Field(False, description="One GPU per training worker.")
    max_failures: int = Field(
        2, ge=-1, description="Worker failures Ray Train recovers from, each from the last checkpoint (-1: any).")
    seed: int = Field(0, description="Seed of the initial weights, the augmentations and the shuffles.")
    output: str | None = Field(
        None, description="Folder of the encoders (default OUTPUT/encoders): each lives in a folder named by the hash "
        "of its pool and training settings, with Ray Train's checkpoints and the final encoder.pt.")


class DetectionConfig(_Section):
    classes: list[str] | None = Field(
        None, description="Class names; a label id is the position of its name. Labels outside them are rejected. "
        "Absent: the detector's classes (its alray.json), or any id >= 0 for detections the pool holds.")
    samples: Literal["none", "mc_dropout", "hflip"] = Field(
        "none", description="Extra passes of the detector that give box_instability and class_disagreement: "
        "mc_dropout (score.mc_samples passes with the detector's dropout layers on), hflip (one pass on the "
        "mirrored image, its boxes mirrored back), or none (both scores null).")
    match_iou: float = Field(0.5, gt=0, le=1, description="IoU at which a box of a sample pass matches a box of "
                             "the reference pass (box_instability, class_disagreement).")
    frequency_penalty: float = Field(0.25, ge=0, le=1, description="object_frequency: weight of each object of a "
                                     "class after the first in its image (Lightly's default 0.25).")
    score_threshold: float = Field(0.05, ge=0, lt=1, description="A detector's objects scored below this are "
                                   "dropped (detections the pool holds are taken as they are).")
    max_objects: int = Field(100, ge=1, description="At most this many objects per image, the highest scored.")
    level: Literal["images", "objects"] = Field(
        "images", description="What the selection picks: images (the features table), or objects: every object is "
        "a sample (its crop's embedding and quality, its class scores) in the objects table; the picks go to "
        "object_ranking, and the ranking table ranks images by their best object. objects needs images to crop: "
        "an image pool and a detector model (or an encoder from the embed section with the pool's detections).")


class Config(_Section):
    task: Literal["classification", "detection"] = Field(
        "classification", description="classification: one label per sample (probs, MC-dropout scores); detection: "
        "objects per image, from a detector model (task detection in its alray.json) or the pool's `detections` "
        "column; the detection scores, object-class balance and object-level selection (README: Object detection).")
    detection: DetectionConfig = Field(default_factory=lambda: DetectionConfig(),
                                       description="Object detection settings (task: detection).")
    run: RunConfig = Field(default_factory=lambda: RunConfig(), description="Run identity and seed.")
    pool: PoolConfig
    labeled: LabeledConfig = Field(default_factory=lambda: LabeledConfig(), description="Labeled set.")
    model: ModelConfig | None = Field(
        None, description="The task model; absent for a pool that holds its own embeddings (and probs, logits or "
        "mc_probs): their scores are then computed from those columns.")
    score: ScoreConfig = Field(default_factory=lambda: ScoreConfig(), description="Scoring stage (Ray).")
    embed: EmbedConfig | None = Field(
        None, description="Self-supervised encoder training on the pool (alray embed, Ray Train); with no model "
        "section, the score stage trains (or reuses) it and scores with it.")
    selection: SelectionConfig
    output: OutputConfig
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(), description="alray train: a head on the "
                               "encoder, from the labeled set.")
    ray: RayConfig = Field(default_factory=lambda: RayConfig(), description="Ray connection.")
    spark: SparkConfig = Field(default_factory=lambda: SparkConfig(), description="Spark connection.")

    def labeled_storage_options(self) -> dict[str, str] | None:
        """Object-store options of the labeled table: its own, else the pool's."""
        return self.labeled.storage_options or self.pool.storage_options or None

    def public_dump(self, include: set[str] | None = None) -> dict[str, Any]:
        """The config as JSON data with credentials (secret keys, tokens, passwords in storage
        options and catalog properties) replaced by ``REDACTED``: what is printed, recorded and hashed."""
        return _redact(self.model_dump(mode="json", include=include))

    def to_json(self) -> str:
        """The config as canonical JSON (sorted keys), without credentials: what the runs table records."""
        return json.dumps(self.public_dump(), sort_keys=True, separators=(",", ":"))

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON without the run id, so reruns of one config share a hash."""
        data = self.public_dump()
        data["run"].pop("run_id", None)
        return _digest(data)

    def score_hash(self, *, pool_version: bool = True) -> str:
        """Hash of what the features depend on (pool, model, scoring, seed): equal hashes, same features.

        How the work is spread (actors, CPUs, GPUs, batch size: a sample's scores do not depend on its
        batch) and when a run gives up (``max_bad_fraction``) change no feature and stay out. Without
        ``pool_version``, two versions of one pool table hash alike: incremental scoring compares the
        rows of the two versions themselves."""
        data = self.public_dump(include={"pool", "model", "score"})
        for key in _SCORE_RESOURCES:
            data["score"].pop(key, None)
        if not pool_version:
            data["pool"].pop("version", None)
        data["seed"] = self.run.seed
        if self.task == "detection":  # kept out of classification runs so that their hashes stay as they were
            data["detection"] = self.public_dump(include={"detection"})["detection"]
        return _digest(data)


# Score keys that change how the work is spread, not the features (see Config.score_hash).
_SCORE_RESOURCES = ("num_actors", "cpus_per_actor", "gpus_per_actor", "cpus_per_decode_task", "batch_size",
                    "max_bad_fraction")


REDACTED = "REDACTED"
# Keys of storage options and catalog properties whose values are credentials.
_SECRET_KEY = re.compile(r"secret|password|token|credential|signature|private|sas|access[_-]?key$|account[_-]?key",
                         re.IGNORECASE)


def _redact(data: Any, parent: str = "") -> Any:
    if isinstance(data, dict):
        if parent in ("storage_options", "properties"):
            return {k: REDACTED if _SECRET_KEY.search(k) else v for k, v in data.items()}
        return {k: _redact(v, k) for k, v in data.items()}
    if isinstance(data, list):
        return [_redact(v, parent) for v in data]
    return data


def _digest(data: dict[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _format_location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


def _format_validation_error(error: ValidationError, source: str,
                             origins: Sequence[tuple[str, str]] = ()) -> str:
    """One line: each error under what set its key (``source``, or the flag in ``origins`` that set it)."""
    parts: dict[str, list[str]] = {}
    for item in error.errors():
        key = _format_location(item["loc"])
        if item["type"] == "extra_forbidden":
            text = f"{key}: unknown key"
        elif item["type"] == "missing":
            text = f"{key}: required key is missing"
        else:
            message = item["msg"].removeprefix("Value error, ")
            text = f"{key}: {message} (got {item.get('input')!r})"
        parts.setdefault(_origin(key, source, origins), []).append(text)
    return "; ".join(f"{where}: " + "; ".join(texts) for where, texts in parts.items())


def _origin(key: str, source: str, origins: Sequence[tuple[str, str]]) -> str:
    """What set ``key``: the last flag that set it or a section above it, else ``source`` (with the flags
    that set keys below it, when the error is a check of a whole section)."""
    below = []
    for set_key, label in reversed(origins):
        if key == set_key or key.startswith(set_key + "."):
            return label
        if set_key.startswith(key + ".") or key == "<root>":
            below.append(label)
    return f"{source} with {', '.join(reversed(below))}" if below else source


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``KEY=VALUE`` override in place; the value is parsed as YAML (``5``, ``true``, ``[a, b]``)."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE with a dotted key, e.g. selection.n_samples=50")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({exc.__class__.__name__})") from None
    parts = key.split(".")
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, where)]
        elif isinstance(node, dict):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            node = child
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"--set {key}: {where} is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key)] = value
    else:
        node[last] = value


def _list_index(node: list[Any], part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {where}: expected a list index below {len(node)}")
    return int(part)


def load_config(path: str | Path, overrides: Sequence[str | tuple[str, str]] = ()) -> Config:
    """Read a YAML config, apply ``KEY=VALUE`` overrides, validate.

    An override is ``KEY=VALUE`` (from ``--set``) or ``(KEY=VALUE, flag)`` for one set by another
    flag (``("run.run_id=x", "--run-id x")``). Raises ConfigError naming the dotted key at fault and
    where it was set: the file, or the flag.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    origins = []
    for override in overrides:
        assignment, flag = (override, None) if isinstance(override, str) else override
        apply_override(data, assignment)
        key = assignment.partition("=")[0].strip()
        origins.append((key, flag or f"--set {assignment}"))
    return config_from_dict(data, source=str(path), origins=origins)


def config_from_dict(data: dict[str, Any], *, source: str = "config",
                     origins: Sequence[tuple[str, str]] = ()) -> Config:
    """Validate a config mapping; ConfigError names the dotted key at fault and ``source``, or the
    flag of ``origins`` (dotted key, flag) that set it."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, origins)) from None
