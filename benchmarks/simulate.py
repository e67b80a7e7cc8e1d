"""Benchmark of selection quality: the active-learning simulator on digits and MNIST-1D.

Run ``python benchmarks/simulate.py [--dataset digits|mnist1d|all] [--set KEY=VALUE]...``. For each
dataset it runs ``alray simulate conf/simulate-DATASET.yaml`` (same code path as the CLI), prints
the labels each strategy needs to reach the target accuracies (mean ± std over the seeds), and
writes the summary as JSON to ``benchmarks/results/simulate-DATASET.json``; the curves (CSV, PNG)
go to ``benchmarks/results/simulate-DATASET/``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    from alray.simulate import format_table, simulate
    from alray.simulate_config import load_simulate_config
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(ROOT))
    from alray.simulate import format_table, simulate
    from alray.simulate_config import load_simulate_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "mnist1d", "all"], default="all")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a simulate config key, e.g. --set simulate.seeds=[0]")
    args = parser.parse_args(argv)
    results = ROOT / "benchmarks" / "results"
    for dataset in (["digits", "mnist1d"] if args.dataset == "all" else [args.dataset]):
        conf = ROOT / "conf" / f"simulate-{dataset}.yaml"
        config = load_simulate_config(conf, args.overrides)
        result = simulate(config, output=results / f"simulate-{dataset}")
        summary = {**result.summary, "command": f"python benchmarks/simulate.py --dataset {dataset}"
                   + "".join(f" --set {o}" for o in args.overrides),
                   "machine": f"{platform.machine()}, {platform.python_version()}"}
        (results / f"simulate-{dataset}.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\n{dataset} ({result.summary['elapsed_s']}s):\n{format_table(result.summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
