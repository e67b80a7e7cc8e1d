"""Large batches at scale: ``badge`` and ``cluster_margin`` select 100,000 of 1,000,000 on the Spark stage.

Run ``python benchmarks/large_batch.py [--quick]``. The Spark stage (``local[2]``, 8 partitions)
selects 100,000 of a 1M x 64 synthetic features table (100 Gaussian clusters, random softmax
probabilities over 10 classes and their margin) with ``badge`` and with ``cluster_margin`` on
the margin: wall time of the stage, peak memory of the driver and of the whole process tree, and
the strategy's own figures. ``--quick``: 100,000 rows, 10,000 picks. Figures are printed and
written to ``benchmarks/results/large_batch.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from _measure import write_results

try:
    import alray  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from coreset import _environment, bench_spark_stage

RESULTS_DIR = Path(__file__).resolve().parent / "results"
STRATEGIES = {
    "badge": [{"input": "embeddings", "strategy": "badge"}],
    "cluster_margin": [{"input": "margin", "strategy": "cluster_margin"}],
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows, 10k picks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=sorted(STRATEGIES), help="run one strategy")
    args = parser.parse_args(argv)
    n_rows, k = (100_000, 10_000) if args.quick else (1_000_000, 100_000)
    results: dict[str, Any] = {"mode": "quick" if args.quick else "full", "environment": _environment(),
                               "rows": n_rows, "picks": k, "spark_stage": {}}
    for name, strategies in STRATEGIES.items():
        if args.only and name != args.only:
            continue
        figures = bench_spark_stage(n_rows, 64, 100, k, n_partitions=8, seed=args.seed, strategies=strategies,
                                    n_classes=10)
        results["spark_stage"][name] = figures
        print(f"Spark stage {name}, {n_rows:,} x 64, {k:,} picks: {figures['select_seconds']:.1f} s, "
              f"driver {figures['driver_peak_rss_mib']:.0f} MiB, tree {figures['total_peak_rss_mib']:.0f} MiB, "
              f"{figures.get('details', {})}", flush=True)
    suffix = "-quick" if args.quick else ""
    write_results(RESULTS_DIR / f"large_batch{suffix}{'-' + args.only if args.only else ''}.json", results)
    return results


if __name__ == "__main__":
    main()
