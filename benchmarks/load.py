"""Load: a large pool through ``alray run`` end to end, with the peak memory of every process.

Builds a pool of feature vectors (scikit-learn's digits, 64 pixels scaled to 0..1, each row a
digit plus Gaussian noise, with metadata and a sprinkling of bad rows), a labeled set and a
FeatureMLP checkpoint trained on 200 digits; then runs ``python -m alray.cli run`` as a
subprocess, exactly as a user would, once per ``ROWS:BATCH`` case. While each run goes, a
sampler reads the resident (RSS) and unique (USS) memory of every process under the CLI, and
its own memory: USS less the pages of Ray's object store that it alone maps. It files each
process under a role: the driver, the scoring actors, other Ray workers (pool reads, writes,
commit tasks), Ray's own daemons, Spark's JVM and Spark's Python workers. It reports each
role's largest single-process peak per stage, the object store's footprint in /dev/shm, the
stage timings of the run summary, and checks the invariant on the written tables: every pool
id is in exactly one of the ranking, the rejects or the filtered set.

    python benchmarks/load.py                         # 1M rows at batch 256, then 100k at 256 and 4096
    python benchmarks/load.py --cases 100000:256      # one case
    python benchmarks/load.py --cases 1000000:256,10000000:256 --output benchmarks/results/load-10m.json
    python benchmarks/load.py --cases 1000000:256 --object-store-memory 256m \
        --output benchmarks/results/load-1m-store256m.json   # a smaller object store
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Sampler, write_results

ROWS_PER_FILE = 50_000
N_FEATURES = 64
N_LABELED = 1_000
SEED = 0
DEFAULT_CASES = "1000000:256,100000:256,100000:4096"


def digits_features() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 features in 0..1 (N, 64) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


def write_pool(folder: Path, n_rows: int, *, seed: int, now: dt.datetime) -> dict[str, int]:
    """Write ``n_rows`` pool rows as parquet files of ``ROWS_PER_FILE`` rows; return the bad-row counts.

    One row in 2,000 carries a NaN and one in 5,000 has 60 values instead of 64: the scoring
    stage must quarantine them with a reason. One row in 25 was captured more than 90 days ago.
    """
    features, _ = digits_features()
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    now_us = int(now.timestamp() * 1_000_000)
    n_nan = n_short = 0
    for part, start in enumerate(range(0, n_rows, ROWS_PER_FILE)):
        stop = min(start + ROWS_PER_FILE, n_rows)
        n = stop - start
        rows = features[rng.integers(0, len(features), size=n)] + rng.normal(0, 0.05, size=(n, N_FEATURES))
        rows = rows.astype(np.float32)
        index = np.arange(start, stop)
        nan = (index % 2_000 == 1_999)
        rows[nan, 7] = np.nan
        n_nan += int(nan.sum())
        short = (index % 5_000 == 4_998)
        n_short += int(short.sum())
        lengths = np.where(short, 60, N_FEATURES)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        keep = np.arange(N_FEATURES)[None, :] < lengths[:, None]
        vectors = pa.ListArray.from_arrays(pa.array(offsets), pa.array(rows[keep], pa.float32()))
        age_days = rng.uniform(0, 60, size=n)
        stale = rng.random(n) < 0.04
        age_days[stale] = rng.uniform(120, 365, size=int(stale.sum()))
        captured = now_us - np.round(age_days * 86_400_000_000).astype(np.int64)
        table = pa.table({
            "id": pa.array([f"s{i:08d}" for i in index], pa.string()),
            "features": vectors,
            "captured_at": pa.array(captured, pa.timestamp("us", tz="UTC")),
            "camera_id": pa.array([f"cam-{c}" for c in rng.integers(0, 8, size=n)], pa.string()),
        })
        pq.write_table(table, folder / f"part-{part:05d}.parquet")
    return {"nan": n_nan, "wrong_length": n_short}


def write_model(path: Path, *, seed: int) -> float:
    """Train a FeatureMLP on 200 digits and save it; return its accuracy on all 1,797."""
    import torch

    from alray.models import FeatureMLP, save_checkpoint
    from alray.training import accuracy, train_classifier

    features, labels = digits_features()
    train = np.random.default_rng(seed).choice(len(features), size=200, replace=False)
    torch.manual_seed(seed)
    model = FeatureMLP(n_features=N_FEATURES, n_classes=10, hidden_dim=128, embedding_dim=64, dropout=0.5)
    train_classifier(model, features[train], labels[train], epochs=40, seed=seed)
    save_checkpoint(model, path)
    return accuracy(model, features, labels)


def write_labeled(folder: Path, n_rows: int, *, seed: int) -> None:
    """A labeled set of ``N_LABELED`` pool ids."""
    ids = np.random.default_rng(seed + 1).choice(n_rows, size=min(N_LABELED, n_rows), replace=False)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [f"s{i:08d}" for i in np.sort(ids)], "label": np.zeros(len(ids), np.int64)}),
                   folder / "part-00000.parquet")


def job_config(root: Path, pool: Path, labeled: Path, batch_size: int,
               object_store_memory: str | None = None, n_partitions: int = 16,
               spark_driver_memory: str | None = None) -> dict[str, Any]:
    """The job every case runs: the demo's strategy (BALD-weighted diversity) selecting 1,000."""
    spark_conf = {"spark.driver.memory": spark_driver_memory} if spark_driver_memory else {}
    return {
        "ray": {"object_store_memory": object_store_memory} if object_store_memory else {},
        "run": {"seed": SEED, "run_id": "load"},
        "pool": {"path": str(pool), "format": "parquet"},
        "labeled": {"path": str(labeled)},
        "model": {"checkpoint": str(root / "model.pt")},
        "score": {"mc_samples": 20, "batch_size": batch_size, "num_actors": 1, "max_bad_fraction": 0.01},
        "selection": {
            "n_samples": 1_000,
            "strategies": [{"input": "embeddings", "strategy": "diversity"},
                           {"input": "bald", "strategy": "weights", "strength": 1.0}],
            "filters": [{"column": "captured_at", "op": "within_last", "value": "90d"}],
            "n_partitions": n_partitions,
        },
        "output": {"path": str(root / "lake")},
        "spark": {"master": "local[2]", "conf": spark_conf},
    }


