"""Selection on a detection run's features: every strategy on the new scores, object-class balance,
filters on object counts and scores, on the local engine and on Spark."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from alray.config import SelectionConfig
from alray.detection.balance import object_balance_plan, selected_object_counts
from alray.detection.boxes import Detections
from alray.detection.columns import DetectionOptions, detection_columns
from alray.detection.scores import class_key, parse_class_key
from alray.selection.local import select_table
from alray.strategies.registry import get_strategy, strategy_names

# A pool where class 0 dominates: most images hold circles only.
COMPOSITIONS = [([0], 300), ([0, 0], 120), ([1], 40), ([2], 35), ([0, 0, 1], 25), ([0, 2], 25), ([], 60)]


def detection_features(seed: int = 0) -> pa.Table:
    """Features rows of a detection run: embeddings, the detection columns, a time of capture."""
    rng = np.random.default_rng(seed)
    images = []
    for labels, count in COMPOSITIONS:
        for _ in range(count):
            k = len(labels)
            corner = rng.uniform(0, 40, size=(k, 2))
            boxes = np.hstack([corner, corner + rng.uniform(4, 20, size=(k, 2))])
            images.append(Detections.of(boxes, labels, rng.uniform(0.05, 1.0, size=k),
                                        rng.dirichlet(np.ones(3), size=k) if k else np.zeros((0, 3))))
    order = rng.permutation(len(images))
    images = [images[i] for i in order]
    n = len(images)
    columns = detection_columns(images, DetectionOptions(known_labels=frozenset({0, 1, 2}), n_classes=3))
    columns["box_instability"] = pa.array(rng.random(n), pa.float64())
    embeddings = rng.normal(size=(n, 8)).astype(np.float32)
    return pa.table({"id": [f"img-{i:04d}" for i in range(n)],
                     "embedding": pa.array(list(embeddings), pa.list_(pa.float32())), **columns})


FEATURES = detection_features()


def _select(strategies: list[dict], n: int = 30, **selection) -> tuple[pa.Table, object]:
    config = SelectionConfig(n_samples=n, strategies=strategies, n_partitions=3, **selection)
    return select_table(FEATURES, config, seed=0)


@pytest.mark.parametrize("name", [n for n in strategy_names() if get_strategy(n).inputs == "column"
                                  and get_strategy(n).role != "balance"])
@pytest.mark.parametrize("score", ["objectness_least_confidence", "object_entropy_max", "object_frequency",
                                   "n_objects", "box_instability"])
def test_every_column_strategy_selects_on_the_detection_scores(name, score):
    extra = {"threshold": 0.2, "operation": "bigger"} if name == "threshold" else {}
    strategies = [{"input": score, "strategy": name, **extra}]
    if get_strategy(name).role in ("filter", "objective"):
        strategies.insert(0, {"input": "embeddings", "strategy": "diversity"})
    ranking, result = _select(strategies)
    picked = ranking.filter(ranking.column("selected"))
    assert picked.num_rows == 30 and result.n_selected == 30
    values = dict(zip(FEATURES.column("id").to_pylist(), FEATURES.column(score).to_pylist(), strict=True))
    mean_all = np.nanmean([v for v in values.values() if v is not None])
    mean_picked = np.mean([values[i] for i in picked.column("id").to_pylist()])
    if name in ("power", "softmax", "softrank", "cluster_margin") or get_strategy(name).role == "objective":
        assert mean_picked > mean_all  # they prefer high values of the score


def _available(keys: list[str]) -> dict[str, int]:
    available: dict[str, int] = {}
    for key in keys:
        available[key] = available.get(key, 0) + 1
    return available


def _shares(target, classes) -> dict[int, float]:
    if target == "uniform":
        return {c: 1 / len(classes) for c in classes}
    return {int(c): share for c, share in target.items()}


def test_object_class_balance_meets_its_quotas_within_one_sample():
    keys = FEATURES.column("object_classes").to_pylist()
    available = _available(keys)
    for target, n in (("uniform", 45), ({"0": 0.5, "1": 0.25, "2": 0.25}, 40)):
        plan = object_balance_plan(available, n, target)
        assert plan.grouping == "compositions" and plan.group_of == {k: k for k in available}
        ranking, _ = _select([{"input": "embeddings", "strategy": "diversity"},
                              {"input": "object_entropy_mean", "strategy": "weights"},
                              {"input": "object_classes", "strategy": "object_balance", "target": target}], n=n)
        key_of = dict(zip(FEATURES.column("id").to_pylist(), keys, strict=True))
        picked = [key_of[i] for i in ranking.filter(ranking.column("selected")).column("id").to_pylist()]
        assert len(picked) == n
        assert {k: picked.count(k) for k in plan.quotas if plan.quotas[k]} == {
            k: q for k, q in plan.quotas.items() if q}
        counts = selected_object_counts(picked)
        total = sum(counts.values())
        largest_image = max(len(labels) for labels, _ in COMPOSITIONS)
        for c, share in _shares(target, range(3)).items():  # each class within one image's objects of its target
            assert abs(counts.get(c, 0) - share * total) <= largest_image, (target, counts)
    pool_counts = selected_object_counts(keys)
    assert pool_counts[0] > 4 * pool_counts[1]  # the pool itself is far from balanced


def many_class_features(n_images: int = 3000, n_classes: int = 80, seed: int = 0) -> pa.Table:
    """Features of a pool of ``n_classes`` long-tailed classes (class c about 1/(c+1) of the objects),
    1 to 6 objects an image: almost every image is a composition of its own."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_classes + 1)
    images = []
    for _ in range(n_images):
        k = int(rng.integers(1, 7))
        labels = rng.choice(n_classes, size=k, p=weights / weights.sum())
        corner = rng.uniform(0, 40, size=(k, 2))
        images.append(Detections.of(np.hstack([corner, corner + 4]), labels, rng.uniform(0.1, 1.0, size=k)))
    columns = detection_columns(images, DetectionOptions(n_classes=n_classes))
    embeddings = rng.normal(size=(n_images, 8)).astype(np.float32)
    return pa.table({"id": [f"img-{i:05d}" for i in range(n_images)],
                     "embedding": pa.array(list(embeddings), pa.list_(pa.float32())), **columns})


