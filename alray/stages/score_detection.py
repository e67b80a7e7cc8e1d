"""The score stage's detection side: which detector or encoder a detection run loads, the checks of its
pool and selection before any engine starts, and the batch function a scoring actor calls.

A detection run (``task: detection``) takes its objects from a detector model, or, without one,
from the pool's ``detections`` column: with precomputed ``embedding``, ``width`` and ``height``
(no model at all), or with an image payload and an encoder (``model`` or ``embed``) that embeds
the images and the crops.
"""

from __future__ import annotations

import pyarrow as pa

from alray.config import DetectionConfig, ModelConfig, PoolConfig, SelectionConfig
from alray.detection.boxes import detections_type_problem
from alray.detection.columns import DetectionOptions
from alray.detection.precomputed import DETECTION_INPUT_COLUMNS, score_precomputed_detections
from alray.detection.scorer import SIZE_COLUMNS, score_detection_decoded
from alray.detection.scores import CLASS_SCORE_COLUMNS, CLASS_SCORES
from alray.errors import ConfigError, InputError
from alray.inference import PAYLOAD_INPUT_KIND, InputSpec, ScoringOptions
from alray.models import TaskModel, load_model
from alray.models.detector import DetectorModel, detector_metadata, load_detector
from alray.selection.plan import keyed_inputs
from alray.stages.pool_source import PoolSource, check_metadata_names, open_checked_pool
from alray.strategies.base import PREDICTIONS
from alray.tables import DETECTION_SCORES, MC_SCORES

# The object columns an object-level selection may read besides the crops' metrics.
_OBJECT_SCORES = ("entropy", "margin", "least_confidence", "box_instability", "class_disagreement")


def load_detection_model(model: ModelConfig) -> DetectorModel | TaskModel:
    """A detection run's model on the CPU in eval mode: a detector (a TorchScript file whose alray.json says
    task: detection, or a torchvision architecture), else the encoder the checkpoint holds."""
    if model.architecture is not None or detector_metadata(model.checkpoint) is not None:
        return load_detector(model.checkpoint, architecture=model.architecture, image_size=model.image_size)
    return load_model(model.checkpoint, image_size=model.image_size, dropout=model.dropout, model_format=model.format,
                      max_tokens=model.max_tokens)


