"""Object-level selection of a detection run (``detection.level: objects``): the selection core on the
``objects`` table, on Spark or in this process, the ranking of the objects to ``object_ranking``
and the image ranking derived from it (:func:`alray.detection.objects.image_ranking`) to ``ranking``.

The labeled set and earlier selections name images: their objects are kept out of the
candidates and count as existing centres. The run's counts are in images (an image is a
candidate when one of its objects is, selected when one of its objects is; the images without
objects are filtered as ``no objects``); the objects' own counts go to the selection details.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from alray.config import LabeledConfig, SelectionConfig, SparkConfig
from alray.detection.objects import NO_OBJECTS_REASON, image_ranking
from alray.errors import InputError
from alray.lake import Lake
from alray.progress import Progress
from alray.selection.result import LABELED_REASON, SelectResult
from alray.stages.select_local import LOCAL_MAX_ROWS, choose_engine, excluded_ids
from alray.tables import OBJECT_RANKING_SCHEMA, OBJECTS_SCHEMA

# The filtered-out reason of an image whose objects the filters all removed.
OBJECTS_FILTERED_REASON = "objects filtered"


def _object_exclusions(excluded: pa.Table | None, objects: pa.Table) -> pa.Table | None:
    """The objects of excluded images, with their image's reason (``id``, ``_excluded``)."""
    if excluded is None:
        return None
    reason = dict(zip(excluded.column("id").to_pylist(), excluded.column("_excluded").to_pylist(), strict=True))
    ids, marks = [], []
    for identifier, image in zip(objects.column("id").to_pylist(), objects.column("image_id").to_pylist(),
                                 strict=True):
        if image in reason:
            ids.append(identifier)
            marks.append(reason[image])
    return pa.table({"id": pa.array(ids, pa.string()), "_excluded": pa.array(marks, pa.string())}) if ids else None


def _image_counts(result: SelectResult, features: pa.Table, ranking: pa.Table, excluded: pa.Table | None) -> None:
    """Turn ``result``'s object counts into image counts (the objects' go to ``details``): every scored image
    is a candidate (it has a candidate object), or filtered as labeled or selected before, as having no
    objects, or as having had all its objects filtered."""
    candidates = set(ranking.column("id").to_pylist())
    marks = {} if excluded is None else dict(zip(excluded.column("id").to_pylist(),
                                                 excluded.column("_excluded").to_pylist(), strict=True))
    reasons: dict[str, int] = {}
    for image, n_objects in zip(features.column("id").to_pylist(), features.column("n_objects").to_pylist(),
                                strict=True):
        if image in candidates:
            continue
        reason = marks.get(image) or (NO_OBJECTS_REASON if not n_objects else OBJECTS_FILTERED_REASON)
        reasons[reason] = reasons.get(reason, 0) + 1
    result.details = {**result.details, "objects": float(result.n_features),
                      "object_candidates": float(result.n_candidates), "objects_selected": float(result.n_selected)}
    result.n_features, result.n_candidates = features.num_rows, len(candidates)
    result.n_selected = int(pc.sum(ranking.column("selected")).as_py() or 0) if ranking.num_rows else 0
    result.n_filtered = sum(reasons.values())
    result.filtered_by_reason = reasons
    result.n_labeled_in_pool = reasons.get(LABELED_REASON, 0)


def run_select_objects(selection_config: SelectionConfig, labeled: LabeledConfig, spark_config: SparkConfig, *,
                       seed: int, run_id: str, lake: Lake, progress: Progress, run_time: dt.datetime | None = None,
                       labeled_storage_options: dict[str, str] | None = None, source: str = "objects") -> SelectResult:
    """Select objects of this run and replace its ``object_ranking`` and (images) ``ranking`` rows; the
    arguments are :func:`alray.stages.select.run_select`'s."""
    selection = selection_config
    run_time = run_time or dt.datetime.now(dt.timezone.utc)
    features = lake.read_run("features", run_id, columns=["id", "n_objects"])
    images_excluded = excluded_ids(labeled, labeled_storage_options, lake, run_id, now=run_time)
    # an empty table when the run wrote none, or when no run of this lake ever scored objects
    objects = lake.read_run("objects", run_id, columns=["id", "image_id"])
    if objects.num_rows == 0:
        detected = int(pc.sum(features.column("n_objects")).as_py() or 0) if features.num_rows else 0
        if detected:  # scored at the image level: the objects were never written
            raise InputError(f"objects table {lake.table('objects')}: no objects for run {run_id}, whose images hold "
                             f"{detected} detected objects; score it with detection.level objects")
        progress.say(f"select: no objects detected in the {features.num_rows} scored images (detections below "
                     "detection.score_threshold are dropped); nothing to select")
        return _without_objects(selection, run_id, lake, run_time, features, images_excluded)
    excluded = _object_exclusions(images_excluded, objects)
    engine, rows = choose_engine(selection, lake, run_id, table="objects")
    if rows is not None:
        progress.say(f"select: engine auto: {engine} ({rows:,} objects; local below {LOCAL_MAX_ROWS:,})")
    if engine == "local":
        result, images = _select_local(selection, seed, run_id, lake, run_time, excluded, objects)
    else:
        result, images = _select_spark(selection, spark_config, seed, run_id, lake, run_time, excluded, progress,
                                       source)
    _image_counts(result, features, images, images_excluded)
    progress.say(f"select: {int(result.details['objects_selected'])} of {int(result.details['object_candidates'])} "
                 f"candidate objects on {result.n_selected} of {result.n_candidates} candidate images")
    return result


