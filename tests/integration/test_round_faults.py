"""Killed and rerun: a selection killed before its round is recorded, an export killed before its ids are
marked sent, an import killed between the labels and the round states; each rerun ends in the tables
an undisturbed run leaves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alray.faults import arm
from alray.lake import Lake
from alray.pipeline import run_pipeline
from alray.progress import Progress
from tests.conftest import FAILPOINTS_DIR, demo_config
from tests.labeling.conftest import lake_config, write_pool, write_run

pytestmark = pytest.mark.slow

# Columns that hold the time a command ran: they differ between any two runs of it.
CLOCK = {"selected_at", "sent_at", "imported_at", "destination"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alray.cli", *args], capture_output=True, text=True, timeout=300)


def _tables(config, *names: str, drop: set[str] = CLOCK) -> dict[str, list[dict]]:
    lake = Lake.from_output(config.output)
    out = {}
    for name in names:
        try:
            table = lake.read_table(name)
        except Exception:  # a table not written yet
            out[name] = []
            continue
        table = table.drop_columns([c for c in table.column_names if c in drop])
        out[name] = sorted(table.to_pylist(), key=lambda row: json.dumps(row, sort_keys=True, default=str))
    return out


def _job(config, path: Path) -> str:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return str(path)


def _twin_lakes(tmp_path: Path):
    """Two lakes holding the same succeeded run r1 of one pool: one to disturb, one to compare with."""
    pool = write_pool(tmp_path)
    configs = []
    for name in ("calm", "killed"):
        config = lake_config(tmp_path / name, pool)
        write_run(config, "r1", [f"img/{i:02d}.png" for i in range(4)], others=["img/05.png"])
        configs.append(config)
    return configs


def _export_file(path: Path) -> str:
    tasks = [{"id": n, "project": 1, "data": {"alray_id": f"img/{n:02d}.png", "alray_round": "r1"},
              "annotations": [{"id": n, "updated_at": "2026-01-05T00:00:00Z",
                               "result": [{"type": "choices", "value": {"choices": ["two"]}}]}]} for n in range(3)]
    path.write_text(json.dumps(tasks))
    return str(path)


def test_an_export_killed_before_marking_sent_ends_as_an_undisturbed_one(tmp_path):
    calm, killed = _twin_lakes(tmp_path)
    assert _cli("export", "r1", "--config", _job(calm, tmp_path / "calm.yaml"), "--to", "coco",
                "--out", str(tmp_path / "out-calm")).returncode == 0
    arm(FAILPOINTS_DIR, "export.before_sent")
    job = _job(killed, tmp_path / "killed.yaml")
    dead = _cli("export", "r1", "--config", job, "--to", "coco", "--out", str(tmp_path / "out-killed"))
    assert dead.returncode == 137, dead.stderr
    assert not os.path.exists(os.path.join(FAILPOINTS_DIR, "export.before_sent"))
    assert {row["state"] for row in _tables(killed, "round_items")["round_items"]} == {"selected"}
    assert _cli("export", "r1", "--config", job, "--to", "coco", "--out", str(tmp_path / "out-killed")
                ).returncode == 0
    assert _tables(killed, "round_items", "labels") == _tables(calm, "round_items", "labels")
    assert (tmp_path / "out-killed" / "annotations.json").read_text().count('"file_name"') == 4


def test_an_import_killed_between_labels_and_states_ends_as_an_undisturbed_one(tmp_path):
    calm, killed = _twin_lakes(tmp_path)
    export = _export_file(tmp_path / "export.json")
    for config, name in ((calm, "calm"), (killed, "killed")):
        assert _cli("export", "r1", "--config", _job(config, tmp_path / f"{name}.yaml"), "--to", "cvat",
                    "--out", str(tmp_path / f"out-{name}")).returncode == 0
    assert _cli("import-labels", str(tmp_path / "calm.yaml"), export).returncode == 0
    arm(FAILPOINTS_DIR, "import.before_states")
    assert _cli("import-labels", str(tmp_path / "killed.yaml"), export).returncode == 137
    half = _tables(killed, "labels", "round_items")
    assert len(half["labels"]) == 3 and {row["state"] for row in half["round_items"]} == {"sent"}
    rerun = _cli("import-labels", str(tmp_path / "killed.yaml"), export, "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["n_new"] == 0  # the labels were in; only the states were left to do
    assert _tables(killed, "labels", "round_items") == _tables(calm, "labels", "round_items")


def test_a_selection_killed_before_its_round_is_recorded_resumes_to_the_same_tables(
        ray_session, demo_files, tmp_path):
    config = demo_config(demo_files, tmp_path / "lake", n_samples=6, engine="local")
    for run_id in ("calm", "killed"):
        config.run.run_id = run_id
        run_pipeline(config, progress=Progress(quiet=True), stages=("score",))
    config.run.run_id = None
    job = _job(config, tmp_path / "job.yaml")
    assert _cli("select", job, "--run-id", "calm").returncode == 0
    arm(FAILPOINTS_DIR, "select.before_round")
    assert _cli("select", job, "--run-id", "killed").returncode == 137
    lake = Lake.from_output(config.output)
    assert lake.read_run("round_items", "killed").num_rows == 0  # the ranking landed, the round not yet
    assert _cli("select", job, "--run-id", "killed").returncode == 0

    def round_of(run_id: str) -> list[dict]:
        ranking = lake.read_run("ranking", run_id, columns=["id", "rank", "selected", "score"]).sort_by("rank")
        items = lake.read_run("round_items", run_id, columns=["id", "rank", "state"]).sort_by("rank")
        return [ranking.to_pylist(), items.to_pylist()]

    assert round_of("killed") == round_of("calm")
    assert lake.read_run("round_items", "killed").num_rows == 6
    runs = lake.read_table("runs", columns=["run_id", "status"])
    assert dict(zip(runs.column("run_id").to_pylist(), runs.column("status").to_pylist(), strict=True)) == {
        "calm": "succeeded", "killed": "succeeded"}