ROLES = ("driver", "scoring_actor", "ray_worker", "ray_daemons", "spark_jvm", "spark_python_worker", "other")


def role_of(process: Any, driver_pid: int) -> str:
    """Which part of the job a process is, from its pid and command line."""
    if process.pid == driver_pid:
        return "driver"
    try:
        cmdline = " ".join(process.cmdline())
        name = process.name()
    except Exception:  # the process ended between listing and reading
        return "other"
    if "PoolScorer" in cmdline or "MapWorker" in cmdline:
        return "scoring_actor"
    if cmdline.startswith("ray::") or "default_worker.py" in cmdline:
        return "ray_worker"
    if name == "java" or cmdline.startswith("java") or "/java " in cmdline:
        return "spark_jvm"
    if "pyspark" in cmdline:
        return "spark_python_worker"
    if any(d in cmdline for d in ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py",
                                  "runtime_env", "ray/_private", "ray_client_server")):
        return "ray_daemons"
    return "other"


def object_store_pages(process: Any) -> int:
    """Bytes of Ray's object store (its shared-memory file) that count in a process's USS.

    A worker that reads blocks maps them from the object store's file in /dev/shm. When the
    process that wrote a block has exited (the scoring actor, at the end of the stage), its pages
    are mapped by the reader alone, and the kernel counts them in the reader's unique memory
    although they are the object store's, bounded by its size, not the worker's own.
    """
    return sum(m.private_clean + m.private_dirty for m in process.memory_maps(grouped=True)
               if m.path.startswith("/dev/shm/plasma"))


