"""Object-level (crop) selection through a real run: Ray scores the crops, the selection core picks objects
on the local engine and on Spark, object_ranking and the derived image ranking are written."""

from __future__ import annotations

import collections

import numpy as np
import pyarrow.compute as pc
import pytest

from alray.config import config_from_dict
from alray.lake import Lake
from alray.pipeline import run_pipeline
from alray.progress import Progress


def _config(files, lake, **selection):
    return config_from_dict({
        "task": "detection", "detection": {"classes": ["circle", "square", "triangle"], "level": "objects",
                                           "score_threshold": 0.1, "samples": "hflip"},
        "run": {"seed": 0}, "pool": {"path": files.pool}, "labeled": {"path": files.labeled},
        "model": {"checkpoint": files.checkpoint}, "score": {"batch_size": 32, "max_bad_fraction": 0.1},
        "selection": {"n_samples": 18, "n_partitions": 2, **selection}, "output": {"path": str(lake)},
    })


@pytest.fixture(scope="module")
def object_runs(ray_session, spark, detection_files, tmp_path_factory):
    """One scoring, then three selections of it: local, Spark, local with a balance on the classes; each
    one's summary, object ranking and image ranking."""
    lake_path = tmp_path_factory.mktemp("objects-lake")
    lake = Lake(str(lake_path))
    strategies = [{"input": "embeddings", "strategy": "diversity"}, {"input": "entropy", "strategy": "weights"}]
    runs = {}
    for name, engine, extra, stages in (
            ("local", "local", [], ("score", "select")), ("spark", "spark", [], ("select",)),
            ("balanced", "local", [{"input": "predictions", "strategy": "balance", "target": "uniform"}],
             ("select",))):
        config = _config(detection_files, lake_path, strategies=[*strategies, *extra], engine=engine)
        config = config.model_copy(update={"run": config.run.model_copy(update={"run_id": "objects"})})
        summary = run_pipeline(config, progress=Progress(quiet=True), stages=stages)
        runs[name] = (summary, lake.read_run("object_ranking", "objects").sort_by("rank"),
                      lake.read_run("ranking", "objects").sort_by("rank"))
    return lake, runs


def _classes(lake: Lake, ranking) -> tuple[list[int], collections.Counter]:
    objects = lake.read_run("objects", "objects", columns=["id", "pred"])
    pred = dict(zip(objects.column("id").to_pylist(), objects.column("pred").to_pylist(), strict=True))
    picked = [pred[i] for i in ranking.filter(ranking.column("selected")).column("id").to_pylist()]
    return picked, collections.Counter(pred[i] for i in ranking.column("id").to_pylist())


def test_crop_selection_picks_objects_across_classes_where_one_class_dominates(object_runs):
    lake, runs = object_runs
    summary, objects, _ = runs["local"]
    picked, candidates = _classes(lake, objects)
    assert len(picked) == 18 and summary.selection_details["objects_selected"] == 18
    dominant, count = candidates.most_common(1)[0]
    assert count / sum(candidates.values()) > 0.5  # circles dominate the candidate objects
    assert set(picked) == set(candidates)  # every class is picked
    assert picked.count(dominant) / len(picked) < count / sum(candidates.values()) - 0.1


def test_object_level_balance_gives_each_class_its_quota(object_runs):
    lake, runs = object_runs
    summary, objects, _ = runs["balanced"]
    picked, _ = _classes(lake, objects)
    assert sorted(collections.Counter(picked).values()) == [6, 6, 6]
    assert summary.strategy.endswith("balance:predictions^1")


def test_spark_and_the_local_engine_rank_the_objects_alike(object_runs):
    _, runs = object_runs
    _, local_objects, local_images = runs["local"]
    _, spark_objects, spark_images = runs["spark"]
    for local, on_spark in ((local_objects, spark_objects), (local_images, spark_images)):
        assert local.column("id").to_pylist() == on_spark.column("id").to_pylist()
        assert local.column("selected").to_pylist() == on_spark.column("selected").to_pylist()
        np.testing.assert_allclose(np.array(local.column("score").to_pylist(), dtype=float),
                                   np.array(on_spark.column("score").to_pylist(), dtype=float), rtol=1e-6)


def test_the_image_ranking_derives_from_the_object_ranking(object_runs):
    _, runs = object_runs
    summary, objects, images = runs["spark"]
    picked_images = set(objects.filter(objects.column("selected")).column("image_id").to_pylist())
    assert set(images.filter(images.column("selected")).column("id").to_pylist()) == picked_images
    assert images.column("rank").to_pylist() == list(range(1, images.num_rows + 1))
    assert images.column("selected").to_pylist() == [True] * len(picked_images) + [False] * (
        images.num_rows - len(picked_images))
    assert (np.diff(np.array(images.column("score").to_pylist(), dtype=float)) <= 1e-9).all()
    first = images.to_pylist()[0]
    best = objects.filter(pc.equal(objects.column("image_id"), first["id"])).to_pylist()[0]
    assert (first["score"], first["parts"]) == (best["score"], best["parts"])
    counts = summary.counts
    assert counts["candidates"] == images.num_rows and counts["selected"] == len(picked_images)
    # the objects of labeled images are centres, not candidates; images without objects are filtered
    assert summary.filtered_by_reason["labeled"] == 50 and summary.filtered_by_reason.get("no objects", 0) > 0
    assert sum(summary.filtered_by_reason.values()) + counts["candidates"] + counts["rejected"] == counts["pool"]


