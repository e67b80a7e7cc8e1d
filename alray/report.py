"""What a person reads in the terminal: the run summary, the top of the ranking, the runs table."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from alray.errors import InputError
from alray.lake import Lake, read_run
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
    print("  timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in summary.timings.items()))
    for name, path in summary.tables.items():
        print(f"  {name:9s} {path}")


def print_top_ranking(summary: RunSummary, *, n_rows: int = 10) -> None:
    """The first ``n_rows`` of this run's ranking."""
    table = read_run(summary.tables["ranking"], summary.run_id,
                     columns=["rank", "id", "selected", "score", "uncertainty", "diversity"])
    if table.num_rows == 0:
        return
    top = table.filter(pc.less_equal(table.column("rank"), n_rows)).sort_by("rank")
    print(f"\ntop {top.num_rows} of {table.num_rows} ranked candidates:")
    print(f"  {'rank':>4}  {'id':<16} {'score':>9} {'uncertainty':>11} {'diversity':>9}")
    for row in top.to_pylist():
        diversity = "-" if row["diversity"] is None else f"{row['diversity']:.3f}"
        print(f"  {row['rank']:>4}  {row['id']:<16} {row['score']:>9.4f} {row['uncertainty']:>11.4f} {diversity:>9}")


def _runs_table(root: str) -> pa.Table:
    path = Lake(root).table("runs")
    try:
        return DeltaTable(path).to_pyarrow_dataset().to_table()
    except TableNotFoundError:
        raise InputError(f"output.path: no runs table at {path}") from None


def print_runs(root: str) -> None:
    """One line per run, newest first."""
    table = _runs_table(root).sort_by([("started_at", "descending")])
    for row in table.to_pylist():
        radius = "-" if row["coverage_radius"] is None else f"{row['coverage_radius']:.4f}"
        print(f"{row['run_id']}  {row['status']:<9}  {row['started_at']:%Y-%m-%d %H:%M:%S}  "
              f"selected {row['n_selected']}  radius {radius}")


def print_run(root: str, run_id: str) -> None:
    """Every field of one run, as JSON."""
    table = _runs_table(root)
    rows = table.filter(pc.equal(table.column("run_id"), run_id)).to_pylist()
    if not rows:
        raise InputError(f"run {run_id!r}: not in the runs table under {root}")
    row = rows[0]
    for key in ("config", "timings", "versions", "filtered_by_reason"):
        if row.get(key):
            row[key] = json.loads(row[key])
    print(json.dumps(row, indent=2, default=str))
