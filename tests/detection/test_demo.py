"""``alray demo --task detection`` end to end, small: the shapes pool, a detector trained on the seed set,
scoring on Ray, selection on Spark."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import yaml

from alray.cli import main as alray_main
from alray.detection.commands import DETECTION_DEMO_CONFIG
from alray.lake import Lake

ROOT = Path(__file__).resolve().parents[2]


def test_the_detection_demo_runs_end_to_end(ray_session, spark, tmp_path):
    config = yaml.safe_load((ROOT / DETECTION_DEMO_CONFIG).read_text())
    assert config["task"] == "detection" and config["selection"]["engine"] == "spark"
    config["pool"]["path"] = str(tmp_path / "pool")
    config["labeled"]["path"] = str(tmp_path / "labeled")
    config["model"]["checkpoint"] = str(tmp_path / "detector.pt")
    config["output"]["path"] = str(tmp_path / "lake")
    config["selection"]["n_samples"] = 12
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = alray_main(["demo", "--task", "detection", "--config", str(path), "--images", "70", "--labeled", "40",
                           "--epochs", "30", "--run-id", "demo", "--json"])
    assert code == 0, err.getvalue()[-3000:]
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    counts = summary["counts"]
    assert counts["pool"] == 70 + 6 + 3 and counts["rejected"] == 3  # the corrupt images
    assert counts["selected"] == 12 and summary["filtered_by_reason"]["labeled"] == 40
    assert "demo: pool of 79 images" in err.getvalue() and "trained in" in err.getvalue()
    lake = Lake(str(tmp_path / "lake"))
    features = lake.read_run("features", "demo")
    assert features.column("n_objects").null_count == 0 and features.column("box_instability").null_count == 0
    ranking = lake.read_run("ranking", "demo")
    picked = set(ranking.filter(ranking.column("selected")).column("id").to_pylist())
    n_objects = dict(zip(features.column("id").to_pylist(), features.column("n_objects").to_pylist(), strict=True))
    assert len(picked) == 12 and all(n_objects[i] >= 1 for i in picked)
    assert summary["strategy"] == "diversity^1+weights:object_entropy_max^1+object_balance:object_classes^1"
