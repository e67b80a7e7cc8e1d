"""The table contracts: the score columns and the schemas of the features, ranking, rejects, runs,
pool_rows, round_items and labels tables, and of a detection run's objects and object ranking.

The scorer, the quality metrics, the selection stage, the report and the Python API take their
columns from here; the config's description of a strategy input lists :data:`UNCERTAINTY_SCORES`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class ScoreColumn:
    """One per-sample score of the features table.

    ``family`` is ``uncertainty`` (higher: the model is less sure; a ``weights`` input) or
    ``quality`` (image metrics, for filters) or ``detection`` (counts of a detection run's objects);
    ``source`` says what computes it: ``mc`` from the MC-dropout probabilities
    (:func:`alray.scoring.all_scores`), ``loss_head`` from a loss prediction head, ``image`` from
    the decoded pixels (:mod:`alray.quality`), ``detections`` from an image's detections
    (:mod:`alray.detection.scores`; null in classification runs).
    """

    name: str
    family: str
    source: str
    description: str
    drawn: bool = True  # the report draws its histogram


SCORES: tuple[ScoreColumn, ...] = (
    ScoreColumn("entropy", "uncertainty", "mc", "Entropy of the mean class probabilities (nats)."),
    ScoreColumn("margin", "uncertainty", "mc", "1 - (top-1 - top-2) of the mean probabilities."),
    ScoreColumn("least_confidence", "uncertainty", "mc", "1 - the top mean probability."),
    ScoreColumn("variation_ratio", "uncertainty", "mc", "Share of the T passes that disagree with the modal class."),
    ScoreColumn("bald", "uncertainty", "mc", "Mutual information of prediction and weights (BALD)."),
    ScoreColumn("mean_std", "uncertainty", "mc", "Mean over classes of the std of the T probabilities."),
    ScoreColumn("pred_loss", "uncertainty", "loss_head", "Loss predicted by a loss head; null without one."),
    ScoreColumn("n_objects", "detection", "detections", "Objects detected in the image."),
    ScoreColumn("object_frequency", "detection", "detections",
                "Objects, each class's first counting 1 and every further one 0.25 (Lightly's object frequency)."),
    ScoreColumn("objectness_least_confidence", "uncertainty", "detections",
                "1 - the mean detection score (0 without objects)."),
    *(ScoreColumn(f"object_{name}_{how}", "uncertainty", "detections",
                  f"{how.capitalize()} over the objects of their class {text} (null without class probabilities).")
      for name, text in (("entropy", "entropy"), ("margin", "margin"), ("least_confidence", "least confidence"))
      for how in ("max", "mean")),
    ScoreColumn("box_instability", "uncertainty", "detections",
                "1 - the mean IoU of each object's matched boxes across MC / flipped passes (null without them)."),
    ScoreColumn("class_disagreement", "uncertainty", "detections",
                "Share of MC / flipped passes whose matched box is missing or of another class (null without them)."),
    ScoreColumn("sharpness", "quality", "image", "Variance of the Laplacian of the grayscale image."),
    ScoreColumn("luminance", "quality", "image", "Mean BT.709 luma, 0..1."),
    ScoreColumn("contrast", "quality", "image", "Std of the luma, 0..1."),
    ScoreColumn("snr", "quality", "image", "Mean over std of the luma (0 for a flat image).", drawn=False),
    ScoreColumn("uniform_row_ratio", "quality", "image", "Share of pixel rows of one value.", drawn=False),
    ScoreColumn("width", "quality", "image", "Decoded width in pixels.", drawn=False),
    ScoreColumn("height", "quality", "image", "Decoded height in pixels.", drawn=False),
    ScoreColumn("size_in_bytes", "quality", "image", "Encoded size of the image.", drawn=False),
)

#: Scores computed from the MC-dropout probabilities, in the features table's column order.
MC_SCORES = tuple(s.name for s in SCORES if s.source == "mc")
#: Every uncertainty score a ``weights`` strategy may take.
UNCERTAINTY_SCORES = tuple(s.name for s in SCORES if s.family == "uncertainty")
#: Scores of an image's detections (null in classification runs), in the features table's order.
DETECTION_SCORES = tuple(s.name for s in SCORES if s.source == "detections")
#: Image metrics from the decoded pixels (quality metrics then the encoded size).
IMAGE_COLUMNS = tuple(s.name for s in SCORES if s.source == "image")
#: Every score column, in the features table's order.
SCORE_COLUMNS = tuple(s.name for s in SCORES)
#: The scores whose histograms the report draws, in this order.
DRAWN_SCORES = tuple(s.name for s in SCORES if s.drawn)

REJECT_REASON = "_reject_reason"
_FLOATS = pa.list_(pa.float32())
#: The Arrow type of a ``detections`` column: per image a list of objects, the box in pixels, the
#: class id, the detector's score and the class probabilities (:mod:`alray.detection.boxes`).
DETECTIONS_TYPE = pa.list_(pa.struct([
    *(pa.field(name, pa.float32()) for name in ("x0", "y0", "x1", "y1")),
    pa.field("label", pa.int32()), pa.field("score", pa.float32()), pa.field("probs", _FLOATS),
]))
#: Objects per class id of an image.
CLASS_COUNTS_TYPE = pa.map_(pa.int32(), pa.int64())


def features_schema(metadata: pa.Schema) -> pa.Schema:
    """Schema of a scored batch: the features table's columns, the pool metadata, a reject reason.

    ``embedding`` (D floats), ``probs`` (C floats, mean over the MC passes), ``pred`` (argmax of
    ``probs``), every score of :data:`SCORES`, ``channel_mean`` / ``channel_std`` (R, G, B of
    0..255 pixels); in detection runs (null otherwise) the :data:`DETECTION_SCORES`,
    ``object_class_counts`` (objects per class id), ``object_classes`` (the same as a string,
    e.g. ``0:2,3:1``: the key object-class balance groups by) and ``detections`` (the image's
    objects, boxes in its pixels); the pool's metadata columns follow. Rejected rows hold nulls
    and a reason.
    """
    fields = [
        pa.field("run_id", pa.string()), pa.field("id", pa.string()),
        pa.field("embedding", _FLOATS), pa.field("probs", _FLOATS), pa.field("pred", pa.int32()),
        *[pa.field(name, pa.float64()) for name in MC_SCORES],
        pa.field("pred_loss", pa.float64()),
        *[pa.field(name, pa.int64() if name == "n_objects" else pa.float64()) for name in DETECTION_SCORES],
        *[pa.field(name, pa.float64()) for name in IMAGE_COLUMNS],
        pa.field("channel_mean", _FLOATS), pa.field("channel_std", _FLOATS),
        pa.field("object_class_counts", CLASS_COUNTS_TYPE), pa.field("object_classes", pa.string()),
        pa.field("detections", DETECTIONS_TYPE),
    ]
    return pa.schema([*fields, *metadata, pa.field(REJECT_REASON, pa.string())])


def features_rows(batch: pa.Table, consumed: Sequence[str], columns: Mapping[str, pa.Array], *, run_id: str,
                  reasons: Sequence[str | None]) -> pa.Table:
    """A batch's features rows: ``columns`` (computed scores), nulls for every column not given, the run id,
    the ids, the pool's metadata (its columns but ``id`` and ``consumed``) and the reject reasons."""
    n = batch.num_rows
    metadata = batch.drop_columns([c for c in ("id", *consumed) if c in batch.column_names])
    schema = features_schema(metadata.schema)
    given = {**columns, "run_id": pa.array([run_id] * n, pa.string()),
             "id": pa.array([str(i) for i in batch.column("id").to_pylist()], pa.string()),
             REJECT_REASON: pa.array(list(reasons), pa.string()),
             **{name: metadata.column(name).combine_chunks() for name in metadata.column_names}}
    return pa.Table.from_arrays([given[f.name].cast(f.type) if f.name in given else pa.nulls(n, f.type)
                                 for f in schema], schema=schema)


#: Columns the scorer writes; pool metadata columns may not take these names.
RESERVED_COLUMNS = frozenset(features_schema(pa.schema([])).names)

RANKING_SCHEMA = pa.schema([
    pa.field("run_id", pa.string()), pa.field("id", pa.string()), pa.field("rank", pa.int64()),
    pa.field("selected", pa.bool_()), pa.field("score", pa.float64()), pa.field("weight", pa.float64()),
    pa.field("diversity", pa.float64()), pa.field("parts", pa.map_(pa.string(), pa.float64())),
    pa.field("strategy", pa.string()), pa.field("created_at", pa.timestamp("us", tz="UTC")),
])

#: What each ranking column means; the README's table section says the same.
RANKING_COLUMNS: dict[str, str] = {
    "run_id": "The run that ranked the candidates.",
    "id": "The candidate's pool id.",
    "rank": "1 to N: the picks in the order they were made, then the other candidates by score.",
    "selected": "True for the picks (rank <= number selected).",
    "score": "What the selection maximised, non-increasing with rank. With diversity: the greedy weight x "
             "`diversity` at the pick; the first pick of a run with no labeled centre takes the largest "
             "distance from it to any candidate. Without diversity: `weight`. The other candidates score the "
             "same product against the final picks, at most the last pick's score (a quota or a minimum "
             "distance may have kept a row with a higher product out).",
    "weight": "The product of the objectives, each raised to its strength (1 when there is none). With a "
              "sampler (power, softmax, softrank): the Gumbel-top-k key, log(sampling probability x that product) "
              "plus the candidate's Gumbel noise.",
    "diversity": "With diversity: the pick's distance to the nearest centre chosen before it (labeled samples "
                 "count; the first pick without one: its reach). Otherwise, and for the other candidates: the "
                 "distance to the nearest pick or labeled sample (0 for a pick). Null when there is no centre.",
    "parts": "Each objective's value, by its label (e.g. weights:bald).",
    "strategy": "The strategy label of the run, e.g. diversity^1+weights:bald^1.",
    "created_at": "The run's time.",
}

#: A detection run's objects, one row per detected object: a features table of crops, so the
#: selection reads it as it reads the features (``pred`` is the object's class, ``probs`` its
#: class probabilities, ``entropy`` / ``margin`` / ``least_confidence`` their scores).
OBJECTS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string()), pa.field("id", pa.string()), pa.field("image_id", pa.string()),
    pa.field("object_index", pa.int32()),
    *(pa.field(name, pa.float32()) for name in ("x0", "y0", "x1", "y1")),
    pa.field("pred", pa.int32()), pa.field("confidence", pa.float32()), pa.field("probs", _FLOATS),
    pa.field("entropy", pa.float64()), pa.field("margin", pa.float64()), pa.field("least_confidence", pa.float64()),
    pa.field("box_instability", pa.float64()), pa.field("class_disagreement", pa.float64()),
    pa.field("embedding", _FLOATS),
    pa.field("sharpness", pa.float64()), pa.field("luminance", pa.float64()), pa.field("contrast", pa.float64()),
    pa.field("box_width", pa.float64()), pa.field("box_height", pa.float64()), pa.field("area_fraction", pa.float64()),
])

