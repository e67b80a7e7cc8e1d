"""Numbering the ranking: a window over the whole frame against alray's range-partitioned rank.

Run ``python benchmarks/ranking.py [--rows N] [--master local[2]]``; figures are printed and
written as JSON to ``benchmarks/results/ranking.json``. A parquet table of N rows shaped like the
frame the selection stage ranks (id, selected, score, weight, diversity, parts, nearest distance,
pick rank for the first 1,000) is numbered two ways, each result written to parquet:

- ``window``: ``row_number()`` over a window with no partition, as the stage did before: Spark
  moves every row into one task to sort it;
- ``range``: :func:`alray.stages.select.global_rank`: a range-partitioned sort, a number
  within each partition, an offset per partition.

Reported per way: seconds, the largest number of rows one task held in the numbering step, and
whether both ways give the same (id, rank) pairs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _measure import write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_frame(path: Path, n_rows: int, *, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pick = np.full(n_rows, -1)
    pick[rng.choice(n_rows, size=min(1_000, n_rows), replace=False)] = np.arange(1, min(1_000, n_rows) + 1)
    scores = np.round(rng.random(n_rows), 4)  # ties, broken by id
    table = pa.table({
        "id": pa.array([f"s{i:08d}" for i in rng.permutation(n_rows)]),
        "selected": pa.array(pick > 0),
        "score": pa.array(scores),
        "weight": pa.array(rng.random(n_rows)),
        "diversity": pa.array(rng.random(n_rows)),
        "parts": pa.array([[("weights:bald", float(s))] for s in scores], pa.map_(pa.string(), pa.float64())),
        "_nearest": pa.array(rng.random(n_rows)),
        "pick_order": pa.array([int(p) if p > 0 else None for p in pick], pa.int32()),
    })
    path.mkdir(parents=True)
    for i, start in enumerate(range(0, n_rows, 100_000)):
        pq.write_table(table.slice(start, 100_000), path / f"part-{i:05d}.parquet")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--output", default="benchmarks/results/ranking.json")
    args = parser.parse_args(argv)

    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from alray.config import SparkConfig
    from alray.engines import spark_session
    from alray.stages.select import global_rank

    root = Path(tempfile.mkdtemp(prefix="alray-ranking-"))
    try:
        write_frame(root / "frame", args.rows)
        spark = spark_session(SparkConfig(master=args.master, conf={"spark.driver.memory": "4g"}))
        frame = spark.read.parquet(str(root / "frame"))
        order = [F.col("pick_order").asc_nulls_last(), F.desc("score"), F.asc("id")]
        ways = {
            "window": lambda: contextlib.nullcontext(
                frame.withColumn("rank", F.row_number().over(Window.orderBy(*order)).cast("long"))),
            "range": lambda: global_rank(frame, order),
        }
        results: dict[str, Any] = {"benchmark": "ranking", "rows": args.rows, "master": args.master,
                                   "machine": {"cpus": os.cpu_count()}, "ways": {}}
        for name, build in ways.items():
            out = root / name
            start = time.perf_counter()
            with build() as ranked:
                ranked.write.parquet(str(out))
            seconds = time.perf_counter() - start
            # Rows per task of the numbering step: the rows of each written file come from one task.
            per_file = [pq.ParquetFile(f).metadata.num_rows for f in sorted(out.glob("*.parquet"))]
            results["ways"][name] = {"seconds": round(seconds, 2), "files": len(per_file),
                                     "largest_task_rows": max(per_file)}
            print(f"{name:>6}: {seconds:7.2f} s, {len(per_file)} output files, largest {max(per_file):,} rows",
                  flush=True)
        pairs = {name: pq.read_table(root / name, columns=["id", "rank"]).sort_by("id") for name in ways}
        results["same_ranks"] = all(pairs["window"].column(c).equals(pairs["range"].column(c)) for c in ("id", "rank"))
        results["speedup"] = round(results["ways"]["window"]["seconds"] / results["ways"]["range"]["seconds"], 2)
        print(f"same (id, rank) pairs: {results['same_ranks']}; range is {results['speedup']}x the window's speed")
        write_results(Path(args.output), results)
        spark.stop()
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
