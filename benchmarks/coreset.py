"""Benchmark of alray.coreset: greedy k-center speed against sklearn, and two-stage quality.

Run ``python benchmarks/coreset.py [--quick]``; figures are printed and written as JSON to
``benchmarks/results/coreset.json``. Each benchmark is a function returning a JSON-ready dict,
so further measurements (e.g. the Spark stage) can be added to :func:`main`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from _measure import PeakMemory, write_results
from sklearn.metrics import pairwise_distances

try:
    from alray.coreset import k_center_greedy, local_k
    from alray.selection.local import two_stage_k_center
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from alray.coreset import k_center_greedy, local_k
    from alray.selection.local import two_stage_k_center

RESULTS_DIR = Path(__file__).resolve().parent / "results"

FULL = {
    "greedy": {"n_rows": 20_000, "n_features": 64, "k": 200},
    "bandwidth": {"n_rows": 1_000_000, "n_features": 64, "k": 1000},
    "two_stage": {
        "n_rows": 1_000_000,
        "n_features": 64,
        "n_clusters": 100,
        "k": 1000,
        "n_partitions": 16,
    },
}
QUICK = {
    "greedy": {"n_rows": 5_000, "n_features": 64, "k": 50},
    "bandwidth": {"n_rows": 1_000_000, "n_features": 64, "k": 50},
    "two_stage": {
        "n_rows": 100_000,
        "n_features": 64,
        "n_clusters": 100,
        "k": 200,
        "n_partitions": 16,
    },
}


def sklearn_per_step_k_center(X: np.ndarray, k: int, first: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference greedy k-center: float64 ``pairwise_distances`` to the last pick at each step.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
    k : int
        Number of picks, the first being ``first``.
    first : int
        Index of the first pick.

    Returns
    -------
    indices : ndarray of shape (n_picked,), int64
    min_distances : ndarray of shape (n_rows,), float64
    """
    X = np.asarray(X, dtype=np.float64)
    min_distances = pairwise_distances(X, X[[first]]).ravel()
    picks = [first]
    while len(picks) < k:
        best = int(np.argmax(min_distances))
        if min_distances[best] <= 0:
            break
        picks.append(best)
        min_distances = np.minimum(min_distances, pairwise_distances(X, X[[best]]).ravel())
    return np.asarray(picks, dtype=np.int64), min_distances


def clustered_pool(
    n_rows: int, n_features: int, n_clusters: int, *, seed: int, chunk_rows: int = 100_000
) -> np.ndarray:
    """Synthetic embedding pool: Gaussian clusters of unequal size and spread, float32.

    Parameters
    ----------
    n_rows, n_features, n_clusters : int
    seed : int
    chunk_rows : int
        Rows generated at a time, so no float64 copy of the whole pool is ever made.

    Returns
    -------
    ndarray of shape (n_rows, n_features), float32
    """
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=4.0, size=(n_clusters, n_features))
    spreads = rng.uniform(0.5, 1.5, size=n_clusters)
    # Unequal cluster sizes: a uniform split would flatter the random partitioning.
    sizes = rng.dirichlet(np.full(n_clusters, 0.5))
    pool = np.empty((n_rows, n_features), dtype=np.float32)
    for start in range(0, n_rows, chunk_rows):
        stop = min(start + chunk_rows, n_rows)
        labels = rng.choice(n_clusters, size=stop - start, p=sizes)
        noise = rng.standard_normal((stop - start, n_features))
        pool[start:stop] = means[labels] + spreads[labels, None] * noise
    return pool