def test_with_many_classes_images_are_grouped_by_their_scarcest_class():
    features = many_class_features()
    keys = features.column("object_classes").to_pylist()
    available = _available(keys)
    assert len(available) > 0.7 * features.num_rows  # near-singleton compositions
    n = 300
    plan = object_balance_plan(available, n, "uniform")
    assert plan.grouping == "scarcest class" and len(plan.quotas) <= 4 * 80 + 2
    supply = selected_object_counts(keys)
    for key in keys[:50]:  # the class of the key with the fewest objects in the pool, and the other objects
        counts = parse_class_key(key)
        scarcest = min(counts, key=lambda c: (supply[c], c))
        assert plan.group_of[key] == f"{scarcest}+{min(sum(counts.values()) - counts[scarcest], 3)}"
    config = SelectionConfig(n_samples=n, n_partitions=3, strategies=[
        {"input": "embeddings", "strategy": "diversity"},
        {"input": "object_classes", "strategy": "object_balance", "target": "uniform"}])
    ranking, _ = select_table(features, config, seed=0)
    key_of = dict(zip(features.column("id").to_pylist(), keys, strict=True))
    picked = [key_of[i] for i in ranking.filter(ranking.column("selected")).column("id").to_pylist()]
    groups = [plan.group_of[k] for k in picked]
    assert {g: groups.count(g) for g in plan.quotas if plan.quotas[g]} == {
        g: q for g, q in plan.quotas.items() if q}  # the core meets the group quotas exactly
    counts, pool = selected_object_counts(picked), selected_object_counts(keys)
    shares = np.array([counts.get(c, 0) for c in range(80)]) / sum(counts.values())
    pool_shares = np.array([pool.get(c, 0) for c in range(80)]) / sum(pool.values())
    uniform = np.full(80, 1 / 80)
    # the selection is far closer to uniform than the pool (L1 distance of the shares 0.96)
    assert np.abs(shares - uniform).sum() < 0.4 * np.abs(pool_shares - uniform).sum()


def test_filters_on_object_counts_and_scores():
    ranking, result = _select([{"input": "embeddings", "strategy": "diversity"}], n=20, filters=[
        {"column": "n_objects", "op": ">=", "value": 2},
        {"column": "objectness_least_confidence", "op": ">", "value": 0.3}])
    kept = FEATURES.filter(pa.compute.and_(pa.compute.greater_equal(FEATURES.column("n_objects"), 2),
                                           pa.compute.greater(FEATURES.column("objectness_least_confidence"), 0.3)))
    assert result.n_candidates == kept.num_rows and set(ranking.column("id").to_pylist()) == set(
        kept.column("id").to_pylist())


def test_object_class_balance_on_spark_picks_what_the_local_engine_picks(spark):
    from alray.spark import select_dataframe

    config = SelectionConfig(n_samples=30, n_partitions=3, strategies=[
        {"input": "embeddings", "strategy": "diversity"},
        {"input": "object_classes", "strategy": "object_balance", "target": "uniform"}])
    local, _ = select_table(FEATURES, config, seed=0)
    frame = spark.createDataFrame(FEATURES.select(["id", "embedding", "object_classes", "n_objects"]).to_pandas())
    with select_dataframe(frame, config, seed=0) as selection:
        on_spark = selection.ranking.filter("selected").orderBy("rank").select("id").toPandas()["id"].tolist()
    assert on_spark == local.filter(local.column("selected")).column("id").to_pylist()


def test_the_class_key_is_the_balance_group():
    assert class_key({2: 1, 0: 3}) == "0:3,2:1"
    plan = object_balance_plan({"": 5, "1:1": 1}, 3, "uniform")
    assert plan.quotas == {"": 2, "1:1": 1} and plan.grouping == "compositions"


def test_object_balance_reads_object_classes_only():
    with pytest.raises(ValueError, match="object_balance reads a detection run's 'object_classes'"):
        SelectionConfig(n_samples=3, strategies=[{"input": "n_objects", "strategy": "object_balance"}])
    with pytest.raises(ValueError, match="balance on object_classes would balance images per composition; "
                                         "object_balance balances their objects"):
        SelectionConfig(n_samples=3, strategies=[{"input": "object_classes", "strategy": "balance"}])
