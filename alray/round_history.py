"""The history of a lake's rounds (``alray rounds``): per run, how many ids it selected, sent, got labeled
or saw expire, and the labels that came back."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from typing import Any

import pyarrow.compute as pc

from alray.lake import Lake
from alray.lake.rounds import expire_items, read_items
from alray.run_records import runs_table

COUNTS = ("selected", "sent", "waiting", "labeled", "expired")


def round_history(lake: Lake, *, now: dt.datetime, after: dt.timedelta | None) -> list[dict[str, Any]]:
    """One entry per succeeded run, oldest first: its counts and label distribution.

    Sent ids past ``after`` are moved to expired first. ``selected`` counts the ids the round
    selected, ``sent`` those exported (then waiting, labeled or expired), ``waiting`` those out
    for labeling now; ``labels`` maps each label to its count among the round's labeled ids.
    """
    expire_items(lake, now=now, after=after)
    runs = runs_table(lake).select(["run_id", "status", "started_at", "n_selected"])
    runs = runs.filter(pc.equal(runs.column("status"), "succeeded")).sort_by([("started_at", "ascending")])
    by_round: dict[str, list[dict[str, Any]]] = {}
    for row in read_items(lake).to_pylist():
        by_round.setdefault(row["run_id"], []).append(row)
    history = []
    for run in runs.to_pylist():
        items = by_round.get(run["run_id"], [])
        states = Counter(row["state"] for row in items)
        history.append({
            "run_id": run["run_id"], "started_at": run["started_at"].isoformat() if run["started_at"] else None,
            "selected": len(items) if items else int(run["n_selected"] or 0),
            "sent": sum(1 for row in items if row["sent_at"] is not None),
            "waiting": states["sent"], "labeled": states["labeled"], "expired": states["expired"],
            "labels": dict(sorted(Counter(row["label"] for row in items if row["state"] == "labeled").items())),
            "destinations": sorted({row["destination"] for row in items if row["destination"]}),
        })
    return history


def format_history(history: list[dict[str, Any]]) -> str:
    """The history as a table with a header row, one line per round."""
    header = f"{'round':<28} {'started':<16} " + " ".join(f"{name:>8}" for name in COUNTS) + "  labels"
    lines = [header]
    for entry in history:
        started = entry["started_at"][:16].replace("T", " ") if entry["started_at"] else "-"
        labels = ", ".join(f"{label} {n}" for label, n in entry["labels"].items()) or "-"
        lines.append(f"{entry['run_id']:<28} {started:<16} " + " ".join(f"{entry[name]:>8}" for name in COUNTS)
                     + f"  {labels}")
    return "\n".join(lines)


def history_json(history: list[dict[str, Any]]) -> str:
    """The history as one JSON line."""
    return json.dumps({"rounds": history}, sort_keys=True)
