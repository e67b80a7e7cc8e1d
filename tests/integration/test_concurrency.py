"""Exactly once under concurrency: runs with different run ids writing one lake at once (threads and
processes, on local disk and on a loopback S3), and labels imported by several processes at once.

Each writer does what a run does to the lake, in the same order: its runs row, the features
files its workers staged (committed in one transaction), its ranking, its round and its final
runs row. Every commit must land and no row may appear twice.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import multiprocessing
import subprocess
import sys
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from alray.lake import Lake, filesystem_for
from alray.lake.filesystems import join_path
from alray.lake.labels import add_labels, read_labels
from alray.lake.rounds import read_items, record_selection
from alray.tables import RUNS_SCHEMA
from tests.conftest import demo_config
from tests.lake.conftest import in_threads

pytestmark = pytest.mark.slow

ROWS, PICKS = 40, 5
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


def _runs_row(run_id: str, status: str) -> pa.Table:
    row = {name: None for name in RUNS_SCHEMA.names}
    row.update(run_id=run_id, status=status, started_at=T0, n_selected=PICKS)
    return pa.Table.from_pylist([row], schema=RUNS_SCHEMA)


def write_like_a_run(root: str, options: dict[str, str] | None, run_id: str) -> str:
    """What a run writes to the lake at ``root``, in order; returns the run id."""
    lake = Lake(root, storage_options=options)
    lake.replace_run("runs", _runs_row(run_id, "running"), run_id, partition=False)
    ids = [f"{run_id}-{i:03d}" for i in range(ROWS)]
    staging = lake.staging(run_id, "features")
    filesystem, inner = filesystem_for(staging, options)
    filesystem.create_dir(inner, recursive=True)
    files = []
    for part in range(2):  # two workers' files
        half = ids[part::2]
        path = f"{inner}/part-{part}.parquet"
        pq.write_table(pa.table({"id": half, "entropy": [0.5] * len(half)}), path, filesystem=filesystem)
        files.append(join_path(staging, f"part-{part}.parquet"))
    assert lake.commit_files("features", files, run_id) == ROWS
    lake.replace_run("ranking", pa.table({"run_id": [run_id] * ROWS, "id": ids, "rank": list(range(1, ROWS + 1)),
                                          "selected": [i < PICKS for i in range(ROWS)]}), run_id)
    record_selection(lake, run_id, at=T0)
    lake.replace_run("runs", _runs_row(run_id, "succeeded"), run_id, partition=False)
    lake.clear_staging(run_id)
    return run_id


def assert_each_row_once(root: str, options: dict[str, str] | None, run_ids: list[str]) -> None:
    lake = Lake(root, storage_options=options)
    runs = lake.read_table("runs", columns=["run_id", "status"]).to_pylist()
    assert Counter(row["run_id"] for row in runs) == Counter(run_ids)
    assert {row["status"] for row in runs} == {"succeeded"}
    for name, per_run in (("features", ROWS), ("ranking", ROWS), ("round_items", PICKS)):
        rows = lake.read_table(name, columns=["run_id", "id"]).to_pylist()
        assert Counter(row["run_id"] for row in rows) == dict.fromkeys(run_ids, per_run), name
        assert len({(row["run_id"], row["id"]) for row in rows}) == len(rows), f"{name}: a row twice"
    assert {row["state"] for row in read_items(lake).to_pylist()} == {"selected"}


def _in_threads(root: str, options: dict[str, str] | None, run_ids: list[str]) -> None:
    in_threads(write_like_a_run, [(root, options, run_id) for run_id in run_ids])


def _in_processes(root: str, options: dict[str, str] | None, run_ids: list[str]) -> None:
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as separate jobs would be
    with concurrent.futures.ProcessPoolExecutor(len(run_ids), mp_context=context) as pool:
        done = list(pool.map(write_like_a_run, [root] * len(run_ids), [options] * len(run_ids), run_ids))
    assert done == run_ids


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_concurrent_runs_on_local_disk_keep_each_row_once(tmp_path, how):
    run_ids = [f"{how}-{i}" for i in range(6 if how == "threads" else 4)]
    root = str(tmp_path / "lake")
    (_in_threads if how == "threads" else _in_processes)(root, None, run_ids)
    assert_each_row_once(root, None, run_ids)
    # a second wave, one of them a rerun of a run id of the first: that run is replaced, not doubled
    more = [f"{how}-again-{i}" for i in range(2)] + [run_ids[0]]
    _in_threads(root, None, more)
    assert_each_row_once(root, None, run_ids + more[:2])


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_concurrent_runs_on_s3_keep_each_row_once(s3, how):
    run_ids = [f"s3-{how}-{i}" for i in range(5 if how == "threads" else 3)]
    root = f"s3://lake/concurrent-{how}"
    (_in_threads if how == "threads" else _in_processes)(root, s3, run_ids)
    assert_each_row_once(root, s3, run_ids)


def import_rows(root: str, options: dict[str, str] | None, rows: list[dict]) -> str | None:
    """One import-labels process: the rows of an export into the labels table."""
    return add_labels(Lake(root, storage_options=options), rows, now=T0).import_id


def _label_rows(prefix: str, n: int) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "label": "cat", "source": f"label-studio:project/1/annotation/{prefix}{i}",
             "round": "r1", "labeled_at": T0} for i in range(n)]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_one_export_imported_by_several_processes_at_once_lands_once(tmp_path, s3, where):
    root, options = (str(tmp_path / "lake"), None) if where == "local" else ("s3://lake/labels-race", s3)
    same, other = _label_rows("same", 12), _label_rows("other", 3)
    batches = [same, same, same, other]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(len(batches), mp_context=context) as pool:
        import_ids = list(pool.map(import_rows, [root] * len(batches), [options] * len(batches), batches))
    # the same rows make the same partition (or nothing, for an import that saw them already committed)
    assert len({i for i in import_ids[:3] if i is not None}) == 1
    ids = read_labels(Lake(root, storage_options=options)).column("id").to_pylist()
    assert sorted(ids) == sorted(row["id"] for row in same + other)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_overlapping_exports_imported_by_processes_at_once_land_once(tmp_path, s3, where):
    """A project's export at 10, 12 and 14 labels and another project's, imported at once: the shared rows
    are new to each import's read of the table, and each lands once."""
    root, options = (str(tmp_path / "lake"), None) if where == "local" else ("s3://lake/labels-overlap", s3)
    rows, other = _label_rows("grown", 14), _label_rows("other", 3)
    batches = [rows[:10], rows[:12], rows, rows[:12] + other]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(len(batches), mp_context=context) as pool:
        list(pool.map(import_rows, [root] * len(batches), [options] * len(batches), batches))
    labels = read_labels(Lake(root, storage_options=options))
    assert sorted(labels.column("id").to_pylist()) == sorted(row["id"] for row in rows + other)


