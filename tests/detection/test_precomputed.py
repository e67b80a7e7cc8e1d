"""Pools that hold their own detections: validated per row, scored with no model, through a real run."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from alray.cli import main as alray_main
from alray.detection.boxes import DETECTIONS_TYPE, Detections
from alray.detection.columns import DetectionOptions
from alray.detection.precomputed import image_sizes, score_precomputed_detections
from alray.detection.scores import image_scores
from alray.lake import Lake
from alray.tables import DETECTION_SCORES, REJECT_REASON

SCHEMA = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32())), ("detections", DETECTIONS_TYPE),
                    ("width", pa.int32()), ("height", pa.int32()), ("site", pa.string())])


def _pool(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        objects = []
        for _ in range(int(rng.integers(0, 4))):
            x0, y0 = rng.uniform(0, 40, 2)
            w, h = rng.uniform(5, 20, 2)
            probs = rng.dirichlet(np.ones(3))
            objects.append({"x0": x0, "y0": y0, "x1": x0 + w, "y1": y0 + h, "label": int(probs.argmax()),
                            "score": float(rng.uniform(0.2, 1.0)), "probs": probs.tolist()})
        rows.append({"id": f"img-{i:03d}", "embedding": rng.normal(size=4).tolist(), "detections": objects,
                     "width": 64, "height": 64, "site": "a" if i % 2 else "b"})
    return rows


OPTIONS = DetectionOptions(known_labels=frozenset({0, 1, 2}), n_classes=3)


def test_scores_equal_the_score_functions_and_bad_rows_are_quarantined():
    rows = _pool(12)
    rows[0]["detections"] = [{"x0": 50.0, "y0": 1.0, "x1": 70.0, "y1": 5.0, "label": 0, "score": 0.5}]
    rows[1]["detections"] = [{"x0": 5.0, "y0": 1.0, "x1": 7.0, "y1": 5.0, "label": 9, "score": 0.5}]
    rows[2]["detections"] = [{"x0": 9.0, "y0": 1.0, "x1": 7.0, "y1": 5.0, "label": 1, "score": 0.5}]
    rows[3]["height"] = 0
    rows[4]["detections"] = []
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    features = score_precomputed_detections(table, run_id="r", embedding_dim=4, options=OPTIONS)
    reasons = features.column(REJECT_REASON).to_pylist()
    assert reasons[:4] == ["detections[0].x1: 70 outside the image (width 64)",
                           "detections[0].label: unknown class id 9 (expected one of [0, 1, 2])",
                           "detections[0].x1: 7 < x0 9 (a box needs x1 > x0)",
                           "width, height: expected the image size in pixels, got 64 x 0"]
    assert reasons[4:] == [None] * 8
    good = [Detections.of([[o[k] for k in ("x0", "y0", "x1", "y1")] for o in r["detections"]],
                          [o["label"] for o in r["detections"]], [o["score"] for o in r["detections"]],
                          [o["probs"] for o in r["detections"]] if r["detections"] else np.zeros((0, 3)))
            for r in rows[4:]]
    expected = image_scores(good)
    for name in DETECTION_SCORES:
        values = features.column(name).to_pylist()
        assert values[:4] == [None] * 4
        got = np.array([np.nan if v is None else v for v in values[4:]], dtype=np.float64)
        np.testing.assert_allclose(got, expected[name], rtol=1e-6, equal_nan=True, err_msg=name)
    assert features.column("n_objects")[4].as_py() == 0 and features.column("object_classes")[4].as_py() == ""
    assert features.column("site").to_pylist() == [r["site"] for r in rows]
    assert features.column("width").to_pylist()[4:] == [64.0] * 8


def _run(tmp_path, pool: list[dict], selection: dict, **extra) -> tuple[int, str, str]:
    pq.write_table(pa.Table.from_pylist(pool, schema=SCHEMA), str(tmp_path / "pool.parquet"))
    config = {"task": "detection", "detection": {"classes": ["a", "b", "c"]}, "run": {"seed": 0},
              "pool": {"path": str(tmp_path / "pool.parquet")}, "score": {"batch_size": 16, "max_bad_fraction": 0.2},
              "selection": {"n_partitions": 2, **selection}, "output": {"path": str(tmp_path / "lake")}, **extra}
    return _alray_run(tmp_path, config, "--json")


def _alray_run(tmp_path, config: dict, *flags: str) -> tuple[int, str, str]:
    """``alray run`` of ``config`` as run id det: exit code, stdout, stderr."""
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = alray_main(["run", str(path), "--run-id", "det", "--quiet", *flags])
    return code, out.getvalue(), err.getvalue()


def test_a_detection_pool_runs_with_no_model_and_selects_on_the_new_scores(ray_session, tmp_path):
    rows = _pool(60, seed=1)
    rows[7]["detections"][0:0] = [{"x0": -4.0, "y0": 0.0, "x1": 3.0, "y1": 3.0, "label": 0, "score": 0.9,
                                   "probs": [1.0, 0.0, 0.0]}]
    code, out, err = _run(tmp_path, rows, {
        "n_samples": 8, "filters": [{"column": "n_objects", "op": ">=", "value": 1}],
        "strategies": [{"input": "embeddings", "strategy": "diversity"},
                       {"input": "object_entropy_max", "strategy": "weights"}]})
    assert code == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    lake = Lake(str(tmp_path / "lake"))
    assert [(r["id"], r["reason"]) for r in lake.read_run("rejects", "det").to_pylist()] == [
        ("img-007", "detections[0].x0: -4 outside the image (width 64)")]
    features = lake.read_run("features", "det", columns=["id", "n_objects"])
    empty = {r["id"] for r in features.to_pylist() if r["n_objects"] == 0}
    assert summary["counts"]["filtered"] == len(empty) > 0 and summary["counts"]["selected"] == 8
    picked = {r["id"] for r in lake.read_run("ranking", "det").to_pylist() if r["selected"]}
    assert not picked & empty
    # scored at the image level: an object-level selection of the run names what to do
    from alray.config import LabeledConfig, SelectionConfig, SparkConfig
    from alray.errors import InputError
    from alray.progress import Progress
    from alray.stages.select_objects import run_select_objects

    detected = int(pc.sum(lake.read_run("features", "det", columns=["n_objects"]).column("n_objects")).as_py())
    with pytest.raises(InputError, match=rf"no objects for run det, whose images hold {detected} detected objects; "
                                         "score it with detection.level objects"):
        run_select_objects(SelectionConfig(n_samples=3, engine="local"), LabeledConfig(), SparkConfig(), seed=0,
                           run_id="det", lake=lake, progress=Progress(quiet=True))


def test_a_selection_that_asks_for_a_classification_score_is_refused(tmp_path):
    code, _, err = _run(tmp_path, _pool(10), {"n_samples": 3, "strategies": [{"input": "bald", "strategy": "weights"}]})
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "alray: error: selection.strategies.0: 'bald' is not a column here; a detection run gives the detection "
        "scores (README: Object detection)")
    code, _, err = _run(tmp_path, _pool(10), {"n_samples": 3, "strategies": [
        {"input": "box_instability", "strategy": "weights"}]})
    assert code == 2 and err.strip().endswith("'box_instability' needs detection.samples mc_dropout or hflip")


def test_sizes_and_labels_that_are_no_numbers_are_quarantined_naming_the_field():
    rows = _pool(4)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    table = table.set_column(3, "width", pa.array(["64", "wide", None, "64"]))
    reasons: list = [None] * 4
    assert image_sizes(table, reasons) == [None] * 4
    assert reasons == ["width: expected a number, got '64'", "width: expected a number, got 'wide'",
                       "width: missing", "width: expected a number, got '64'"]
    named = pa.list_(pa.struct([*(pa.field(k, pa.float32()) for k in ("x0", "y0", "x1", "y1", "score")),
                                pa.field("label", pa.string())]))
    labels = [[{"x0": 1.0, "y0": 1.0, "x1": 5.0, "y1": 5.0, "score": 0.5, "label": name}] for name in ("b", "car")]
    table = pa.table({"id": ["p", "q"], "embedding": [[0.0] * 4] * 2, "detections": pa.array(labels, named),
                      "width": [64, 64], "height": [64, 64]})
    options = DetectionOptions(known_labels=frozenset({0, 1, 2}), n_classes=3, class_names=("a", "b", "c"))
    features = score_precomputed_detections(table, run_id="r", embedding_dim=4, options=options)
    assert features.column(REJECT_REASON).to_pylist() == [
        None, "detections[0].label: unknown class name 'car' (expected one of detection.classes ['a', 'b', 'c'])"]
    assert features.column("object_classes")[0].as_py() == "1:1"


def _named(rows: list[dict]) -> tuple[list[dict], pa.Schema]:
    """The rows with class names ("a", "b", "c") for labels, and their schema (label a string)."""
    named = pa.schema([f if f.name != "detections" else pa.field("detections", pa.list_(pa.struct([
        *(pa.field(k, pa.float32()) for k in ("x0", "y0", "x1", "y1", "score")), pa.field("label", pa.string())])))
        for f in SCHEMA])
    for row in rows:
        row["detections"] = [{**o, "label": "abc"[o["label"]]} for o in row["detections"]]
    return rows, named


def test_a_detections_column_of_the_wrong_type_is_exit_2_naming_pool_column_and_field(tmp_path):
    rows, named = _named(_pool(6))
    pq.write_table(pa.Table.from_pylist(rows, schema=named), str(tmp_path / "named.parquet"))
    config = {"task": "detection", "pool": {"path": str(tmp_path / "named.parquet")}, "selection": {"n_samples": 2},
              "output": {"path": str(tmp_path / "lake")}}
    code, _, err = _alray_run(tmp_path, config)
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"alray: error: pool {tmp_path / 'named.parquet'}: column detections: field label is string, expected an "
        "integer class id (class names need detection.classes)")


def test_class_names_in_the_pool_map_through_detection_classes(ray_session, tmp_path):
    rows, named = _named(_pool(30, seed=3))
    rows[4]["detections"] = [{**rows[4]["detections"][0], "label": "zebra"}] if rows[4]["detections"] else [
        {"x0": 1.0, "y0": 1.0, "x1": 4.0, "y1": 4.0, "score": 0.5, "label": "zebra"}]
    pq.write_table(pa.Table.from_pylist(rows, schema=named), str(tmp_path / "pool.parquet"))
    config = {"task": "detection", "detection": {"classes": ["a", "b", "c"]}, "run": {"seed": 0},
              "pool": {"path": str(tmp_path / "pool.parquet")}, "score": {"max_bad_fraction": 0.2},
              "selection": {"n_samples": 4, "engine": "local",
                            "strategies": [{"input": "embeddings", "strategy": "diversity"}]},
              "output": {"path": str(tmp_path / "lake")}}
    code, _, err = _alray_run(tmp_path, config)
    assert code == 0, err[-2000:]
    lake = Lake(str(tmp_path / "lake"))
    assert [r["reason"] for r in lake.read_run("rejects", "det").to_pylist()] == [
        "detections[0].label: unknown class name 'zebra' (expected one of detection.classes ['a', 'b', 'c'])"]
    features = {r["id"]: r for r in lake.read_run("features", "det").to_pylist()}
    row = next(r for r in rows if len(r["detections"]) >= 2)
    assert [o["label"] for o in features[row["id"]]["detections"]] == ["abc".index(o["label"])
                                                                      for o in row["detections"]]
