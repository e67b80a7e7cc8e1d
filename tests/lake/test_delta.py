"""Delta tables keyed by run id: a rerun replaces its run, other runs stay, schemas merge."""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from alray.errors import InputError
from alray.lake import Lake, commit_files, read_run, replace_run, run_files
from tests.lake.conftest import run_rows, staged_file


def test_rerun_replaces_only_its_own_rows(tmp_path):
    table = str(tmp_path / "ranking")
    replace_run(table, run_rows("a", ["1", "2", "3"], 1.0), "a")
    replace_run(table, run_rows("b", ["1", "2"], 2.0), "b")
    replace_run(table, run_rows("a", ["9"], 3.0), "a")
    assert read_run(table, "a").column("id").to_pylist() == ["9"]
    assert sorted(read_run(table, "b").column("id").to_pylist()) == ["1", "2"]
    assert DeltaTable(table).to_pyarrow_dataset().count_rows() == 3


def test_new_columns_merge_into_the_schema(tmp_path):
    table = str(tmp_path / "features")
    replace_run(table, run_rows("a", ["1"], 1.0), "a")
    replace_run(table, run_rows("b", ["2"], 2.0).append_column("camera", pa.array(["c1"])), "b")
    merged = DeltaTable(table).to_pyarrow_dataset().to_table().sort_by("id")
    assert merged.column("camera").to_pylist() == [None, "c1"]


def test_streamed_input_is_written_whole(tmp_path):
    table = str(tmp_path / "t")
    data = run_rows("s", [str(i) for i in range(10_000)], 0.5)
    replace_run(table, pa.RecordBatchReader.from_batches(data.schema, data.to_batches(max_chunksize=777)), "s")
    assert read_run(table, "s").num_rows == 10_000


def test_unsafe_run_id_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unsafe run id"):
        replace_run(str(tmp_path / "t"), run_rows("x' OR '1'='1", ["1"], 1.0), "x' OR '1'='1")


# --- committing files written elsewhere ------------------------------------------------------

def test_commit_files_replaces_a_run_in_one_commit_without_reading_rows(tmp_path):
    table = str(tmp_path / "ranking")
    assert commit_files(table, [staged_file(tmp_path / "s1", ["1", "2"], 1.0),
                                staged_file(tmp_path / "s1", ["3"], 1.0)], "a") == 3
    commit_files(table, [staged_file(tmp_path / "s2", ["4"], 2.0)], "b")
    version = DeltaTable(table).version()
    before = read_run(table, "b")
    # A rerun replaces run a whole, in exactly one new table version, and leaves run b alone.
    assert commit_files(table, [staged_file(tmp_path / "s3", ["9"], 3.0)], "a") == 1
    assert DeltaTable(table).version() == version + 1
    assert read_run(table, "a").column("id").to_pylist() == ["9"]
    assert read_run(table, "b").equals(before)
    # the staged files moved into the table; run_files hands them to engines without a Delta reader
    assert not list((tmp_path / "s3").iterdir())
    assert all("run_id=a" in f for f in run_files(table, "a"))
    history = DeltaTable(table).history(1)[0]
    assert history["operation"] == "WRITE" and history["alray.run_id"] == "a"


def test_rerun_with_identical_files_gives_identical_rows(tmp_path):
    table = str(tmp_path / "features")
    for attempt in range(2):
        commit_files(table, [staged_file(tmp_path / f"s{attempt}", ["1", "2", "3"], 0.5)], "a")
    rows = DeltaTable(table).to_pyarrow_dataset().to_table().sort_by("id")
    assert rows.num_rows == 3
    assert rows.column("id").to_pylist() == ["1", "2", "3"]


def test_a_retried_commit_that_already_landed_is_a_no_op(tmp_path):
    table = str(tmp_path / "t")
    commit_files(table, [staged_file(tmp_path / "s1", ["1"], 1.0)], "a", app_id="job-7", txn_version=42)
    version = DeltaTable(table).version()
    # the same transaction again (a driver retrying after a lost answer) changes nothing
    commit_files(table, [staged_file(tmp_path / "s2", ["1"], 1.0)], "a", app_id="job-7", txn_version=42)
    assert DeltaTable(table).version() == version
    assert DeltaTable(table).transaction_version("job-7") == 42
    assert read_run(table, "a").num_rows == 1


