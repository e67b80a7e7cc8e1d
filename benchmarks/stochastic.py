"""Stochastic batch acquisition at scale: the Spark stage samples a large batch by Gumbel-top-k.

Run ``python benchmarks/stochastic.py [--quick]``. The Spark stage (``local[2]``, 8 partitions)
selects 1,000 of a 1M x 64 synthetic features table (100 Gaussian clusters, random BALD) with
``power``, ``softmax`` and ``softrank`` sampling of BALD, and 10,000 with ``power``: wall time of
the stage, peak memory of the driver and of the whole process tree. The keys cost one pass; the
ranking's distance of every candidate to its nearest pick (the coverage radius) grows with the
picks. Figures are printed and written to
``benchmarks/results/stochastic.json``.
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_rows = 100_000 if args.quick else 1_000_000
    results: dict[str, Any] = {"mode": "quick" if args.quick else "full", "environment": _environment(),
                               "rows": n_rows, "spark_stage": {}}
    for sampling, k in (("power", 1_000), ("softmax", 1_000), ("softrank", 1_000), ("power", 10_000)):
        strategies = [{"input": "bald", "strategy": sampling, "temperature": 1.0}]
        figures = bench_spark_stage(n_rows, 64, 100, k, n_partitions=8, seed=args.seed, strategies=strategies)
        results["spark_stage"][f"{sampling}-{k}"] = figures
        print(f"Spark stage {sampling}:bald, {n_rows:,} x 64, {k:,} picks: {figures['select_seconds']:.1f} s, "
              f"driver {figures['driver_peak_rss_mib']:.0f} MiB, tree {figures['total_peak_rss_mib']:.0f} MiB")
    write_results(RESULTS_DIR / ("stochastic-quick.json" if args.quick else "stochastic.json"), results)
    return results


if __name__ == "__main__":
    main()