def _timed(func: Any, *args: Any, repeats: int = 1, **kwargs: Any) -> tuple[Any, float]:
    """Result of ``func(*args, **kwargs)`` and its fastest wall time over ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = func(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return result, best


def bench_greedy_vs_sklearn(
    *, n_rows: int, n_features: int, k: int, seed: int = 0, repeats: int = 3
) -> dict[str, Any]:
    """Time ``k_center_greedy`` against the per-step sklearn reference on Gaussian data.

    Parameters
    ----------
    n_rows, n_features : int
        Shape of the standard-normal float64 data.
    k : int
        Number of picks.
    seed : int
        Seeds the data and the shared first pick.
    repeats : int
        Each side is timed this many times and the fastest run kept, since the machine may be
        shared.

    Returns
    -------
    dict
        Sizes, both times in seconds, the speed-up, and whether the picks are identical.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, n_features))
    first = int(rng.integers(n_rows))
    # Warm-up so BLAS thread start-up and first-call costs are not charged to either side.
    k_center_greedy(X[:1000], 5, first=0)
    sklearn_per_step_k_center(X[:1000], 5, 0)

    (indices, min_distances), alray_s = _timed(k_center_greedy, X, k, first=first, repeats=repeats)
    (ref_indices, ref_distances), sklearn_s = _timed(
        sklearn_per_step_k_center, X, k, first, repeats=repeats
    )
    identical = bool(np.array_equal(indices, ref_indices))
    mismatch = np.flatnonzero(indices[: len(ref_indices)] != ref_indices[: len(indices)])
    return {
        "n_rows": n_rows,
        "n_features": n_features,
        "k": k,
        "repeats": repeats,
        "alray_seconds": alray_s,
        "sklearn_seconds": sklearn_s,
        "speedup": sklearn_s / alray_s,
        "identical_picks": identical,
        "first_mismatch": int(mismatch[0]) if mismatch.size else None,
        "max_abs_min_distance_diff": float(np.abs(min_distances - ref_distances).max()),
    }


def bench_two_stage_radius(
    *,
    n_rows: int,
    n_features: int,
    n_clusters: int,
    k: int,
    n_partitions: int,
    oversamples: Sequence[float] = (4.0,),
    seed: int = 0,
) -> dict[str, Any]:
    """Coverage radius and time of the stage's two-stage k-center against single-machine greedy k-center.

    Parameters
    ----------
    n_rows, n_features, n_clusters : int
        Shape of the :func:`clustered_pool`.
    k : int
        Number of centres.
    n_partitions : int
        First-round partitions of the two-stage runs.
    oversamples : sequence of float
        One two-stage run per value; see :func:`alray.coreset.local_k`.
    seed : int
        Seeds the pool and every selection.

    Returns
    -------
    dict
        Sizes, the single-machine radius and time, and under ``"two_stage"`` one entry per
        oversample with its ``local_k``, radius, time and radius ratio (two-stage / single).
    """
    pool, generate_s = _timed(clustered_pool, n_rows, n_features, n_clusters, seed=seed)
    (_, single_distances), single_s = _timed(k_center_greedy, pool, k, seed=seed)
    single_radius = float(single_distances.max())
    two_stage = []
    for oversample in oversamples:
        (indices, distances), seconds = _timed(
            two_stage_k_center, pool, k, n_partitions, oversample=oversample, seed=seed
        )
        radius = float(distances.max())
        two_stage.append(
            {
                "oversample": oversample,
                "local_k": local_k(k, n_partitions, oversample, n_rows),
                "seconds": seconds,
                "radius": radius,
                "radius_ratio": radius / single_radius,
                "picked": int(indices.size),
            }
        )
    return {
        "n_rows": n_rows,
        "n_features": n_features,
        "n_clusters": n_clusters,
        "k": k,
        "n_partitions": n_partitions,
        "generate_seconds": generate_s,
        "single_machine_seconds": single_s,
        "single_machine_radius": single_radius,
        "two_stage": two_stage,
    }


