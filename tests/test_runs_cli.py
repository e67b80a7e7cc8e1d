"""`alray runs list` and `alray runs show` read the runs table, as a person at a terminal runs them."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pyarrow as pa
import pytest

from alray.lake import Lake
from alray.tables import RUNS_SCHEMA


def _row(run_id: str, status: str, hour: int, **fields) -> pa.Table:
    row = {name: None for name in RUNS_SCHEMA.names}
    row.update(run_id=run_id, status=status, started_at=dt.datetime(2026, 5, 1, hour, tzinfo=dt.timezone.utc),
               config=json.dumps({"selection": {"n_samples": 3}}), timings=json.dumps({"score": 1.5}), **fields)
    return pa.Table.from_pylist([row], schema=RUNS_SCHEMA)


@pytest.fixture()
def lake_config(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    lake.replace_run("runs", _row("r-old", "succeeded", 8, n_selected=3, coverage_radius=0.25), "r-old",
                     partition=False)
    lake.replace_run("runs", _row("r-new", "failed", 9, error="pool p: missing required column 'id'"), "r-new",
                     partition=False)
    lake.replace_run("runs", _row("r-mid", "running", 7), "r-mid", partition=False)
    config = tmp_path / "job.yaml"
    config.write_text(f"pool: {{path: {tmp_path}/pool}}\nmodel: {{checkpoint: {tmp_path}/m.pt}}\n"
                      f"selection: {{n_samples: 3}}\noutput: {{path: {lake.root}}}\n")
    return config


def _alray(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alray.cli", *args], capture_output=True, text=True, timeout=120)


def test_runs_list_shows_every_run_newest_first_under_a_header_with_the_error(lake_config):
    result = _alray("runs", "list", str(lake_config))
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["RUN_ID", "STATUS", "STARTED", "(UTC)", "SELECTED", "RADIUS", "ERROR"]
    assert [line.split()[:2] for line in lines] == [["r-new", "failed"], ["r-old", "succeeded"],
                                                   ["r-mid", "running"]]
    columns = {name: header.index(name) for name in ("SELECTED", "RADIUS", "ERROR")}
    assert lines[1][columns["SELECTED"]:].split()[:2] == ["3", "0.2500"]
    assert lines[0][columns["ERROR"]:] == "pool p: missing required column 'id'"
    assert "2026-05-01 09:00:00" in lines[0]


def test_runs_list_and_show_as_json(lake_config):
    listed = _alray("runs", "list", str(lake_config), "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["run_id"], r["status"]) for r in rows] == [("r-new", "failed"), ("r-old", "succeeded"),
                                                          ("r-mid", "running")]
    assert rows[0]["error"] == "pool p: missing required column 'id'" and rows[1]["n_selected"] == 3
    assert rows[1]["config"] == {"selection": {"n_samples": 3}}
    shown = _alray("runs", "show", "r-old", str(lake_config), "--json")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("\n") == 1 and json.loads(shown.stdout) == rows[1]


def test_runs_show_prints_one_run_as_json_with_its_config(lake_config):
    result = _alray("runs", "show", "r-new", str(lake_config))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["status"] == "failed" and shown["error"].startswith("pool p: missing")
    assert shown["config"] == {"selection": {"n_samples": 3}} and shown["timings"] == {"score": 1.5}


def test_runs_show_of_an_unknown_run_or_lake_is_one_line_and_exit_2(lake_config, tmp_path):
    result = _alray("runs", "show", "nope", str(lake_config))
    assert result.returncode == 2
    assert result.stderr.strip() == f"alray: error: run 'nope': not in the runs table under {tmp_path}/lake"
    result = _alray("runs", "list", str(lake_config), "--set", f"output.path={tmp_path}/empty")
    assert result.returncode == 2
    assert result.stderr.strip() == f"alray: error: output.path: no runs table at {tmp_path}/empty/runs"