def _without_objects(selection: SelectionConfig, run_id: str, lake: Lake, run_time: dt.datetime, features: pa.Table,
                     images_excluded: pa.Table | None) -> SelectResult:
    """A run whose images hold no object: empty object and image rankings; every image filtered (no objects,
    or labeled or selected before)."""
    from alray.selection.local import ranking_table
    from alray.selection.plan import strategy_label

    label = strategy_label(selection)
    lake.replace_run("object_ranking", OBJECT_RANKING_SCHEMA.empty_table(), run_id)
    images = ranking_table(image_ranking(OBJECT_RANKING_SCHEMA.empty_table()), run_id, label, run_time)
    lake.replace_run("ranking", images, run_id)
    result = SelectResult(n_features=0, n_candidates=0, n_selected=0, n_filtered=0, strategy=label,
                          stop_reason="no objects")
    _image_counts(result, features, images, images_excluded)
    return result


def object_columns(selection: SelectionConfig) -> list[str]:
    """The objects table's columns the selection reads (:func:`~alray.selection.plan.needed_columns`): the
    probabilities, boxes and crop metrics it does not name stay unread."""
    from alray.selection.plan import needed_columns, plan_selection

    names = [f.name for f in OBJECTS_SCHEMA if f.name not in ("run_id", "image_id")]
    return needed_columns(plan_selection(selection, names), names)


def _select_local(selection: SelectionConfig, seed: int, run_id: str, lake: Lake, run_time: dt.datetime,
                  excluded: pa.Table | None, objects: pa.Table) -> tuple[SelectResult, pa.Table]:
    from alray.selection.local import ranking_table, select_table

    table = lake.read_run("objects", run_id, columns=object_columns(selection))
    marks = None if excluded is None else dict(zip(excluded.column("id").to_pylist(),
                                                   excluded.column("_excluded").to_pylist(), strict=True))
    ranking, result = select_table(table, selection, seed=seed, excluded=marks, run_id=run_id, run_time=run_time)
    image_of = dict(zip(objects.column("id").to_pylist(), objects.column("image_id").to_pylist(), strict=True))
    with_images = ranking.add_column(2, "image_id", pa.array([image_of[i] for i in ranking.column("id").to_pylist()],
                                                             pa.string()))
    lake.replace_run("object_ranking", with_images.cast(OBJECT_RANKING_SCHEMA), run_id)
    images = ranking_table(image_ranking(with_images), run_id, result.strategy, run_time)
    lake.replace_run("ranking", images, run_id)
    return result, images


def _select_spark(selection: SelectionConfig, spark_config: SparkConfig, seed: int, run_id: str, lake: Lake,
                  run_time: dt.datetime, excluded: pa.Table | None, progress: Progress,
                  source: str) -> tuple[SelectResult, pa.Table]:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from alray.engines import spark_session
    from alray.stages.select import _read_features, _write_ranking, global_rank, select_dataframe

    spark = spark_session(spark_config)
    frame = _read_features(spark, lake, run_id, lambda names: [
        n for n in names if n in {*object_columns(selection), "image_id"}], table="objects")
    with select_dataframe(frame, selection, seed=seed, excluded=excluded, run_time=run_time, progress=progress,
                          source=source) as chosen:
        ranked = chosen.ranking.join(frame.select("id", "image_id"), "id").cache()
        try:
            _write_ranking(ranked, run_id, lake, chosen.result.strategy, run_time, progress, table="object_ranking",
                           table_schema=OBJECT_RANKING_SCHEMA)
            # each image takes its best-ranked object's row; selected when any of its objects is
            per_image = Window.partitionBy("image_id")
            best = (ranked.withColumn("_first", F.row_number().over(per_image.orderBy("rank")))
                    .withColumn("_any", F.max(F.col("selected").cast("int")).over(per_image))
                    .filter(F.col("_first") == 1)
                    .select(F.col("image_id").alias("id"), F.col("rank").alias("_object_rank"),
                            (F.col("_any") == 1).alias("selected"), "score", "weight", "diversity", "parts"))
            with global_rank(best, [F.asc("_object_rank")]) as numbered:
                images = numbered.drop("_object_rank")
                _write_ranking(images, run_id, lake, chosen.result.strategy, run_time, progress)
                counted = images.select("id", "selected").toArrow()
        finally:
            ranked.unpersist()
        return chosen.result, counted
