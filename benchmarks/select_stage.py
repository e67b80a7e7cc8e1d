"""The selection stage at scale, phase by phase, against the same two-stage computation in NumPy.

Builds (once per size, cached under ``--workdir``) a features table shaped like the score stage's
output for a pool of feature vectors: 64-d embeddings (scikit-learn's digits plus noise), the MC
scores and ``probs`` over 10 classes, ``captured_at`` (4% older than 90 days) and a labeled set of
1,000 ids. Then, for each ``--engines`` entry, runs ``alray select`` as a subprocess, as a user
would, with the load benchmark's selection (BALD-weighted diversity, 1,000 picks, 16 partitions,
the ``within_last 90d`` filter) and reads the stage's phase timings from its ``--json`` summary.

The reference, ``numpy``: the two-stage k-center of that selection (round one in the 16 hash
partitions, then the merge round) on in-memory arrays, round one split over two processes forked
after the candidates, their greedy weights and their partitions are in memory; it reads, filters,
ranks and writes nothing. The target of issue 17: the Spark stage within 2x of it and 60 s.

    python benchmarks/select_stage.py                          # 1M rows: spark, local, numpy
    python benchmarks/select_stage.py --rows 100000 --engines spark,numpy
    python benchmarks/select_stage.py --strategy auto          # the default strategy instead
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_FEATURES = 64
N_CLASSES = 10
N_LABELED = 1_000
ROWS_PER_FILE = 50_000
SEED = 0
RUN_ID = "bench"
STRATEGIES = {
    "diversity-bald": [{"input": "embeddings", "strategy": "diversity"},
                       {"input": "bald", "strategy": "weights", "strength": 1.0}],
    "auto": None,
}


def build_features(root: Path, n_rows: int, *, now: dt.datetime) -> Path:
    """Write this size's features table (Delta, run ``bench``) and labeled set once; return the lake."""
    from alray.lake import Lake
    from alray.tables import features_schema

    lake_path = root / f"lake-{n_rows}"
    done = lake_path / "_features_ready"
    if done.exists():
        return lake_path
    from sklearn.datasets import load_digits

    digits = (load_digits().data / 16.0).astype(np.float32)
    metadata = pa.schema([pa.field("captured_at", pa.timestamp("us", tz="UTC")), pa.field("camera_id", pa.string())])
    schema = features_schema(metadata)
    rng = np.random.default_rng(SEED)

    def batches() -> Any:
        for start in range(0, n_rows, ROWS_PER_FILE):
            n = min(ROWS_PER_FILE, n_rows - start)
            emb = digits[rng.integers(0, len(digits), size=n)] + rng.normal(0, 0.05, size=(n, N_FEATURES))
            logits = rng.normal(scale=2.0, size=(n, N_CLASSES))
            probs = np.exp(logits - logits.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            top = np.sort(probs, axis=1)
            entropy = -(probs * np.log(probs)).sum(1)
            age = rng.uniform(0, 60, size=n)
            stale = rng.random(n) < 0.04
            age[stale] = rng.uniform(120, 365, size=int(stale.sum()))
            columns: dict[str, pa.Array] = {
                "run_id": pa.array([RUN_ID] * n), "id": pa.array([f"s{i:08d}" for i in range(start, start + n)]),
                "embedding": _lists(emb.astype(np.float32)), "probs": _lists(probs.astype(np.float32)),
                "pred": pa.array(probs.argmax(1).astype(np.int32)), "entropy": pa.array(entropy),
                "margin": pa.array(1.0 - (top[:, -1] - top[:, -2])), "least_confidence": pa.array(1.0 - top[:, -1]),
                "variation_ratio": pa.array(rng.random(n)), "bald": pa.array(rng.random(n) * entropy),
                "mean_std": pa.array(rng.random(n) * 0.3),
                "captured_at": pa.array([now - dt.timedelta(days=float(d)) for d in age],
                                        pa.timestamp("us", tz="UTC")),
                "camera_id": pa.array([f"cam-{c}" for c in rng.integers(0, 8, size=n)]),
            }
            yield pa.RecordBatch.from_arrays(
                [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in schema], schema=schema)

    features_schema_out = pa.schema([f for f in schema if f.name != "_reject_reason"])
    reader = pa.RecordBatchReader.from_batches(
        features_schema_out, (b.drop_columns(["_reject_reason"]) for b in batches()))
    Lake(str(lake_path)).replace_run("features", reader, RUN_ID)
    labeled = np.sort(np.random.default_rng(SEED + 1).choice(n_rows, size=min(N_LABELED, n_rows), replace=False))
    (lake_path / "labeled").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [f"s{i:08d}" for i in labeled], "label": np.zeros(len(labeled), np.int64)}),
                   lake_path / "labeled" / "part-00000.parquet")
    done.write_text("ok\n")
    return lake_path


