"""What a person reads in the terminal: the run summary, the top of the ranking, the runs table."""

from __future__ import annotations

import json
from typing import Any, TextIO

import pyarrow.compute as pc

from alray import engine_log
from alray.config import Config
from alray.lake import Lake
from alray.pipeline import RunSummary
from alray.run_records import run_row, runs_table


def _out(file: TextIO | None) -> TextIO:
    return file if file is not None else engine_log.console()[0]


def print_summary(summary: RunSummary, file: TextIO | None = None) -> None:
    """The end-of-run summary: counts, radius, timings, table paths (on the console's stdout by default)."""
    out = _out(file)
    counts = summary.counts
    lines = [f"\nrun {summary.run_id}: {summary.status}",
             "  counts: " + ", ".join(f"{k} {counts[k]}" for k in
                                      ("pool", "rejected", "filtered", "candidates", "selected") if k in counts)]
    if summary.reused_from:
        lines.append(f"  incremental: {counts.get('scored')} rows scored, {counts.get('reused')} carried over from "
                     f"run {summary.reused_from}")
    lines += [f"    filtered by {reason}: {n}" for reason, n in sorted(summary.filtered_by_reason.items())]
    if summary.coverage_radius is not None:
        lines.append(f"  coverage radius: {summary.coverage_radius:.4f}   strategy: {summary.strategy}")
    if summary.strategy_reason:
        lines.append(f"  auto chose {summary.strategy}: {summary.strategy_reason}")
    if summary.selection_details:
        lines.append("  selection: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.selection_details.items()))
    stages = {k: v for k, v in summary.timings.items() if "." not in k}
    lines.append("  timings: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f}s" for k, v in stages.items()))
    phases = {k: v for k, v in summary.timings.items() if "." in k}
    for stage in dict.fromkeys(k.split(".", 1)[0] for k in phases):
        lines.append(f"    {stage} phases: " + ", ".join(f"{k.split('.', 1)[1].removesuffix('_s')} {v:.1f}s"
                                                    for k, v in phases.items() if k.startswith(stage + ".")))
    # Tables are folders beside each other: one line names the lake, one the tables in it.
    roots = {path.rsplit("/", 1)[0] for path in summary.tables.values()}
    if len(roots) == 1:
        lines.append(f"  tables in {roots.pop()}: {', '.join(summary.tables)}")
    else:
        lines += [f"  {name:9s} {path}" for name, path in summary.tables.items()]
    if summary.log:
        lines.append(f"  engine logs (Ray, Spark): {summary.log}")
    print("\n".join(lines), file=out)


def print_top_ranking(summary: RunSummary, config: Config, *, n_rows: int = 10, file: TextIO | None = None) -> None:
    """The first ``n_rows`` of this run's ranking."""
    table = Lake.from_output(config.output).read_run(
        "ranking", summary.run_id, columns=["rank", "id", "selected", "score", "weight", "diversity"])
    if table.num_rows == 0:
        return
    top = table.filter(pc.less_equal(table.column("rank"), n_rows)).sort_by("rank")
    lines = [f"\ntop {top.num_rows} of {table.num_rows} ranked candidates:",
             f"  {'rank':>4}  {'id':<16} {'score':>9} {'weight':>9} {'diversity':>9}"]
    for row in top.to_pylist():
        diversity = "-" if row["diversity"] is None else f"{row['diversity']:.3f}"
        lines.append(f"  {row['rank']:>4}  {row['id']:<16} {row['score']:>9.4f} {row['weight']:>9.4f} {diversity:>9}")
    print("\n".join(lines), file=_out(file))


def _lake(where: str | Lake) -> Lake:
    return where if isinstance(where, Lake) else Lake(where)


# The columns of `alray runs list`: header, width, the runs row's value as text.
_RUN_COLUMNS = ("RUN_ID", "STATUS", "STARTED (UTC)", "SELECTED", "RADIUS", "ERROR")


def _run_cells(row: dict[str, Any]) -> list[str]:
    radius = "-" if row["coverage_radius"] is None else f"{row['coverage_radius']:.4f}"
    selected = "-" if row["n_selected"] is None else str(row["n_selected"])
    started = "-" if row["started_at"] is None else f"{row['started_at']:%Y-%m-%d %H:%M:%S}"
    return [row["run_id"], row["status"], started, selected, radius, row.get("error") or ""]


def _expanded(row: dict[str, Any]) -> dict[str, Any]:
    """A runs row with its JSON columns (config, timings, versions, filter counts, details) as objects."""
    for key in ("config", "timings", "versions", "filtered_by_reason", "selection_details"):
        if isinstance(row.get(key), str) and row[key]:
            row[key] = json.loads(row[key])
    return row


def print_runs(where: str | Lake, *, as_json: bool = False, file: TextIO | None = None) -> None:
    """One row per run, newest first, under a header: id, status, start, selected, radius, a failed run's error.

    ``as_json``: one JSON object per line, every field of the run."""
    out = _out(file)
    rows = runs_table(_lake(where)).sort_by([("started_at", "descending")]).to_pylist()
    if as_json:
        for row in rows:
            print(json.dumps(_expanded(row), default=str, sort_keys=True), file=out)
        return
    cells = [_run_cells(row) for row in rows]
    widths = [max([len(header), *(len(c[i]) for c in cells)]) for i, header in enumerate(_RUN_COLUMNS)]
    for line in [list(_RUN_COLUMNS), *cells]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip(), file=out)


def print_run(where: str | Lake, run_id: str, *, as_json: bool = False, file: TextIO | None = None) -> None:
    """Every field of one run, as JSON (config, timings, versions and filter counts expanded);
    indented, or one line with ``as_json``."""
    print(json.dumps(_expanded(run_row(_lake(where), run_id)), indent=None if as_json else 2, default=str,
                     sort_keys=as_json), file=_out(file))
