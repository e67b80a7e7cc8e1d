"""What a person reads in the terminal: the run summary, the top of the ranking, the runs table."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from alray.config import Config
from alray.errors import InputError
from alray.lake import Lake
from alray.pipeline import RunSummary


def print_summary(summary: RunSummary) -> None:
    """The end-of-run summary: counts, radius, timings, table paths."""
    counts = summary.counts
    print(f"\nrun {summary.run_id}: {summary.status}")
    print("  counts: " + ", ".join(f"{k} {counts[k]}" for k in
                                   ("pool", "rejected", "filtered", "candidates", "selected") if k in counts))
    for reason, n in sorted(summary.filtered_by_reason.items()):
        print(f"    filtered by {reason}: {n}")
    if summary.coverage_radius is not None:
        print(f"  coverage radius: {summary.coverage_radius:.4f}   strategy: {summary.strategy}")
    if summary.strategy_reason:
        print(f"  auto chose {summary.strategy}: {summary.strategy_reason}")
    if summary.selection_details:
        print("  selection: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.selection_details.items()))
    stages = {k: v for k, v in summary.timings.items() if "." not in k}
    print("  timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in stages.items()))
    phases = {k: v for k, v in summary.timings.items() if "." in k}
    for stage in dict.fromkeys(k.split(".", 1)[0] for k in phases):
        print(f"    {stage} phases: " + ", ".join(f"{k.split('.', 1)[1].removesuffix('_s')} {v:.1f}s"
                                            for k, v in phases.items() if k.startswith(stage + ".")))
    for name, path in summary.tables.items():
        print(f"  {name:9s} {path}")


def print_top_ranking(summary: RunSummary, config: Config, *, n_rows: int = 10) -> None:
    """The first ``n_rows`` of this run's ranking."""
    table = Lake.from_output(config.output).read_run(
        "ranking", summary.run_id, columns=["rank", "id", "selected", "score", "weight", "diversity"])
    if table.num_rows == 0:
        return
    top = table.filter(pc.less_equal(table.column("rank"), n_rows)).sort_by("rank")
    print(f"\ntop {top.num_rows} of {table.num_rows} ranked candidates:")
    print(f"  {'rank':>4}  {'id':<16} {'score':>9} {'weight':>9} {'diversity':>9}")
    for row in top.to_pylist():
        diversity = "-" if row["diversity"] is None else f"{row['diversity']:.3f}"
        print(f"  {row['rank']:>4}  {row['id']:<16} {row['score']:>9.4f} {row['weight']:>9.4f} {diversity:>9}")


def _lake(where: str | Lake) -> Lake:
    return where if isinstance(where, Lake) else Lake(where)


def _runs_table(where: str | Lake) -> pa.Table:
    lake = _lake(where)
    try:
        table = lake.read_table("runs")
    except InputError:
        raise InputError(f"output.path: no runs table at {lake.table('runs')}") from None
    if table.num_rows == 0 and "run_id" not in table.schema.names:
        raise InputError(f"output.path: no runs table at {lake.table('runs')}")
    return table


def print_runs(where: str | Lake) -> None:
    """One line per run, newest first: id, status, start, selected count, coverage radius."""
    table = _runs_table(where).sort_by([("started_at", "descending")])
    for row in table.to_pylist():
        radius = "-" if row["coverage_radius"] is None else f"{row['coverage_radius']:.4f}"
        selected = "-" if row["n_selected"] is None else row["n_selected"]
        print(f"{row['run_id']}  {row['status']:<9}  {row['started_at']:%Y-%m-%d %H:%M:%S}  "
              f"selected {selected}  radius {radius}")


def print_run(where: str | Lake, run_id: str) -> None:
    """Every field of one run, as JSON (config, timings, versions and filter counts expanded)."""
    table = _runs_table(where)
    rows = table.filter(pc.equal(table.column("run_id"), run_id)).to_pylist()
    if not rows:
        raise InputError(f"run {run_id!r}: not in the runs table under {_lake(where).root}")
    row = rows[0]
    for key in ("config", "timings", "versions", "filtered_by_reason"):
        if row.get(key):
            row[key] = json.loads(row[key])
    print(json.dumps(row, indent=2, default=str))
