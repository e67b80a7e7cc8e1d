"""A lake's runs table read back: the table, one run's row, and the config a run recorded (with the
credentials of the config given, which the runs table never holds)."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from alray.config import REDACTED, Config, config_from_dict
from alray.errors import AlrayError, InputError
from alray.lake import Lake


def runs_table(lake: Lake) -> pa.Table:
    """Every row of the lake's runs table; InputError naming ``output.path`` when there is none."""
    try:
        table = lake.read_table("runs")
    except InputError:
        raise InputError(f"output.path: no runs table at {lake.table('runs')}") from None
    if table.num_rows == 0 and "run_id" not in table.schema.names:
        raise InputError(f"output.path: no runs table at {lake.table('runs')}")
    return table


def run_row(lake: Lake, run_id: str) -> dict[str, Any]:
    """The runs row of ``run_id``; InputError naming the run when the lake has none."""
    table = runs_table(lake)
    rows = table.filter(pc.equal(table.column("run_id"), run_id)).to_pylist()
    if not rows:
        raise InputError(f"run {run_id!r}: not in the runs table under {lake.root}")
    return rows[0]


def _with_credentials(recorded: Any, given: Any) -> Any:
    """``recorded`` (a config as the runs table holds it) with each REDACTED value taken from ``given``
    at the same place, or left out when ``given`` has none there."""
    if isinstance(recorded, dict):
        merged = {}
        for key, value in recorded.items():
            other = given.get(key) if isinstance(given, dict) else None
            if value == REDACTED:
                if other is not None and other != REDACTED:
                    merged[key] = other
                continue
            merged[key] = _with_credentials(value, other)
        return merged
    if isinstance(recorded, list):
        others = given if isinstance(given, list) else []
        return [_with_credentials(v, others[i] if i < len(others) else None) for i, v in enumerate(recorded)]
    return recorded


def recorded_config(run: dict[str, Any], given: Config) -> tuple[Config, str]:
    """The config a run recorded (its pool, labeled set, model, selection), reading the lake ``given`` names.

    The runs table keeps configs without credentials: those come from ``given`` where its keys are
    the same. Returns the config and, when the record cannot be used (none, or one an older
    version wrote), ``given`` and a note saying so.
    """
    try:
        data = json.loads(run.get("config") or "")
        data = _with_credentials(data, given.model_dump(mode="json"))
        data["output"] = given.output.model_dump(mode="json")  # where the run was found, not where it was written
        return config_from_dict(data, source=f"run {run.get('run_id')}'s recorded config"), ""
    except (AlrayError, ValueError, TypeError, KeyError) as exc:
        note = f"the run's recorded config cannot be read ({str(exc).splitlines()[0][:200]}); the pool and " \
               "labeled set of --config are shown"
        return given, note
