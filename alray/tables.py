"""The table contracts: the score columns and the schemas of the features, ranking, rejects, runs,
round_items and labels tables.

The scorer, the quality metrics, the selection stage, the report and the Python API take their
columns from here; the config's description of a strategy input lists :data:`UNCERTAINTY_SCORES`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class ScoreColumn:
    """One per-sample score of the features table.

    ``family`` is ``uncertainty`` (higher: the model is less sure; a ``weights`` input) or
    ``quality`` (image metrics, for filters); ``source`` says what computes it: ``mc`` from the
    MC-dropout probabilities (:func:`alray.scoring.all_scores`), ``loss_head`` from a loss
    prediction head, ``image`` from the decoded pixels (:mod:`alray.quality`).
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
#: Image metrics from the decoded pixels (quality metrics then the encoded size).
IMAGE_COLUMNS = tuple(s.name for s in SCORES if s.source == "image")
#: Every score column, in the features table's order.
SCORE_COLUMNS = tuple(s.name for s in SCORES)
#: The scores whose histograms the report draws, in this order.
DRAWN_SCORES = tuple(s.name for s in SCORES if s.drawn)

REJECT_REASON = "_reject_reason"
_FLOATS = pa.list_(pa.float32())


def features_schema(metadata: pa.Schema) -> pa.Schema:
    """Schema of a scored batch: the features table's columns, the pool metadata, a reject reason.

    ``embedding`` (D floats), ``probs`` (C floats, mean over the MC passes), ``pred`` (argmax of
    ``probs``), every score of :data:`SCORES`, ``channel_mean`` / ``channel_std`` (R, G, B of
    0..255 pixels); the pool's metadata columns follow. Rejected rows hold nulls and a reason.
    """
    fields = [
        pa.field("run_id", pa.string()), pa.field("id", pa.string()),
        pa.field("embedding", _FLOATS), pa.field("probs", _FLOATS), pa.field("pred", pa.int32()),
        *[pa.field(name, pa.float64()) for name in MC_SCORES],
        pa.field("pred_loss", pa.float64()),
        *[pa.field(name, pa.float64()) for name in IMAGE_COLUMNS],
        pa.field("channel_mean", _FLOATS), pa.field("channel_std", _FLOATS),
    ]
    return pa.schema([*fields, *metadata, pa.field(REJECT_REASON, pa.string())])


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