#: What each objects column means.
OBJECTS_COLUMNS: dict[str, str] = {
    "id": "The object's id: its image's id, '#', its index among the image's objects.",
    "image_id": "The pool id of the object's image.",
    "object_index": "Position of the object in its image's detections (by descending score).",
    "x0": "The box, in pixels of the image (x0, y0, x1, y1).",
    "pred": "The object's class id.",
    "confidence": "The detector's score of the object.",
    "probs": "The object's class probabilities (null without them).",
    "entropy": "Entropy of the object's class probabilities (nats).",
    "margin": "1 - (top-1 - top-2) of the object's class probabilities.",
    "least_confidence": "1 - the object's top class probability.",
    "box_instability": "1 - the mean IoU of the object's matched boxes across MC / flipped passes.",
    "class_disagreement": "Share of MC / flipped passes whose matched box is missing or of another class.",
    "embedding": "The crop's embedding: the detector's object features, or an encoder on the crop.",
    "sharpness": "Variance of the Laplacian of the grey crop (of the model's input).",
    "luminance": "Mean luma of the crop, 0..1.",
    "contrast": "Std of the luma of the crop, 0..1.",
    "box_width": "Width of the box in pixels of the image.",
    "box_height": "Height of the box in pixels of the image.",
    "area_fraction": "Share of the image's area the box covers.",
}