def bench_spark_stage(
    n_rows: int, n_features: int, n_clusters: int, k: int, n_partitions: int, *, seed: int,
    single_machine_radius: float | None = None, workdir: Path | None = None,
    strategies: list[dict[str, Any]] | None = None, n_classes: int = 0,
) -> dict[str, Any]:
    """The Spark selection stage on ``local[2]``: wall time, peak memory, radius.

    Writes a synthetic features table (clustered embeddings, random BALD; with ``n_classes``,
    also ``probs`` over that many classes and their ``margin``) to a Delta lake in ``workdir``,
    then runs ``strategies`` (default: BALD-weighted diversity) selecting ``k``.
    """
    import shutil
    import tempfile

    import pyarrow as pa

    from alray.config import config_from_dict
    from alray.lake import Lake, replace_run
    from alray.progress import Progress
    from alray.stages.select import run_select

    root = Path(tempfile.mkdtemp(prefix="alray-bench-", dir=workdir))
    try:
        pool = clustered_pool(n_rows, n_features, n_clusters, seed=seed)
        bald = np.random.default_rng(seed + 1).random(n_rows)
        lake = Lake(str(root / "lake"))
        fields = [("run_id", pa.string()), ("id", pa.string()), ("embedding", pa.list_(pa.float32())),
                  ("bald", pa.float64())]
        if n_classes:
            fields += [("probs", pa.list_(pa.float32())), ("margin", pa.float64())]
        schema = pa.schema(fields)

        def batches() -> Iterator[pa.RecordBatch]:
            for start in range(0, n_rows, 100_000):
                stop = min(start + 100_000, n_rows)
                flat = pa.array(pool[start:stop].ravel(), pa.float32())
                offsets = pa.array(np.arange(0, (stop - start + 1) * n_features, n_features, dtype=np.int32))
                columns = [pa.array(["bench"] * (stop - start)), pa.array([f"row-{i:08d}" for i in range(start, stop)]),
                           pa.ListArray.from_arrays(offsets, flat), pa.array(bald[start:stop])]
                if n_classes:
                    logits = np.random.default_rng([seed, start]).normal(scale=2.0, size=(stop - start, n_classes))
                    probs = np.exp(logits - logits.max(1, keepdims=True))
                    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
                    top = np.sort(probs, axis=1)[:, -2:]
                    class_offsets = pa.array(np.arange(0, (stop - start + 1) * n_classes, n_classes, dtype=np.int32))
                    columns += [pa.ListArray.from_arrays(class_offsets, pa.array(probs.ravel(), pa.float32())),
                                pa.array(1.0 - (top[:, 1] - top[:, 0]).astype(np.float64))]
                yield pa.RecordBatch.from_arrays(columns, schema=schema)

        write_start = time.perf_counter()
        replace_run(lake.table("features"), pa.RecordBatchReader.from_batches(schema, batches()), "bench")
        write_s = time.perf_counter() - write_start
        config = config_from_dict({
            "run": {"seed": seed, "run_id": "bench"}, "pool": {"path": "synthetic"},
            "model": {"checkpoint": "none"}, "output": {"path": lake.root},
            "selection": {"n_samples": k, "n_partitions": n_partitions, "engine": "spark",
                          **({"strategies": strategies} if strategies else {})},
            "spark": {"master": "local[2]", "conf": {"spark.driver.memory": "6g",
                                                      "spark.sql.shuffle.partitions": str(n_partitions)}},
        })
        with PeakMemory() as memory:
            start = time.perf_counter()
            result = run_select(config.selection, config.labeled, config.spark, seed=config.run.seed,
                                run_id="bench", lake=lake, progress=Progress(quiet=True))
            seconds = time.perf_counter() - start
        figures: dict[str, Any] = {
            "n_rows": n_rows, "n_features": n_features, "k": k, "n_partitions": n_partitions,
            "master": "local[2]", "features_write_seconds": write_s, "select_seconds": seconds,
            "driver_peak_rss_mib": memory.driver_peak / 2**20,
            "total_peak_rss_mib": memory.total_peak / 2**20,
            "n_selected": result.n_selected, "coverage_radius": result.coverage_radius,
            **({"details": result.details} if result.details else {}),
        }
        if single_machine_radius and result.coverage_radius:
            # the stage weights distances by BALD, so it trades some radius for uncertainty
            figures["radius_ratio_vs_unweighted_single_machine"] = result.coverage_radius / single_machine_radius
        return figures
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        # Timings on a shared machine mean little without the load they ran under.
        "load_average_1min_at_start": os.getloadavg()[0],
    }