def prepare_detection(pool: PoolConfig, model_config: ModelConfig | None, detection: DetectionConfig, *,
                      staging: str | None, selection: SelectionConfig | None,
                      ) -> tuple[PoolSource, str, InputSpec | None, DetectionOptions]:
    """Check a detection run's pool, model and selection; return the pool, its payload, what the model takes
    (None without one) and the options.

    Raises InputError naming the pool or checkpoint, ConfigError naming the key, before any engine starts.
    """
    source = open_checked_pool(pool, staging=staging, precomputed=model_config is None)
    names = set(source.schema.names)
    model = load_detection_model(model_config) if model_config is not None else None
    checkpoint = model_config.checkpoint if model_config is not None else None
    detector = model if isinstance(model, DetectorModel) else None
    if model is None:
        missing = [c for c in DETECTION_INPUT_COLUMNS if c not in names]
        if missing:
            raise InputError(f"pool {pool.path}: task detection without a model needs the columns "
                             f"{list(DETECTION_INPUT_COLUMNS)}; missing {missing} (alray import-predictions writes "
                             "detections, width and height)")
        for name in SIZE_COLUMNS:
            kind = source.schema.field(name).type
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                raise InputError(f"pool {pool.path}: column {name} is {kind}, expected the image size in pixels "
                                 "(a number)")
        inputs = {"id", *DETECTION_INPUT_COLUMNS}
    else:
        if PAYLOAD_INPUT_KIND.get(source.payload) != "image" or model.input_kind != "image":
            raise InputError(f"pool {pool.path}: task detection scores images; the pool has {source.payload} "
                             f"payloads and model.checkpoint {checkpoint} takes {model.input_kind}")
        if detector is None and "detections" not in names:
            raise InputError(f"pool {pool.path}: model.checkpoint {checkpoint} is no detector, so the "
                             "objects must come from the pool: it needs a detections column (alray import-predictions)")
        # the pool's image size (alray import-predictions writes it) is checked against the decoded image's,
        # which the features hold
        inputs = {"id", source.payload, "detections", *SIZE_COLUMNS}
    if "detections" in names and detector is None:  # the objects come from the pool's column
        problem = detections_type_problem(source.schema.field("detections").type,
                                          class_names=detection.classes is not None)
        if problem is not None:
            raise InputError(f"pool {pool.path}: column detections: {problem}")
    check_metadata_names(source, inputs)
    if detection.classes is not None:
        known: frozenset[int] | None = frozenset(range(len(detection.classes)))
        if detector is not None and len(detection.classes) != detector.n_classes:
            raise ConfigError(f"detection.classes: {len(detection.classes)} names, the detector has "
                              f"{detector.n_classes} classes")
    elif detector is not None:
        known = frozenset(range(detector.n_classes))
    else:
        known = None
    if detection.samples != "none" and detector is None:
        raise ConfigError(f"detection.samples: {detection.samples} needs a detector model (model.checkpoint)")
    if detection.samples == "mc_dropout" and detector is not None and not detector.has_dropout:
        raise ConfigError(f"detection.samples: mc_dropout, but model.checkpoint {checkpoint} "
                          "has no dropout layer; use hflip")
    if detection.level == "objects" and model is None:
        raise ConfigError("detection.level: objects needs images to crop: an image pool and a detector (or an "
                          "encoder with the pool's detections), not precomputed embeddings")
    _check_selection(selection, detection,
                     without_probs=checkpoint if detector is not None and not detector.gives_probs else None)
    options = DetectionOptions(known_labels=known, n_classes=len(known) if known is not None else None,
                               class_names=tuple(detection.classes) if detection.classes is not None else None,
                               frequency_penalty=detection.frequency_penalty, match_iou=detection.match_iou,
                               samples=detection.samples, max_objects=detection.max_objects,
                               score_threshold=detection.score_threshold, objects=detection.level == "objects")
    spec = InputSpec.of(model) if model is not None else None  # type: ignore[arg-type]
    return source, source.payload, spec, options


def _check_selection(selection: SelectionConfig | None, detection: DetectionConfig,
                     without_probs: object | None = None) -> None:
    """Refuse a selection that reads what a detection run does not give; name the key that asks.
    ``without_probs``: the checkpoint of a detector that gives no class probabilities, whose class
    uncertainty scores would be null for every image (or object)."""
    if selection is None:
        return
    if detection.level == "objects":
        unavailable = {*MC_SCORES, "pred_loss", *DETECTION_SCORES} - set(_OBJECT_SCORES)
        class_scores = set(CLASS_SCORES)
        where = "an object-level selection (detection.level objects) reads the objects table"
    else:
        unavailable = {*MC_SCORES, "pred_loss", PREDICTIONS}
        class_scores = set(CLASS_SCORE_COLUMNS)
        where = "a detection run gives the detection scores (README: Object detection)"
    if detection.samples == "none":
        unavailable |= {"box_instability", "class_disagreement"}
    for key, column in keyed_inputs(selection):
        if column in unavailable:
            if column in ("box_instability", "class_disagreement"):
                raise ConfigError(f"{key}: {column!r} needs detection.samples mc_dropout or hflip")
            raise ConfigError(f"{key}: {column!r} is not a column here; {where}")
        if without_probs is not None and column in class_scores:
            raise ConfigError(f"{key}: {column!r} needs class probabilities, and model.checkpoint {without_probs} "
                              "gives none (no probs output); objectness_least_confidence scores its confidence")


def score_detections(model: DetectorModel | TaskModel | None, batch: pa.Table, options: ScoringOptions,
                     detection: DetectionOptions) -> pa.Table:
    """One batch of a detection run's pool (as Ray tasks decoded it, or as it is without a model) to features
    rows (and object rows), whichever the model is."""
    if model is None:
        return score_precomputed_detections(batch, run_id=options.run_id, embedding_dim=options.embedding_dim,
                                            options=detection)
    if isinstance(model, DetectorModel):
        return score_detection_decoded(batch, options, detection, detector=model)
    return score_detection_decoded(batch, options, detection, encoder=model)