#: The ranking of a run's objects: the ranking's columns and the object's image.
OBJECT_RANKING_SCHEMA = pa.schema([*list(RANKING_SCHEMA)[:2], pa.field("image_id", pa.string()),
                                   *list(RANKING_SCHEMA)[2:]])

REJECTS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string()), pa.field("id", pa.string()),
    pa.field("stage", pa.string()), pa.field("reason", pa.string()),
])

RUNS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string()), pa.field("status", pa.string()),
    pa.field("started_at", pa.timestamp("us", tz="UTC")), pa.field("finished_at", pa.timestamp("us", tz="UTC")),
    pa.field("config", pa.string()), pa.field("config_hash", pa.string()),
    pa.field("n_pool", pa.int64()), pa.field("n_rejected", pa.int64()), pa.field("n_filtered", pa.int64()),
    pa.field("n_candidates", pa.int64()), pa.field("n_selected", pa.int64()),
    pa.field("filtered_by_reason", pa.string()), pa.field("coverage_radius", pa.float64()),
    pa.field("timings", pa.string()), pa.field("versions", pa.string()), pa.field("error", pa.string()),
    pa.field("stages_completed", pa.string()),
    pa.field("strategy", pa.string()), pa.field("strategy_reason", pa.string()),
    pa.field("selection_details", pa.string()),
    # Incremental scoring: rows this run's scoring ran through the model, rows whose features (or
    # reject) it carried over from run `reused_from`, and the key two runs must share for that.
    pa.field("n_scored", pa.int64()), pa.field("n_reused", pa.int64()), pa.field("reused_from", pa.string()),
    pa.field("score_key", pa.string()),
])

