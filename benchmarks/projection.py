"""Projected wall times for 100M and 1B rows on clusters, from the load benchmark's two sizes.

Reads a ``benchmarks/load.py`` result with two cases of different size (1M and 10M rows, same
batch, partitions grown with the pool) and fits, for every phase of the run summary, a fixed
cost ``a`` and a cost per row ``b`` through the two measured points (``t = a + b * rows``). The
per-row part is work spread over the cores the run had (``machine.cpus``): ``b * cpus`` is the
phase's core-seconds per row. A projection for ``rows`` on ``cores`` is then

    sum over phases of  a + b * rows * cpus / cores     (a + b * rows for the serial phases)

under these assumptions, which the README states with the table:
- the per-row work spreads evenly over cores (Ray's read tasks and actors, Spark's partitions),
  with partitions grown with the pool (each ~62,500 rows, as ``load.py`` does), and nodes like
  this machine's cores;
- fixed costs (engine start-up, the coreset's merge round, which holds oversample x k candidates
  whatever the pool) stay what they were on one machine; a fit that gives a negative fixed cost
  (noise between the two runs) counts it as zero;
- the commits (``score.commit_s``, ``select.commit_s``) and the start-up are counted as serial:
  their per-row cost is not divided by the cores (the Delta commit is one driver's work, reading
  the footers of files that grow in number with the pool): a bound that shows where a cluster
  would stop scaling. Splitting the staged files into the tables' files (``score.split_s``) runs
  in Ray tasks and spreads; results from before that phase was timed apart hold it in
  ``score.commit_s``, and so count it as serial;
- the network moves the shuffle as fast as local disk did here (the partition phase's bytes:
  about 300 B a row), storage serves reads as the cores ask;
- the same job: 64 features, FeatureMLP with 20 MC-dropout passes, 1,000 picks. A heavier model
  multiplies the score stage's per-row cost by its own in-process cost (see ``score_stage.py``).

    python benchmarks/projection.py                         # from benchmarks/results/load-10m.json
    python benchmarks/projection.py --results other.json --rows 100000000,1000000000 --cores 8,64,512
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import write_results

STAGES = ("score", "select")
SERIAL = ("score.commit_s", "select.commit_s", "startup_s")


def phase_times(case: dict[str, Any]) -> dict[str, float]:
    """The phases of each stage, and the rest of the stage that no phase names, in seconds."""
    timings = case["timings"]
    phases: dict[str, float] = {}
    for stage in STAGES:
        named = {k: float(v) for k, v in timings.items() if k.startswith(f"{stage}.")}
        phases.update(named)
        if f"{stage}_s" in timings:
            phases[f"{stage}.other_s"] = max(0.0, float(timings[f"{stage}_s"]) - sum(named.values()))
    phases["startup_s"] = max(0.0, float(case["wall_seconds"]) - sum(float(timings[f"{s}_s"]) for s in STAGES
                                                                      if f"{s}_s" in timings))
    return phases


def fit(small: dict[str, Any], large: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per phase: fixed seconds and seconds per row through the two cases' points."""
    n1, n2 = small["n_rows"], large["n_rows"]
    t1, t2 = phase_times(small), phase_times(large)
    model = {}
    for phase in sorted(set(t1) | set(t2)):
        y1, y2 = t1.get(phase, 0.0), t2.get(phase, 0.0)
        per_row = max(0.0, (y2 - y1) / (n2 - n1))
        model[phase] = {"fixed_s": max(0.0, y1 - per_row * n1), "per_row_s": per_row,
                        "measured_small_s": y1, "measured_large_s": y2}
    return model


def project(model: dict[str, dict[str, float]], rows: int, cores: int, cpus: int) -> dict[str, float]:
    """Wall seconds per stage for ``rows`` on ``cores``."""
    totals = {stage: 0.0 for stage in ("startup", *STAGES)}
    for phase, m in model.items():
        stage = phase.split(".")[0] if "." in phase else "startup"
        spread = 1.0 if phase in SERIAL else cpus / cores
        totals[stage] += m["fixed_s"] + m["per_row_s"] * rows * spread
    totals["total"] = sum(totals.values())
    return totals


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="benchmarks/results/load-10m.json")
    parser.add_argument("--rows", default="100000000,1000000000")
    parser.add_argument("--cores", default="8,64,512")
    parser.add_argument("--output", default="benchmarks/results/projection.json")
    args = parser.parse_args(argv)
    measured = json.loads(Path(args.results).read_text())
    cases = sorted(measured["cases"], key=lambda c: c["n_rows"])
    if len(cases) < 2 or cases[0]["n_rows"] == cases[-1]["n_rows"]:
        raise SystemExit(f"{args.results}: needs two cases of different size, e.g. load.py --cases "
                         "1000000:256,10000000:256")
    cpus = int(measured["machine"]["cpus"])
    model = fit(cases[0], cases[-1])
    print(f"fit from {cases[0]['n_rows']:,} and {cases[-1]['n_rows']:,} rows on {cpus} cores "
          f"({args.results}):")
    for phase, m in model.items():
        print(f"  {phase:32s} fixed {m['fixed_s']:7.1f} s   {m['per_row_s'] * cpus * 1e6:8.2f} core-us/row   "
              f"(measured {m['measured_small_s']:.1f} s, {m['measured_large_s']:.1f} s)")
    table = []
    print("\n| rows | cores | score | select | start-up | total |\n| --- | --- | --- | --- | --- | --- |")
    for rows in (int(r) for r in args.rows.split(",")):
        for cores in (int(c) for c in args.cores.split(",")):
            t = project(model, rows, cores, cpus)
            table.append({"rows": rows, "cores": cores, **{k: round(v, 1) for k, v in t.items()}})
            print(f"| {rows:,} | {cores} | {duration(t['score'])} | {duration(t['select'])} | "
                  f"{duration(t['startup'])} | {duration(t['total'])} |")
    results = {"benchmark": "projection", "command": "python benchmarks/projection.py "
               + " ".join(argv if argv is not None else sys.argv[1:]),
               "from": args.results, "cpus_measured": cpus, "model": model, "table": table}
    write_results(Path(args.output), results)
    return results


if __name__ == "__main__":
    main()