class TreeSampler(Sampler):
    """Samples every process under one pid; keeps, per stage and role, the largest process peak."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        import psutil

        super().__init__(interval_s)
        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.stage = "startup"
        self.phase = ""  # the phase the run's progress lines last named (they come every 10 s)
        self.peaks: dict[str, dict[str, dict[str, Any]]] = {}
        self.started = time.perf_counter()
        self.timeline_step_s = 10
        # every 10 s, the largest own memory (MiB) of a process of each role: does a worker level off?
        self.timeline: list[dict[str, Any]] = []
        self._roles: dict[int, str] = {}
        # The object store's file lives in /dev/shm: its growth there is the store's footprint.
        self._shm_start = shutil.disk_usage("/dev/shm").used
        self.shm_peak = 0

    def _role(self, process: Any) -> str:
        # Processes change their command line (Ray workers take up tasks, spark-submit execs the
        # JVM): look again each time, except at the scoring actor, which stays one.
        if self._roles.get(process.pid) != "scoring_actor":
            self._roles[process.pid] = role_of(process, self.root.pid)
        return self._roles[process.pid]

    def _sample(self) -> None:
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except self._psutil.Error:
            return
        stage = self.peaks.setdefault(self.stage, {})
        self.shm_peak = max(self.shm_peak, shutil.disk_usage("/dev/shm").used - self._shm_start)
        now = round(time.perf_counter() - self.started)
        point = {"t": now, "stage": self.stage}
        for process in processes:
            try:
                role = self._role(process)
                info = process.memory_full_info()
                shared = object_store_pages(process)
            except self._psutil.Error:
                continue
            own = (info.uss - shared) / 2**20
            point[role] = max(point.get(role, 0), round(own))
            peak = stage.setdefault(role, {"rss_mib": 0.0, "uss_mib": 0.0, "own_mib": 0.0, "object_store_mib": 0.0,
                                           "processes": 0, "largest": ""})
            if own > peak["own_mib"]:
                peak["own_mib"] = own
                peak["at_s"], peak["phase"] = now, self.phase
                with contextlib.suppress(self._psutil.Error):
                    peak["largest"] = " ".join(process.cmdline())[:100]
            peak["rss_mib"] = max(peak["rss_mib"], info.rss / 2**20)
            peak["uss_mib"] = max(peak["uss_mib"], info.uss / 2**20)
            peak["object_store_mib"] = max(peak["object_store_mib"], shared / 2**20)
        if not self.timeline or now - self.timeline[-1]["t"] >= self.timeline_step_s:
            self.timeline.append(point)
        for role in ROLES:
            if role in stage:
                count = sum(1 for p in processes if self._roles.get(p.pid) == role)
                stage[role]["processes"] = max(stage[role]["processes"], count)


def run_case(root: Path, pool: Path, labeled: Path, n_rows: int, batch_size: int,
             object_store_memory: str | None = None, n_partitions: int = 16,
             spark_driver_memory: str | None = None) -> dict[str, Any]:
    """One ``alray run`` on ``pool``; figures of time, memory and the table invariant."""
    lake = root / "lake"
    shutil.rmtree(lake, ignore_errors=True)
    config_path = root / f"load-{n_rows}-{batch_size}.yaml"
    config_path.write_text(yaml.safe_dump(job_config(root, pool, labeled, batch_size, object_store_memory,
                                                     n_partitions, spark_driver_memory)))
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "alray.cli", "run", str(config_path), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampler = TreeSampler(process.pid)
    sampler.start()
    summary_line = ""
    stderr_tail: list[str] = []

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            stderr_tail.append(line.rstrip())
            del stderr_tail[:-40]
            started = re.match(r"\[alray\] (\w+): started", line)
            if started:
                sampler.stage, sampler.phase = started.group(1), ""
            # "[alray] select: partition, tasks 3/16, 10s so far" or "[alray] score: 1,024/... rows
            # (1%), ..., model, 10s so far": a line every 10 s, so a phase shorter than that may pass unnamed
            phase = (re.match(r"\[alray\] \w+: ([a-z_]+), ", line)
                     or re.search(r", ([a-z_]+), [0-9hms]+ so far$", line.rstrip()))
            if phase:
                sampler.phase = phase.group(1)
            if line.startswith("[alray]"):
                print(f"  {time.perf_counter() - start:7.1f}s {line.rstrip()}", flush=True)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("{"):
            summary_line = line
    process.wait()
    reader.join()
    sampler.stop()
    wall = time.perf_counter() - start
    if process.returncode != 0 or not summary_line:
        raise SystemExit(f"alray run exited {process.returncode}:\n" + "\n".join(stderr_tail))
    summary = json.loads(summary_line)
    return {
        "n_rows": n_rows, "batch_size": batch_size, "n_partitions": n_partitions,
        "object_store_memory": object_store_memory, "spark_driver_memory": spark_driver_memory or "alray's default",
        "wall_seconds": round(wall, 1),
        "timings": summary["timings"], "counts": summary["counts"],
        "filtered_by_reason": summary["filtered_by_reason"], "coverage_radius": summary["coverage_radius"],
        "peak_memory_mib_by_stage": sampler.peaks,
        "own_mib_timeline": sampler.timeline,
        "object_store_shm_peak_mib": round(sampler.shm_peak / 2**20),
        "invariant": check_invariant(lake, pool, labeled, int(summary["counts"]["filtered"])),
    }


def check_invariant(lake: Path, pool: Path, labeled: Path, n_filtered: int) -> dict[str, Any]:
    """Every pool id in exactly one of the ranking, the rejects or the filtered rows, and each
    filtered row filtered for a reason it has: it is labeled, or was captured over 90 days ago."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    pool_rows = pq.read_table(pool, columns=["id", "captured_at"])
    ranking = DeltaTable(str(lake / "ranking")).to_pyarrow_table(columns=["id"]).column("id")
    rejects = DeltaTable(str(lake / "rejects")).to_pyarrow_table(columns=["id"]).column("id")
    placed = pa.chunked_array(ranking.chunks + rejects.chunks, pa.string())
    n_unique = len(pc.unique(placed))
    left = pool_rows.filter(pc.invert(pc.is_in(pool_rows.column("id"), placed)))
    labeled_ids = pq.read_table(labeled, columns=["id"]).column("id")
    cutoff = pa.scalar(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=90), pa.timestamp("us", tz="UTC"))
    explained = pc.or_(pc.is_in(left.column("id"), labeled_ids), pc.less(left.column("captured_at"), cutoff))
    return {
        "pool": pool_rows.num_rows, "ranking": len(ranking), "rejects": len(rejects),
        "filtered_reported": n_filtered, "not_in_ranking_or_rejects": left.num_rows,
        "duplicates": len(placed) - n_unique,
        "filtered_without_reason": left.num_rows - int(pc.sum(explained).as_py() or 0),
        "holds": n_unique == len(placed) and left.num_rows == n_filtered
        and bool(pc.all(explained).as_py() in (True, None))
        and len(placed) + n_filtered == pool_rows.num_rows,
    }