def test_empty_commit_clears_the_run_and_keeps_the_schema(tmp_path):
    table = str(tmp_path / "rejects")
    schema = pa.schema([("id", pa.string()), ("reason", pa.string())])
    commit_files(table, [], "a", schema=schema)
    assert DeltaTable(table).schema().to_arrow().names == ["run_id", "id", "reason"]
    (tmp_path / "s").mkdir()
    staged = tmp_path / "s" / "r.parquet"
    pq.write_table(pa.table({"id": ["x"], "reason": ["corrupt"]}), staged)
    commit_files(table, [str(staged)], "b", schema=schema)
    commit_files(table, [], "b", schema=schema)
    assert read_run(table, "b").num_rows == 0


def test_commit_files_merges_new_columns_and_refuses_changed_types(tmp_path):
    table = str(tmp_path / "features")
    commit_files(table, [staged_file(tmp_path / "s1", ["1"], 1.0)], "a")
    commit_files(table, [staged_file(tmp_path / "s2", ["2"], 2.0, camera=["c1"])], "b")
    merged = DeltaTable(table).to_pyarrow_dataset().to_table().sort_by("id")
    assert merged.column("camera").to_pylist() == [None, "c1"]
    bad = tmp_path / "s3"
    bad.mkdir()
    pq.write_table(pa.table({"id": ["3"], "score": ["high"]}), bad / "p.parquet")
    with pytest.raises(InputError, match=r"column 'score' is double in the table but string"):
        commit_files(table, [str(bad / "p.parquet")], "c")


def test_staged_files_with_a_run_id_column_are_refused(tmp_path):
    (tmp_path / "s").mkdir()
    pq.write_table(pa.table({"run_id": ["a"], "id": ["1"]}), tmp_path / "s" / "p.parquet")
    with pytest.raises(InputError, match="holds a run_id column"):
        commit_files(str(tmp_path / "t"), [str(tmp_path / "s" / "p.parquet")], "a")


@pytest.mark.parametrize("how", ["commit_files", "replace_run"])
def test_two_runs_writing_at_the_same_time_both_land(tmp_path, how):
    table = str(tmp_path / "ranking")
    commit_files(table, [staged_file(tmp_path / "seed", ["0"], 0.0)], "seed")
    errors: list[BaseException] = []

    def write(run_id: str) -> None:
        try:
            for attempt in range(4):
                ids = [f"{run_id}-{i}" for i in range(50 + attempt)]
                if how == "commit_files":
                    commit_files(table, [staged_file(tmp_path / f"{run_id}-{attempt}", ids, 1.0)], run_id)
                else:
                    replace_run(table, run_rows(run_id, ids, 1.0), run_id)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(run_id,)) for run_id in ("r1", "r2", "r3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for run_id in ("r1", "r2", "r3"):
        assert read_run(table, run_id).num_rows == 53  # the last of each run's four writes, once
    assert read_run(table, "seed").num_rows == 1


def _stale_first_writes(write_a, write_b) -> None:
    """Run two guarded writes in threads so that both read the lake before either writes and ``a`` commits
    first: ``write_x(wait)`` calls ``wait()`` inside its update, on its first read only."""
    b_read, a_done = threading.Event(), threading.Event()

    def first_only(action):
        pending = [True]

        def wait() -> None:
            if pending.pop() if pending else False:
                action()
        return wait

    def a() -> None:
        write_a(first_only(lambda: b_read.wait(10)))
        a_done.set()

    def b() -> None:
        write_b(first_only(lambda: (b_read.set(), a_done.wait(10))))

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_the_first_write_of_a_guarded_table_is_create_only(tmp_path):
    """Two updates of one run read "no table yet"; the first creates the table, and the second, whose read
    is then stale, must not overwrite it: its create-only write fails, and it reads and updates again."""
    lake = Lake(str(tmp_path / "lake"))
    schema = pa.schema([("run_id", pa.string()), ("id", pa.string())])

    def adding(item: str):
        def write(wait) -> None:
            def update(rows: pa.Table) -> pa.Table:
                wait()
                return pa.concat_tables([rows.select(schema.names).cast(schema),
                                         pa.table({"run_id": ["r1"], "id": [item]}, schema=schema)])
            lake.update_run("round_items", "r1", update, schema=schema)
        return write

    _stale_first_writes(adding("a"), adding("b"))
    assert sorted(lake.read_table("round_items").column("id").to_pylist()) == ["a", "b"]
