"""The round_items table: where each id a round selected stands (selected, sent, labeled, expired).

A round is a run; its partition holds one row per id it selected. Each move rewrites that one
partition with :meth:`Lake.update_run`, which retries when another writer changed the round in
between, and writes nothing when nothing changes, so every move can be repeated safely.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa

from alray.lake.outputs import Lake
from alray.lake.selections import run_picks
from alray.lake.small_tables import read_whole, shaped
from alray.tables import ROUND_ITEMS_SCHEMA

Row = dict[str, Any]


def read_items(lake: Lake) -> pa.Table:
    """Every row of the round_items table (ROUND_ITEMS_SCHEMA); empty when it does not exist yet."""
    return read_whole(lake, "round_items", ROUND_ITEMS_SCHEMA)


def _update_round(lake: Lake, run_id: str, change: Callable[[dict[str, Row]], dict[str, Row]]) -> int:
    """Apply ``change`` (rows by id in, rows by id out) to one round; return how many rows differ."""
    changed = 0

    def update(rows: pa.Table) -> pa.Table | None:
        nonlocal changed
        before = {row["id"]: row for row in shaped(rows, ROUND_ITEMS_SCHEMA).to_pylist()}
        after = change(dict(before))
        changed = sum(before.get(i) != row for i, row in after.items()) + len(before.keys() - after.keys())
        if not changed:
            return None
        order = sorted(after, key=lambda i: (after[i]["rank"] is None, after[i]["rank"] or 0, i))  # unranked last
        return pa.Table.from_pylist([after[i] for i in order], schema=ROUND_ITEMS_SCHEMA)

    lake.update_run("round_items", run_id, update, schema=ROUND_ITEMS_SCHEMA)
    return changed


def record_selection(lake: Lake, run_id: str, *, at: dt.datetime) -> int:
    """Make the run's selected ids (its ranking's picks) a round, each ``selected``; return the rows changed.

    A rerun of the run replaces its picks: ids it selects again keep their state (sent, labeled,
    expired, with their times and destination) and take their new rank; ids only selected before
    leave the round; ids that left the lake before (sent, labeled, expired) but that it does not
    select again stay, in their state and with no rank, since the labeling tool still holds them.
    A rerun does not keep its own round's ids out of its candidates (:func:`out_for_labeling`),
    so with the same settings it selects the same ids and the round is unchanged.
    """
    picks = {row["id"]: row["rank"] for row in run_picks(lake, "ranking", run_id, ["id", "rank"])}

    def change(rows: dict[str, Row]) -> dict[str, Row]:
        kept = {i: {**row, "rank": picks.get(i)} for i, row in rows.items()
                if row["state"] != "selected" or i in picks}
        for i, rank in picks.items():
            if i not in kept:
                kept[i] = {name: None for name in ROUND_ITEMS_SCHEMA.names} | {
                    "run_id": run_id, "id": i, "rank": rank, "state": "selected", "selected_at": at}
        return kept

    return _update_round(lake, run_id, change)


def drop_selected(lake: Lake, run_id: str) -> int:
    """Remove the round's ids that are still only ``selected`` (a failed rerun leaves no picks); ids that
    left the lake (sent, labeled, expired) stay. Returns the rows removed."""
    return _update_round(lake, run_id, lambda rows: {i: row for i, row in rows.items()
                                                     if row["state"] != "selected"})


def round_ids(lake: Lake, run_id: str) -> set[str]:
    """The ids of one round, whatever their state."""
    return {row["id"] for row in read_items(lake).to_pylist() if row["run_id"] == run_id}


def mark_sent(lake: Lake, run_id: str, ids: Iterable[str], *, destination: str, at: dt.datetime) -> int:
    """Move ``ids`` of a round from selected (or expired) to sent; ids already sent or labeled stay."""
    wanted = set(ids)

    def change(rows: dict[str, Row]) -> dict[str, Row]:
        for i in wanted & rows.keys():
            if rows[i]["state"] in ("selected", "expired"):
                rows[i] = {**rows[i], "state": "sent", "sent_at": at, "destination": destination,
                           "expired_at": None}
        return rows

    return _update_round(lake, run_id, change)


def mark_labeled(lake: Lake, labels: list[Row]) -> int:
    """Move the ids of ``labels`` (current labels: ``id``, ``label``, ``round``, ``labeled_at``) to labeled.

    A label names its round; one that does not (labeled outside an export) goes to the latest round
    that selected its id. Every other round where the id waits (``selected`` or ``sent``) has it
    labeled too: it needs no label any more. Ids no round selected are left alone. Returns the rows
    changed.
    """
    items = read_items(lake).to_pylist()
    latest_round: dict[str, tuple[Any, str]] = {}
    waiting: dict[str, set[str]] = {}
    for row in items:
        stamp = (row["selected_at"] or dt.datetime.min.replace(tzinfo=dt.timezone.utc), row["run_id"])
        if row["id"] not in latest_round or stamp > latest_round[row["id"]]:
            latest_round[row["id"]] = stamp
        if row["state"] in ("selected", "sent"):
            waiting.setdefault(row["id"], set()).add(row["run_id"])
    in_round = {(row["run_id"], row["id"]) for row in items}
    by_round: dict[str, dict[str, Row]] = {}
    for label in labels:
        round_id = label.get("round")
        if not round_id or (round_id, label["id"]) not in in_round:
            found = latest_round.get(label["id"])
            round_id = found[1] if found else None
        for each in ({round_id} if round_id else set()) | waiting.get(label["id"], set()):
            by_round.setdefault(each, {})[label["id"]] = label

    changed = 0
    for round_id, wanted in sorted(by_round.items()):
        def change(rows: dict[str, Row], wanted: dict[str, Row] = wanted) -> dict[str, Row]:
            for i in wanted.keys() & rows.keys():
                label = wanted[i]
                rows[i] = {**rows[i], "state": "labeled", "labeled_at": label["labeled_at"], "label": label["label"],
                           "expired_at": None}
            return rows

        changed += _update_round(lake, round_id, change)
    return changed


def expire_items(lake: Lake, *, now: dt.datetime, after: dt.timedelta | None) -> int:
    """Move the sent ids not labeled within ``after`` of being sent to expired (at sent_at + after)."""
    if after is None:
        return 0
    rounds = {row["run_id"] for row in read_items(lake).to_pylist()
              if row["state"] == "sent" and row["sent_at"] is not None and row["sent_at"] + after <= now}

    def change(rows: dict[str, Row]) -> dict[str, Row]:
        for i, row in rows.items():
            if row["state"] == "sent" and row["sent_at"] is not None and row["sent_at"] + after <= now:
                rows[i] = {**row, "state": "expired", "expired_at": row["sent_at"] + after}
        return rows

    return sum(_update_round(lake, round_id, change) for round_id in sorted(rounds))


def out_for_labeling(lake: Lake, *, now: dt.datetime, after: dt.timedelta | None,
                     except_round: str | None = None) -> pa.Array:
    """Distinct ids sent to a labeling tool and neither labeled nor expired at ``now``, by any round but
    ``except_round`` (a rerun's own: those are its own picks, not another round's)."""
    ids = {row["id"] for row in read_items(lake).to_pylist()
           if row["state"] == "sent" and row["run_id"] != except_round
           and (after is None or row["sent_at"] is None or row["sent_at"] + after > now)}
    return pa.array(sorted(ids), pa.string())
