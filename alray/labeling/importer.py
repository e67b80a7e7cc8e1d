"""``alray import-labels``: Label Studio's JSON export into the labels table, and the rounds' ids to labeled.

The labels go in first (only rows the table lacks, one commit), then every id with a label moves
to labeled in its round; both steps write nothing when there is nothing new, so importing the
same export twice changes nothing, and an import killed between the steps finishes when rerun.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alray.config import Config
from alray.errors import InputError
from alray.faults import fail_once
from alray.labeling.label_studio import parse_export, task_kind
from alray.lake import Lake
from alray.lake.labels import add_labels, current_labels, read_labels
from alray.lake.rounds import expire_items, mark_labeled


@dataclass
class ImportSummary:
    """What an import read and changed."""

    source: str
    n_tasks: int
    n_labels: int
    n_new: int
    n_known: int
    import_id: str | None
    rounds_changed: int
    expired: int
    skipped: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(asdict(self), sort_keys=True)


def read_export_file(path: Path) -> Any:
    """The JSON of a Label Studio export file; InputError naming the file when it is not one."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON (line {exc.lineno}: {exc.msg}); expected Label Studio's JSON export") \
            from None


def import_labels(config: Config, tasks: Any, *, source: str, task: str | None = None,
                  now: dt.datetime | None = None) -> ImportSummary:
    """Import the labels of ``tasks`` (Label Studio's JSON export, read from ``source``) into the lake; ``task``
    (classification or detection) defaults to the config's."""
    now = now or dt.datetime.now(dt.timezone.utc)
    lake = Lake.from_output(config.output)
    parsed = parse_export(tasks, where=source, kind=task_kind(task or config.task))
    written = add_labels(lake, parsed.rows, now=now)
    fail_once("import.before_states", kill=True)
    changed = mark_labeled(lake, current_labels(read_labels(lake)))
    expired = expire_items(lake, now=now, after=config.labeled.expiry())
    return ImportSummary(source=source, n_tasks=len(tasks), n_labels=len(parsed.rows), n_new=written.n_new,
                         n_known=written.n_known, import_id=written.import_id, rounds_changed=changed,
                         expired=expired, skipped=parsed.skipped)