def _lists(matrix: np.ndarray) -> pa.Array:
    n, width = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel(), pa.float32()))


def job_config(lake: Path, strategy: str, engine: str, k: int, n_partitions: int) -> dict[str, Any]:
    """The load benchmark's selection on this lake."""
    selection: dict[str, Any] = {
        "n_samples": k, "n_partitions": n_partitions, "engine": engine,
        "filters": [{"column": "captured_at", "op": "within_last", "value": "90d"}],
    }
    if STRATEGIES[strategy] is not None:
        selection["strategies"] = STRATEGIES[strategy]
    return {
        "run": {"seed": SEED, "run_id": RUN_ID},
        "pool": {"path": str(lake / "pool-not-read"), "format": "parquet"},
        "labeled": {"path": str(lake / "labeled")},
        "selection": selection,
        "output": {"path": str(lake)},
        "spark": {"master": "local[2]", "conf": {"spark.driver.memory": "4g"}},
    }


def run_cli(lake: Path, strategy: str, engine: str, k: int, n_partitions: int) -> dict[str, Any]:
    """``alray select`` as a subprocess; its wall time and the summary's timings and counts."""
    config = lake / f"select-{engine}-{strategy}.yaml"
    config.write_text(yaml.safe_dump(job_config(lake, strategy, engine, k, n_partitions)))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "alray.cli", "select", str(config), "--run-id", RUN_ID, "--json"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"alray select ({engine}) exited {done.returncode}:\n{done.stderr[-3000:]}")
    summary = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    timings = summary["timings"]
    from alray.lake import Lake

    ranking = Lake(str(lake)).read_run("ranking", RUN_ID).sort_by("rank")
    picked = ranking.filter(ranking.column("selected")).column("id").to_pylist()
    return {"engine": engine, "wall_s": round(wall, 2), "select_s": timings.get("select_s"),
            "phases": {k.split(".", 1)[1]: v for k, v in sorted(timings.items()) if k.startswith("select.")},
            "counts": summary["counts"], "coverage_radius": summary["coverage_radius"],
            "strategy": summary.get("strategy"), "picked_ids": picked}


def numpy_reference(lake: Path, k: int, n_partitions: int, *, processes: int = 2) -> dict[str, Any]:
    """The two-stage k-center of the BALD-weighted selection on in-memory arrays, round one in
    ``processes`` forked processes: its wall time (the rounds only) and its picks in order.

    The candidates, their greedy weights and their hash partitions come from the selection core's
    own functions (as :func:`alray.selection.local.select_table` prepares them), before the clock."""
    from alray.config import SelectionConfig
    from alray.lake import Lake
    from alray.selection.batches import TableCandidates, spark_batches, spark_partitions
    from alray.selection.filters import rejection_reasons
    from alray.selection.objectives import greedy_table, with_objectives
    from alray.selection.plan import plan_selection
    from alray.selection.result import LABELED_REASON
    from alray.selection.rounds import GreedySpec, merge_round, sorted_by_id
    from alray.strategies.base import embedding_matrix

    config = job_config(lake, "diversity-bald", "local", k, n_partitions)["selection"]
    selection = SelectionConfig.model_validate(config)
    features = Lake(str(lake)).read_run("features", RUN_ID)
    labeled_ids = set(pq.read_table(lake / "labeled", columns=["id"]).column("id").to_pylist())
    ids = np.array(features.column("id").to_pylist(), dtype=object)
    plan = plan_selection(selection, features.column_names)
    is_labeled = np.array([i in labeled_ids for i in ids])
    reasons = rejection_reasons(features, plan.filters, dt.datetime.now(dt.timezone.utc),
                                before=[(is_labeled, LABELED_REASON)])
    candidates = sorted_by_id(features.filter(pa.array(reasons == None)))  # noqa: E711
    labeled = embedding_matrix(sorted_by_id(features.filter(pa.array(is_labeled))))
    parts = spark_partitions(candidates, n_partitions, SEED)
    cut = spark_batches(parts, n_partitions, SEED)
    source = TableCandidates(candidates, features, SEED, cut, parts, n_partitions, selection.oversample)
    rows = greedy_table(pa.concat_tables(with_objectives(cut, plan, source)), plan)
    spec = GreedySpec(n_select=k, oversample=selection.oversample, seed=SEED, labeled=labeled)
    global _PARTS, _SPEC, _N_PARTITIONS
    _PARTS = spark_partitions(rows, n_partitions, SEED)
    _SPEC, _N_PARTITIONS = spec, n_partitions
    context = multiprocessing.get_context("fork")
    with context.Pool(processes, initializer=_one_thread) as pool:
        pool.map(_noop, range(4 * processes))  # the processes exist before the clock starts
        start = time.perf_counter()
        union = pa.concat_tables([pq.read_table(pa.BufferReader(p))
                                  for p in pool.map(_round_one, range(n_partitions), chunksize=1)])
        round_one = time.perf_counter() - start
        picked, _ = merge_round(union, spec)
        seconds = time.perf_counter() - start
    return {"engine": "numpy", "processes": processes, "rounds_s": round(seconds, 2),
            "round_one_s": round(round_one, 2), "candidates": rows.num_rows, "union": union.num_rows,
            "picked": len(picked), "picked_ids": picked}


