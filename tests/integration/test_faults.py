"""Faults: a killed scoring actor, a Spark task that fails once, a run killed between stages.

Each run must finish with the same tables as an undisturbed run; the scoring must also not
depend on the number of actors or the batch size.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pyarrow as pa
import pytest
import yaml

from alray.faults import arm
from alray.lake import Lake
from alray.pipeline import run_pipeline
from alray.progress import Progress
from tests.conftest import FAILPOINTS_DIR, demo_config

pytestmark = pytest.mark.slow

COMPARED = ["id", "rank", "selected", "score", "weight", "diversity"]


def _ranking(config, run_id: str) -> pa.Table:
    return Lake.from_output(config.output).read_run("ranking", run_id, columns=COMPARED).sort_by("rank")


def _features(config, run_id: str) -> pa.Table:
    table = Lake.from_output(config.output).read_run("features", run_id)
    return table.drop_columns([c for c in ("run_id",) if c in table.column_names]).sort_by("id")


@pytest.fixture(scope="module")
def reference(ray_session, spark, demo_files, tmp_path_factory):
    """An undisturbed run: one actor, batches of 128."""
    config = demo_config(demo_files, tmp_path_factory.mktemp("lake"))
    config.run.run_id = "calm"
    run_pipeline(config, progress=Progress(quiet=True))
    return config


def _variant(reference, run_id: str, **score):
    config = reference.model_copy(deep=True)
    config.run.run_id = run_id
    for key, value in score.items():
        setattr(config.score, key, value)
    return config


def test_a_killed_actor_and_a_failed_spark_task_change_nothing(reference):
    config = _variant(reference, "faulty")
    arm(FAILPOINTS_DIR, "score.actor")  # the actor process dies on its first batch
    arm(FAILPOINTS_DIR, "select.local_centres")  # one coreset task raises once
    summary = run_pipeline(config, progress=Progress(quiet=True))
    assert not os.path.exists(os.path.join(FAILPOINTS_DIR, "score.actor")), "the actor failpoint never fired"
    assert not os.path.exists(os.path.join(FAILPOINTS_DIR, "select.local_centres")), "the Spark one never fired"
    assert summary.status == "succeeded"
    assert _features(config, "faulty").equals(_features(reference, "calm"))
    assert _ranking(config, "faulty").equals(_ranking(reference, "calm"))


def test_killed_between_stages_resumes_with_identical_tables(reference, tmp_path):
    # Two actors and batches of 50 instead of one actor and 128: the scores must not move a bit.
    config = _variant(reference, "killed", num_actors=2, cpus_per_actor=0.5, batch_size=50)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    job = subprocess.Popen([sys.executable, "-m", "alray.cli", "run", str(path)], stderr=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert job.stderr is not None
        for line in job.stderr:
            if "[alray] select: started" in line:
                os.killpg(job.pid, signal.SIGKILL)  # the driver and everything it started
                break
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    runs = Lake.from_output(config.output).read_run("runs", "killed").to_pylist()
    assert runs[0]["status"] == "running" and runs[0]["stages_completed"] == "score"

    summary = run_pipeline(config, progress=Progress(quiet=True))
    assert summary.resumed and "score_s" not in summary.timings
    assert summary.status == "succeeded"
    assert _features(config, "killed").equals(_features(reference, "calm"))
    assert _ranking(config, "killed").equals(_ranking(reference, "calm"))
