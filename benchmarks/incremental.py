"""Incremental scoring: a 1,000,000-row pool scored, then grown by 1% and scored again.

The pool, model and job are ``load.py``'s (64-float digit vectors in files of 50,000 rows, a
FeatureMLP, T=20 MC dropout). Each run is ``python -m alray.cli score CONFIG --run-id ID --json``
in a subprocess, as a user runs it, in one lake:

1. ``first``: the whole pool (nothing to reuse; every row is also hashed for ``pool_rows``);
2. ``unchanged``: the same pool again: no row to score (Ray's start, the check of the pool's ids,
   the copy of the first run's files; no model is loaded);
3. ``one_row``: one new row: the fixed cost of a run that scores anything (the actor's start and
   the pipeline's), the start-up the figures take apart;
4. ``grown``: one more file of 1% new rows: only those are scored.

With ``--check`` a fourth run scores the grown pool whole (``run.incremental: false``) in another
lake, and the features of ``grown`` are compared with it, bit for bit.

    python benchmarks/incremental.py                # 1M rows, grown by 1%
    python benchmarks/incremental.py --rows 100000 --check
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import write_results
from load import ROWS_PER_FILE, SEED, job_config, write_labeled, write_model, write_pool


def score(config: dict[str, Any], path: Path, run_id: str) -> dict[str, Any]:
    """One ``alray score`` run; its summary and wall time."""
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "alray.cli", "score", str(path), "--run-id", run_id, "--json"],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"alray score exited {done.returncode}:\n{done.stderr[-3000:]}")
    summary = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    lines = [line for line in done.stderr.splitlines() if line.startswith("[alray] score:")]
    print(f"{run_id}: {wall:.1f}s wall, score stage {summary['timings']['score_s']:.1f}s, counts {summary['counts']}",
          flush=True)
    for line in lines:
        print(f"  {line}", flush=True)
    phases = {k: v for k, v in summary["timings"].items() if k.startswith("score")}
    return {"run_id": run_id, "wall_s": round(wall, 1), "timings": phases, "counts": summary["counts"],
            "reused_from": summary.get("reused_from")}


def grow(pool: Path, n_rows: int, n_new: int, *, now: dt.datetime) -> None:
    """Add one file of ``n_new`` rows, ids after the pool's, drawn like the pool's rows."""
    scratch = Path(tempfile.mkdtemp(prefix="alray-grow-"))
    try:
        write_pool(scratch, n_new, seed=SEED + 1, now=now)
        table = pa.concat_tables([pq.read_table(f) for f in sorted(scratch.glob("*.parquet"))])
        ids = pa.array([f"s{i:08d}" for i in range(n_rows, n_rows + n_new)], pa.string())
        table = table.set_column(table.column_names.index("id"), "id", ids)
        pq.write_table(table, pool / f"part-grown-{n_rows:08d}.parquet")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def same_features(lake: Path, run_id: str, other_lake: Path, other_run: str) -> dict[str, Any]:
    """Whether two runs' features tables hold the same rows and values: each column's rows hashed by
    their bits (:func:`alray.row_hashes.row_hashes`, NaNs included), after sorting by id."""
    from deltalake import DeltaTable

    from alray.row_hashes import row_hashes

    def read(root: Path, run: str) -> pa.Table:
        table = DeltaTable(str(root / "features")).to_pyarrow_dataset().to_table(filter=pc.field("run_id") == run)
        return table.drop_columns(["run_id"]).sort_by("id")

    a, b = read(lake, run_id), read(other_lake, other_run)
    same_rows = a.num_rows == b.num_rows and a.column_names == b.column_names
    differing = [name for name in a.column_names if not same_rows or not row_hashes(a.select([name])).equals(
        row_hashes(b.select([name])))]
    return {"rows": a.num_rows, "other_rows": b.num_rows, "differing_columns": differing,
            "identical": same_rows and not differing}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the first pool (default 1,000,000)")
    parser.add_argument("--growth", type=float, default=0.01, help="share of new rows (default 0.01)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--check", action="store_true", help="also score the grown pool whole and compare")
    parser.add_argument("--workdir", help="where the pool and lakes go (default: a temporary folder)")
    parser.add_argument("--output", default="benchmarks/results/incremental.json")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="alray-incremental-", dir=args.workdir))
    now = dt.datetime.now(dt.timezone.utc)
    try:
        pool = root / "pool"
        start = time.perf_counter()
        write_pool(pool, args.rows, seed=SEED, now=now)
        accuracy = write_model(root / "model.pt", seed=SEED)
        write_labeled(root / "labeled", args.rows, seed=SEED)
        print(f"pool of {args.rows:,} rows written in {time.perf_counter() - start:.1f}s; model accuracy "
              f"{accuracy:.3f}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
        config = job_config(root, pool, root / "labeled", args.batch_size)
        config["run"] = {"seed": SEED}
        runs = [score(config, root / "job.yaml", "first"), score(config, root / "job.yaml", "unchanged")]
        grow(pool, args.rows, 1, now=now)
        runs.append(score(config, root / "job.yaml", "one_row"))
        n_new = round(args.rows * args.growth)
        grow(pool, args.rows + 1, n_new, now=now)
        runs.append(score(config, root / "job.yaml", "grown"))
        load = os.getloadavg()
        first, unchanged, one_row, grown = (r["timings"]["score_s"] for r in runs)
        results: dict[str, Any] = {
            "benchmark": "incremental", "command": "python benchmarks/incremental.py " + " ".join(argv or sys.argv[1:]),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "load_average": load},
            "pool": {"rows": args.rows, "new_rows": [1, n_new], "payload": "features (64 float32)",
                     "rows_per_file": ROWS_PER_FILE},
            "runs": runs,
            "ratios": {"grown_over_first": round(grown / first, 4), "unchanged_over_first": round(unchanged / first, 4),
                       "one_row_over_first": round(one_row / first, 4),
                       "grown_minus_one_row_over_first": round((grown - one_row) / first, 4)},
        }
        print(json.dumps(results["ratios"]), flush=True)
        if args.check:
            full = {**config, "run": {"seed": SEED, "incremental": False},
                    "output": {"path": str(root / "full-lake")}}
            results["runs"].append(score(full, root / "full.yaml", "full"))
            results["check"] = same_features(root / "lake", "grown", root / "full-lake", "full")
            print(f"grown against a full rescore: {results['check']}", flush=True)
        write_results(Path(args.output), results)
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