_PARTS: list[pa.Table] = []
_SPEC: Any = None
_N_PARTITIONS = 0


def _one_thread() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # one BLAS thread per process, as Spark gives its Python workers (OMP_NUM_THREADS)


def _noop(_: int) -> int:
    return 0


def _round_one(p: int) -> bytes:
    from alray.selection.rounds import local_centres

    sink = pa.BufferOutputStream()
    pq.write_table(local_centres(_PARTS[p], _N_PARTITIONS, _SPEC), sink)
    return sink.getvalue().to_pybytes()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=1_000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--engines", default="spark,local,numpy")
    parser.add_argument("--strategy", choices=list(STRATEGIES), default="diversity-bald")
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / "results" / "tmp" / "select_stage"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "select_stage.json"))
    args = parser.parse_args(argv)
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    lake = build_features(root, args.rows, now=dt.datetime.now(dt.timezone.utc))
    print(f"features: {args.rows:,} rows in {lake} ({time.perf_counter() - start:.1f}s)", flush=True)
    runs: list[dict[str, Any]] = []
    for engine in args.engines.split(","):
        if engine == "numpy":
            if args.strategy != "diversity-bald":
                print("numpy: the reference is the two-stage k-center (--strategy diversity-bald); skipped")
                continue
            figures = numpy_reference(lake, args.k, args.partitions)
        else:
            figures = run_cli(lake, args.strategy, engine, args.k, args.partitions)
        runs.append(figures)
        shown = {k: v for k, v in figures.items() if k not in ("phases", "picked_ids")}
        print(json.dumps(shown), flush=True)
        for phase, seconds in figures.get("phases", {}).items():
            print(f"    {phase:28s} {seconds:8.2f} s")
    by_engine = {r["engine"]: r for r in runs}
    if "numpy" in by_engine:
        for engine in ("spark", "local"):
            if engine in by_engine:
                by_engine[engine]["same_picks_as_numpy"] = by_engine[engine]["picked_ids"] == \
                    by_engine["numpy"]["picked_ids"]
                print(f"{engine}: same picks as numpy, in order: {by_engine[engine]['same_picks_as_numpy']}")
    ratios = {}
    if "spark" in by_engine and "numpy" in by_engine:
        numpy_s = by_engine["numpy"]["rounds_s"]
        ratios["spark_select_over_numpy_rounds"] = round(by_engine["spark"]["select_s"] / numpy_s, 2)
        ratios["spark_wall_over_numpy_rounds"] = round(by_engine["spark"]["wall_s"] / numpy_s, 2)
        print(json.dumps(ratios))
    for run in runs:
        run.pop("picked_ids", None)
    command = "python benchmarks/select_stage.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = {"benchmark": "select_stage", "command": command,
               "rows": args.rows, "k": args.k, "partitions": args.partitions, "strategy": args.strategy,
               "machine": {"cpus": os.cpu_count()}, "runs": runs, "ratios": ratios}
    write_results(Path(args.output), results)
    return results


if __name__ == "__main__":
    main()
