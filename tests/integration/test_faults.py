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
    config.run.incremental = False  # scored again, not carried over from the reference run
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


def test_an_incremental_scoring_killed_before_its_pool_rows_reruns_to_the_same_tables(ray_session, demo_files,
                                                                                       tmp_path):
    import pyarrow.parquet as pq

    rows = pq.read_table(demo_files.pool)
    pool = tmp_path / "pool"
    pool.mkdir()
    pq.write_table(rows.slice(0, 200), pool / "part-0.parquet")
    configs = {}
    for name in ("calm", "killed"):  # twin lakes, each with a base run of the first 200 rows
        config = demo_config(demo_files, tmp_path / name)
        config.pool.path = str(pool)
        config.run.run_id = "base"
        run_pipeline(config, progress=Progress(quiet=True), stages=("score",))
        configs[name] = config
    pq.write_table(rows.slice(200, 20), pool / "part-1.parquet")
    configs["calm"].run.run_id = "r2"
    run_pipeline(configs["calm"], progress=Progress(quiet=True), stages=("score",))
    config = configs["killed"]
    config.run.run_id = None
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    arm(FAILPOINTS_DIR, "score.before_pool_rows")  # features and rejects committed, the pool rows not yet
    killed = subprocess.run([sys.executable, "-m", "alray.cli", "score", str(path), "--run-id", "r2"],
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == 137, killed.stderr[-2000:]
    lake = Lake.from_output(config.output)
    assert lake.read_run("pool_rows", "r2").num_rows == 0 and lake.read_run("features", "r2").num_rows
    rerun = subprocess.run([sys.executable, "-m", "alray.cli", "score", str(path), "--run-id", "r2"],
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    calm = Lake.from_output(configs["calm"].output)
    for source in (lake, calm):
        row = source.read_run("runs", "r2").to_pylist()[0]
        assert (row["status"], row["n_scored"], row["n_reused"], row["reused_from"]) == ("succeeded", 20, 200, "base")
    assert _features(config, "r2").equals(_features(configs["calm"], "r2"))
    for name, columns in (("rejects", ["id", "reason"]), ("pool_rows", ["id", "row_hash", "source"])):
        assert (lake.read_run(name, "r2", columns=columns).sort_by("id")
                .equals(calm.read_run(name, "r2", columns=columns).sort_by("id")))