def _import_file(path, ids: list[str]) -> str:
    tasks = [{"id": n, "project": 7, "data": {"alray_id": item, "alray_round": "seed"},
              "annotations": [{"id": 100 + n, "updated_at": "2026-03-01T00:00:00Z",
                               "result": [{"type": "choices", "from_name": "label", "to_name": "image",
                                           "value": {"choices": [str(n % 10)]}}]}]}
             for n, item in enumerate(ids)]
    path.write_text(json.dumps(tasks))
    return str(path)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_real_runs_and_imports_in_processes_at_once_keep_each_row_once(demo_files, tmp_path, request, where):
    """Two ``alray run`` and two ``alray import-labels`` (overlapping exports) as separate processes on one
    lake (local disk, loopback S3) at the same time: each run's rows land once, each label once."""
    config = demo_config(demo_files, tmp_path / "lake", engine="local", n_samples=5)
    if where == "s3":
        config.output.path, config.output.storage_options = "s3://lake/real-processes", request.getfixturevalue("s3")
    config.score.mc_samples = 2
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    ids = [f"digit-{i:05d}" for i in range(200, 212)]
    commands = [["run", str(path), "--run-id", "one", "--json"], ["run", str(path), "--run-id", "two", "--json"],
                ["import-labels", str(path), _import_file(tmp_path / "a.json", ids[:10]), "--json"],
                ["import-labels", str(path), _import_file(tmp_path / "b.json", ids), "--json"]]
    jobs = [subprocess.Popen([sys.executable, "-m", "alray.cli", *command], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for command in commands]
    results = [job.communicate(timeout=600) for job in jobs]
    for job, (_, err) in zip(jobs, results, strict=True):
        assert job.returncode == 0, err[-3000:]
    runs = [json.loads(out) for out, _ in results[:2]]

    lake = Lake.from_output(config.output)
    assert Counter(r["run_id"] for r in lake.read_table("runs", columns=["run_id"]).to_pylist()) == {
        "one": 1, "two": 1}
    for name in ("features", "ranking", "round_items"):
        rows = lake.read_table(name, columns=["run_id", "id"]).to_pylist()
        assert len({(row["run_id"], row["id"]) for row in rows}) == len(rows), f"{name}: a row twice"
    features = Counter(r["run_id"] for r in lake.read_table("features", columns=["run_id"]).to_pylist())
    assert features == {run["run_id"]: run["counts"]["pool"] - run["counts"]["rejected"] for run in runs}
    picks = Counter(r["run_id"] for r in read_items(lake).to_pylist())
    assert picks == {"one": 5, "two": 5}
    assert sorted(read_labels(lake).column("id").to_pylist()) == ids
