"""Benchmark of the lake write path: a 1,000,000-row ranking committed to a Delta table.

Run ``python benchmarks/lake_write.py [--rows N] [--files F]``; figures are printed and written as
JSON to ``benchmarks/results/lake_write.json``. A "workers" process first writes the ranking as F
parquet files into a staging folder (what Spark tasks do); then a fresh "driver" process commits
them, and its time and peak resident memory are measured, for two paths:

- ``commit_files``: the staged files move into the table and one commit adds them (alray's path);
- ``stream``: the driver reads the staged files batch by batch and writes them with delta-rs
  (the earlier path: bounded memory, but every row passes through the driver).

Each path commits the run twice (a first write, then a rerun replacing it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _measure import PeakMemory

try:
    from alray.lake import commit_files, iter_batches, list_parquet, read_run, reader_from_batches, replace_run
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from alray.lake import commit_files, iter_batches, list_parquet, read_run, reader_from_batches, replace_run

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RUN_ID = "bench-1"


def ranking_schema() -> pa.Schema:
    """The ranking table's schema (alray.tables.RANKING_SCHEMA)."""
    from alray.tables import RANKING_SCHEMA

    return RANKING_SCHEMA


def _column(field: pa.Field, start: int, n: int, rng: np.random.Generator) -> pa.Array:
    kind = field.type
    if field.name == "id":
        return pa.array([f"sample-{i:09d}" for i in range(start, start + n)], kind)
    if field.name == "rank":
        return pa.array(np.arange(start + 1, start + n + 1), kind)
    if pa.types.is_boolean(kind):
        return pa.array(np.arange(start, start + n) < 1000, kind)
    if pa.types.is_floating(kind):
        return pa.array(rng.random(n), kind)
    if pa.types.is_integer(kind):
        return pa.array(rng.integers(0, 1000, n), kind)
    if pa.types.is_timestamp(kind):
        return pa.array([dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)] * n, kind)
    if pa.types.is_string(kind):
        return pa.array(["uncertainty_weighted_diversity(bald^1)"] * n, kind)
    return pa.nulls(n, kind)


def write_staged(folder: str, n_rows: int, n_files: int, seed: int) -> None:
    """The workers' side: the ranking, without run_id (the partition column), as n_files parquet files."""
    schema = pa.schema([f for f in ranking_schema() if f.name != "run_id"])
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    bounds = np.linspace(0, n_rows, n_files + 1).astype(int)
    for i, (start, stop) in enumerate(itertools.pairwise(bounds)):
        table = pa.Table.from_arrays([_column(f, int(start), int(stop - start), rng) for f in schema], schema=schema)
        pq.write_table(table, os.path.join(folder, f"part-{i:05d}.parquet"))


def drive(mode: str, staged: list[str], table: str) -> dict[str, Any]:
    """The driver's side: commit ``staged`` as run RUN_ID of ``table`` by ``mode``; time and memory."""
    import psutil

    schema = ranking_schema()
    baseline = psutil.Process().memory_info().rss
    with PeakMemory() as rss:
        begin = time.perf_counter()
        if mode == "commit_files":
            n_rows = commit_files(table, staged, RUN_ID)
        else:
            n_rows = 0

            def batches() -> Any:
                nonlocal n_rows
                for path in staged:
                    for batch in iter_batches(_reader(path)):
                        n_rows += batch.num_rows
                        run_id = pa.array([RUN_ID] * batch.num_rows, pa.string())
                        yield pa.RecordBatch.from_arrays(
                            [run_id if f.name == "run_id" else batch.column(f.name) for f in schema], schema=schema)

            replace_run(table, reader_from_batches(schema, batches()), RUN_ID)
        seconds = time.perf_counter() - begin
    return {"mode": mode, "rows": n_rows, "seconds": round(seconds, 3),
            "driver_rss_baseline_mib": round(baseline / 2**20, 1),
            "driver_rss_peak_mib": round(rss.driver_peak / 2**20, 1),
            "driver_rss_growth_mib": round((rss.driver_peak - baseline) / 2**20, 1),
            "driver_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _reader(path: str) -> pa.RecordBatchReader:
    parquet = pq.ParquetFile(path)
    return pa.RecordBatchReader.from_batches(parquet.schema_arrow, parquet.iter_batches(batch_size=65536))


def _subprocess(*args: str) -> dict[str, Any]:
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    """Stage, commit by each path twice, check the table, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=16, help="staged parquet files (Spark tasks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS_DIR / "lake_write.json"))
    parser.add_argument("--role", choices=["main", "workers", "driver"], default="main", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="commit_files", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--table", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "workers":
        begin = time.perf_counter()
        write_staged(args.folder, args.rows, args.files, args.seed)
        print(json.dumps({"seconds": round(time.perf_counter() - begin, 3)}))
        return
    if args.role == "driver":
        print(json.dumps(drive(args.mode, list_parquet(args.folder), args.table)))
        return

    root = tempfile.mkdtemp(prefix="alray-lake-write-")
    try:
        results = []
        for mode in ("commit_files", "stream"):
            table = os.path.join(root, mode, "ranking")
            for attempt in ("first", "rerun"):
                folder = os.path.join(root, mode, f"staging-{attempt}")
                staged = _subprocess("--role", "workers", "--folder", folder, "--rows", str(args.rows),
                                     "--files", str(args.files), "--seed", str(args.seed))
                figures = _subprocess("--role", "driver", "--mode", mode, "--folder", folder, "--table", table)
                figures.update(attempt=attempt, staging_write_seconds=staged["seconds"])
                results.append(figures)
                print(json.dumps(figures))
            assert read_run(table, RUN_ID, columns=["id"]).num_rows == args.rows  # the rerun replaced, once
        report = {
            "benchmark": "lake_write", "rows": args.rows, "staged_files": args.files,
            "schema": ranking_schema().names, "results": results,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
            "command": " ".join(["python", "benchmarks/lake_write.py", *sys.argv[1:]]),
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