def _print_section(title: str, figures: dict[str, Any], indent: str = "  ") -> None:
    print(title)
    for key, value in figures.items():
        if isinstance(value, list):
            for number, entry in enumerate(value):
                _print_section(f"{indent}{key}[{number}]", entry, indent + "  ")
            continue
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{indent}{key:28s} {shown}")


def bench_bandwidth(*, n_rows: int, n_features: int, k: int, seed: int = 0) -> dict[str, Any]:
    """The greedy's achieved memory bandwidth against plain NumPy streaming reads of the same matrix.

    Each pick reads every row once (the new centre's distances), so the greedy's bandwidth is
    k x the matrix's bytes over its time; the reference is the fastest of ``X.sum()`` and ``X.max()``
    (one pass each, best of 5), measured before and after the greedy, in this process. The greedy
    runs BLAS on one thread and NumPy's reductions run on one thread too.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, n_features), dtype=np.float32)
    weights = rng.random(n_rows)

    def streaming() -> dict[str, float]:
        rates = {}
        for name, fn in (("sum", X.sum), ("max", X.max)):
            fn()
            best = min(_timed(fn)[1] for _ in range(5))
            rates[name] = X.nbytes / best / 1e9
        return rates

    before = streaming()
    k_center_greedy(X[:100_000], 5, first=0)  # warm-up
    (_, _), plain_s = _timed(k_center_greedy, X, k, first=0)
    (_, _), weighted_s = _timed(k_center_greedy, X, k, weights=weights, first=0)
    after = streaming()
    reference = max(*before.values(), *after.values())
    plain = k * X.nbytes / plain_s / 1e9
    weighted = k * X.nbytes / weighted_s / 1e9
    return {
        "n_rows": n_rows, "n_features": n_features, "k": k, "matrix_mib": X.nbytes / 2**20,
        "streaming_read_gb_s": {"before": before, "after": after, "best": reference},
        "greedy_seconds": plain_s, "greedy_gb_s": plain, "greedy_share_of_streaming": plain / reference,
        "weighted_greedy_seconds": weighted_s, "weighted_greedy_gb_s": weighted,
        "weighted_share_of_streaming": weighted / reference,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every benchmark, print the figures and write them to ``--output`` as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds, not minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-spark", action="store_true", help="skip the Spark stage measurement")
    parser.add_argument("--bandwidth-only", action="store_true",
                        help="only the greedy's bandwidth at 1M x 64, k=1,000 (results/coreset-bandwidth.json)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results file (default results/coreset.json, results/coreset-quick.json)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL

    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "environment": _environment(),
    }
    results["greedy_vs_sklearn"] = bench_greedy_vs_sklearn(**sizes["greedy"], seed=args.seed)
    _print_section("k_center_greedy vs per-step sklearn reference", results["greedy_vs_sklearn"])
    results["bandwidth"] = bench_bandwidth(**sizes["bandwidth"], seed=args.seed)
    _print_section("k_center_greedy memory bandwidth vs NumPy streaming reads", results["bandwidth"])
    if args.bandwidth_only:
        write_results(args.output or RESULTS_DIR / "coreset-bandwidth.json", results)
        return results
    # local_k keeps k per partition while the union stays small, so both settings usually match;
    # they differ once k * n_partitions exceeds the union cap.
    oversamples = (4.0, float(sizes["two_stage"]["n_partitions"]))
    results["two_stage_radius"] = bench_two_stage_radius(
        **sizes["two_stage"], oversamples=oversamples, seed=args.seed
    )
    _print_section("two-stage vs single-machine k-center", results["two_stage_radius"])
    if not args.no_spark:
        two_stage = sizes["two_stage"]
        results["spark_stage"] = bench_spark_stage(
            two_stage["n_rows"], two_stage["n_features"], two_stage["n_clusters"], two_stage["k"],
            n_partitions=8, seed=args.seed,
            single_machine_radius=results["two_stage_radius"]["single_machine_radius"])
        _print_section("Spark selection stage (local[2])", results["spark_stage"])

    write_results(args.output or RESULTS_DIR / ("coreset-quick.json" if args.quick else "coreset.json"), results)
    return results


if __name__ == "__main__":
    main()
