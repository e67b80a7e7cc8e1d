"""Cold-start selection: with no labels, pick b digits by each strategy, train on just those.

Run ``python benchmarks/cold_start.py [--quick] [--no-spark]``. For budgets of 10, 20, 50 and
100 labels of scikit-learn's digits (1,297 pool images, 500 test images, a fixed stratified
split), each strategy picks from the pool through :func:`alray.select` (the selection core the
Spark stage runs), and a logistic regression trained on the picks alone is scored on the test
images; random is the mean of 10 draws. Then the Spark stage runs ``typiclust`` and ``probcover``
on a 1M x 64 synthetic pool (``local[2]``: wall time, peak memory). Figures are printed and
written to ``benchmarks/results/cold_start.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _measure import write_results

try:
    import alray
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import alray
from coreset import _environment, bench_spark_stage

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BUDGETS = (10, 20, 50, 100)
STRATEGIES: dict[str, list[dict[str, Any]]] = {
    "typiclust": [{"input": "embeddings", "strategy": "typiclust"}],
    "probcover": [{"input": "embeddings", "strategy": "probcover", "n_clusters": 10}],
    "k-center": [{"input": "embeddings", "strategy": "diversity"}],
}


def digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pool and test images of digits (features scaled to 0..1) with their labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_pool, x_test, y_pool, y_test = train_test_split(x / 16.0, y, test_size=500, stratify=y, random_state=seed)
    return x_pool.astype(np.float32), x_test.astype(np.float32), y_pool, y_test


def accuracy(x_pool: np.ndarray, y_pool: np.ndarray, picks: np.ndarray, x_test: np.ndarray,
             y_test: np.ndarray) -> float:
    """Test accuracy of a logistic regression trained on the picked pool rows only."""
    from sklearn.linear_model import LogisticRegression

    if len(set(y_pool[picks].tolist())) < 2:
        return float(np.mean(y_test == y_pool[picks][0]))
    model = LogisticRegression(max_iter=3000).fit(x_pool[picks], y_pool[picks])
    return float(model.score(x_test, y_test))


def bench_digits(budgets: tuple[int, ...], *, seed: int, n_random: int) -> dict[str, Any]:
    """Mean test accuracy per strategy and budget, the gap to random, and the classes the picks hold."""
    x_pool, x_test, y_pool, y_test = digits_split(seed)
    features = pd.DataFrame({"id": [f"d{i:04d}" for i in range(len(x_pool))], "embedding": list(x_pool)})
    rng = np.random.default_rng(seed)
    figures: dict[str, Any] = {"pool": len(x_pool), "test": len(x_test), "budgets": {}}
    for budget in budgets:
        draws = [accuracy(x_pool, y_pool, rng.choice(len(x_pool), budget, replace=False), x_test, y_test)
                 for _ in range(n_random)]
        row: dict[str, Any] = {"random": {"accuracy": float(np.mean(draws)), "std": float(np.std(draws))}}
        for name, strategies in STRATEGIES.items():
            start = time.perf_counter()
            ranking = alray.select(features, n_samples=budget, strategies=strategies, seed=seed)
            seconds = time.perf_counter() - start
            picks = ranking[ranking.selected].id.str[1:].astype(int).to_numpy()
            acc = accuracy(x_pool, y_pool, picks, x_test, y_test)
            row[name] = {"accuracy": acc, "gap_to_random": acc - row["random"]["accuracy"],
                         "classes": len(set(y_pool[picks].tolist())), "seconds": seconds,
                         **ranking.attrs["summary"].get("details", {})}
        figures["budgets"][str(budget)] = row
        print(f"  {budget:4d} labels: " + "  ".join(f"{k} {v['accuracy']:.3f}" for k, v in row.items()))
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks, print the figures and write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="budgets 10 and 20, 100k rows for the Spark stage")
    parser.add_argument("--no-spark", action="store_true", help="skip the Spark stage at scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"mode": "quick" if args.quick else "full", "environment": _environment()}
    print("digits, no labels: test accuracy of a classifier trained on the picks")
    results["digits"] = bench_digits(BUDGETS[:2] if args.quick else BUDGETS, seed=args.seed, n_random=10)
    if not args.no_spark:
        n_rows = 100_000 if args.quick else 1_000_000
        results["spark_stage"] = {}
        for name in ("typiclust", "probcover"):
            strategies = [{"input": "embeddings", "strategy": name, **({"n_clusters": 100} if name == "probcover"
                                                                       else {})}]
            figures = bench_spark_stage(n_rows, 64, 100, 100, n_partitions=8, seed=args.seed, strategies=strategies)
            results["spark_stage"][name] = figures
            print(f"  Spark stage {name}, {n_rows:,} x 64, 100 picks: {figures['select_seconds']:.1f} s, driver "
                  f"{figures['driver_peak_rss_mib']:.0f} MiB, tree {figures['total_peak_rss_mib']:.0f} MiB, "
                  f"{figures.get('details')}")
    write_results(args.output or RESULTS_DIR / ("cold_start-quick.json" if args.quick else "cold_start.json"),
                  results)
    return results


if __name__ == "__main__":
    main()