#: Every pool row a run scored or carried over, partitioned by run_id: its id, a hash of its content
#: (:func:`alray.row_hashes.row_hashes`) and ``source``, a key of the pool file it was read from (its
#: path and version). One parquet file per pool file, so a later run finds an unchanged file's rows
#: by the key alone. What the next incremental run compares the pool against.
POOL_ROWS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string()), pa.field("source", pa.string()), pa.field("id", pa.string()),
    pa.field("row_hash", pa.binary()),
])


def without_run_id(schema: pa.Schema, keep_run_id: bool) -> pa.Schema:
    """``schema`` as a table format stores it: Delta keeps ``run_id`` in the partition path, not the files."""
    return schema if keep_run_id else pa.schema([f for f in schema if f.name != "run_id"])

#: The states of a selected id, in the order a round moves it: ``selected`` by a run, ``sent`` to a
#: labeling tool, then ``labeled`` (its label imported) or ``expired`` (not labeled in time).
ROUND_STATES = ("selected", "sent", "labeled", "expired")

#: One row per id a round (a run) selected, partitioned by that run's id: where the id stands.
ROUND_ITEMS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string()), pa.field("id", pa.string()), pa.field("rank", pa.int64()),
    pa.field("state", pa.string()),
    pa.field("selected_at", pa.timestamp("us", tz="UTC")), pa.field("sent_at", pa.timestamp("us", tz="UTC")),
    pa.field("labeled_at", pa.timestamp("us", tz="UTC")), pa.field("expired_at", pa.timestamp("us", tz="UTC")),
    pa.field("destination", pa.string()), pa.field("label", pa.string()),
])

#: Imported labels, partitioned by ``run_id``, the import that wrote them (``import-<digest of its rows>``):
#: an import is one commit, and the same rows imported again are the same partition, never a second copy.
LABELS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string()), pa.field("id", pa.string()), pa.field("label", pa.string()),
    pa.field("source", pa.string()), pa.field("round", pa.string()),
    pa.field("labeled_at", pa.timestamp("us", tz="UTC")), pa.field("imported_at", pa.timestamp("us", tz="UTC")),
])