def parse_cases(text: str) -> list[tuple[int, int, int]]:
    """``ROWS:BATCH[:PARTITIONS]``; partitions default to one per 62,500 rows, at least 16: the
    first coreset round's partitions grow with the pool so that a worker's share stays the same."""
    cases = []
    for item in text.split(","):
        rows, batch, *partitions = item.split(":")
        n_partitions = int(partitions[0]) if partitions else max(16, -(-int(rows) // 62_500))
        cases.append((int(rows), int(batch), n_partitions))
    return cases


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=DEFAULT_CASES,
                        help=f"ROWS:BATCH[:PARTITIONS],... (default {DEFAULT_CASES})")
    parser.add_argument("--workdir", help="where the pool and lake go (default: a temporary folder)")
    parser.add_argument("--object-store-memory", help="ray.object_store_memory of the runs, e.g. 256m "
                        "(default: Ray's, 30%% of memory)")
    parser.add_argument("--spark-driver-memory", help="spark.driver.memory of the runs, e.g. 4g (default: "
                        "alray's, 2g; the JVM's footprint follows its heap)")
    parser.add_argument("--output", default="benchmarks/results/load.json")
    args = parser.parse_args(argv)
    cases = parse_cases(args.cases)
    root = Path(tempfile.mkdtemp(prefix="alray-load-", dir=args.workdir))
    now = dt.datetime.now(dt.timezone.utc)
    try:
        largest = max(rows for rows, _, _ in cases)
        start = time.perf_counter()
        full_pool = root / f"pool-{largest}"
        bad_rows = write_pool(full_pool, largest, seed=SEED, now=now)
        accuracy = write_model(root / "model.pt", seed=SEED)
        print(f"pool of {largest:,} rows written in {time.perf_counter() - start:.1f}s "
              f"({bad_rows} bad rows); model accuracy on digits {accuracy:.3f}", flush=True)
        results: dict[str, Any] = {
            "benchmark": "load", "command": "python benchmarks/load.py " + " ".join(argv or sys.argv[1:]),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "pool": {"payload": "features (64 float32)", "rows_per_file": ROWS_PER_FILE, "bad_rows": bad_rows},
            "cases": [],
        }
        for rows, batch, n_partitions in cases:
            pool = root / f"pool-{rows}"
            if not pool.exists():  # a prefix of the largest pool: the same rows, linked
                pool.mkdir()
                for part in sorted(full_pool.glob("*.parquet"))[: -(-rows // ROWS_PER_FILE)]:
                    os.link(part, pool / part.name)
            labeled = root / f"labeled-{rows}"
            write_labeled(labeled, rows, seed=SEED)
            print(f"case: {rows:,} rows, batch {batch}, {n_partitions} partitions", flush=True)
            figures = run_case(root, pool, labeled, rows, batch, args.object_store_memory, n_partitions,
                               args.spark_driver_memory)
            results["cases"].append(figures)
            print(json.dumps({k: figures[k] for k in ("wall_seconds", "timings", "counts", "invariant")}), flush=True)
            for stage, roles in figures["peak_memory_mib_by_stage"].items():
                line = ", ".join(f"{role} {p['rss_mib']:.0f}/{p['uss_mib']:.0f}/{p['own_mib']:.0f}"
                                 for role, p in sorted(roles.items()))
                print(f"  peak RSS/USS/own MiB per process, {stage}: {line}", flush=True)
        write_results(Path(args.output), results)
        return results
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