def test_images_out_for_labeling_at_the_run_s_time_are_kept_out(tmp_path):
    """An image an earlier round sent 20 days ago (expiry: 14 days) to a run whose time is 10 days ago: it was
    out for labeling then, so its object is no candidate."""
    import datetime as dt

    import pyarrow as pa

    from alray.config import LabeledConfig, SelectionConfig, SparkConfig, StrategyConfig
    from alray.lake.rounds import mark_sent, record_selection
    from alray.stages.select_objects import run_select_objects

    lake = Lake(str(tmp_path / "lake"))
    now = dt.datetime.now(dt.timezone.utc)
    images = [f"img-{i}" for i in range(4)]
    lake.replace_run("features", pa.table({"run_id": ["o1"] * 4, "id": images, "n_objects": [1] * 4}), "o1")
    lake.replace_run("objects", pa.table({
        "run_id": ["o1"] * 4, "id": [f"{i}#0" for i in images], "image_id": images,
        "embedding": pa.array([[float(i), 1.0] for i in range(4)], pa.list_(pa.float32())),
        "entropy": [0.9, 0.1, 0.2, 0.3]}), "o1")
    lake.replace_run("ranking", pa.table({"run_id": ["r0"], "id": ["img-0"], "rank": [1], "selected": [True]}), "r0")
    record_selection(lake, "r0", at=now - dt.timedelta(days=20))
    mark_sent(lake, "r0", ["img-0"], destination="d", at=now - dt.timedelta(days=20))
    selection = SelectionConfig(n_samples=2, engine="local",
                                strategies=[StrategyConfig(input="entropy", strategy="weights")])
    result = run_select_objects(selection, LabeledConfig(), SparkConfig(), seed=0, run_id="o1", lake=lake,
                                progress=Progress(quiet=True), run_time=now - dt.timedelta(days=10))
    assert result.filtered_by_reason == {"selected_before": 1}
    picked = lake.read_run("ranking", "o1").filter(pc.field("selected")).column("id").to_pylist()
    assert sorted(picked) == ["img-2", "img-3"]


def test_a_run_that_detects_no_objects_writes_empty_rankings(ray_session, tmp_path):
    """A blank pool (every image's detections empty) at the object level: nothing to select, every image
    filtered as having no objects, the run succeeds."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from alray.demo import png_bytes
    from alray.detection.boxes import DETECTIONS_TYPE
    from alray.models import SmallCNN, save_checkpoint

    ids = [f"blank-{i}" for i in range(6)]
    pq.write_table(pa.table({"id": ids, "image": [png_bytes(np.zeros((16, 16, 3), dtype=np.uint8))] * 6,
                             "detections": pa.array([[]] * 6, DETECTIONS_TYPE)}), str(tmp_path / "pool.parquet"))
    torch.manual_seed(0)
    save_checkpoint(SmallCNN(in_channels=3, image_size=16, n_classes=0, embedding_dim=4), tmp_path / "enc.pt")
    config = config_from_dict({
        "task": "detection", "detection": {"classes": ["a", "b"], "level": "objects"}, "run": {"seed": 0},
        "pool": {"path": str(tmp_path / "pool.parquet")}, "model": {"checkpoint": str(tmp_path / "enc.pt")},
        "selection": {"n_samples": 3, "engine": "local"}, "output": {"path": str(tmp_path / "lake")}})
    summary = run_pipeline(config, progress=Progress(quiet=True))
    assert summary.status == "succeeded"
    assert summary.counts["candidates"] == summary.counts["selected"] == 0
    assert summary.filtered_by_reason == {"no objects": 6}
    lake = Lake(str(tmp_path / "lake"))
    run_id = summary.run_id
    assert lake.read_run("ranking", run_id).num_rows == 0 and lake.read_run("object_ranking", run_id).num_rows == 0


def test_the_object_selection_reads_only_the_columns_it_names():
    from alray.config import SelectionConfig
    from alray.stages.select_objects import object_columns

    selection = SelectionConfig(n_samples=3, strategies=[
        {"input": "embeddings", "strategy": "diversity"}, {"input": "entropy", "strategy": "weights"},
        {"input": "pred", "strategy": "balance", "target": "uniform"}],
        filters=[{"column": "sharpness", "op": ">", "value": 1.0}])
    assert sorted(object_columns(selection)) == ["embedding", "entropy", "id", "pred", "sharpness"]
