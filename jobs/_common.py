"""What the cluster entry points share: a config read from a path or an object-store URI, run ids
from a template, and the CLI's exit codes.

Every entry point takes ``--config PATH_OR_URI`` and ``--run-id ID``; the other arguments
(``--set``, ``--ray-address``, ``--spark-master``, ``--json``, ``--quiet``, ``--verbose``) go to the ``alray``
command unchanged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from collections.abc import Sequence

from alray.cli import EXIT_USER
from alray.cli import main as cli_main
from alray.config import RUN_ID_PATTERN

# Schedulers without templating of their own (Kubernetes CronJob, RayCronJob,
# ScheduledSparkApplication) name a run after its day, so a retry of that day replaces the day's
# run, and a select job finds the score job's run of the same day.
RUN_ID_FIELDS = {"date": "%Y%m%d", "hour": "%Y%m%dT%H"}


def expand_run_id(template: str, now: dt.datetime | None = None) -> str:
    """``template`` with ``{date}`` (UTC ``YYYYMMDD``) and ``{hour}`` (``YYYYMMDDTHH``) filled in."""
    now = now or dt.datetime.now(dt.timezone.utc)
    run_id = template
    for name, pattern in RUN_ID_FIELDS.items():
        run_id = run_id.replace("{" + name + "}", now.strftime(pattern))
    if "{" in run_id or "}" in run_id:
        raise ValueError(f"--run-id {template!r}: only {{date}} and {{hour}} can be filled in")
    if not RUN_ID_PATTERN.match(run_id):
        raise ValueError(f"--run-id {template!r}: expected letters, digits, '.', '_' or '-' (at most 128)")
    return run_id


def fetch_config(location: str, folder: str) -> str:
    """A local path to the config at ``location``: the path itself, or a copy of an object-store URI.

    URIs are read with pyarrow's file systems (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``,
    ``file://``), with their usual credential chains. Raises ValueError naming the URI.
    """
    if "://" not in location:
        return location
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        filesystem, inner = pafs.FileSystem.from_uri(location)
        with filesystem.open_input_stream(inner) as stream:
            data = stream.read()
    except FileNotFoundError:
        raise ValueError(f"{location}: config file not found") from None
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"{location}: cannot read config ({str(exc).splitlines()[0]})") from None
    local = os.path.join(folder, os.path.basename(inner.rstrip("/")) or "config.yaml")
    with open(local, "wb") as file:
        file.write(data)
    return local


def run_entry_point(command: str, argv: Sequence[str] | None = None, *, run_id_required: bool = True) -> int:
    """Run ``alray COMMAND`` for a cluster job; returns the CLI's exit code (0, 1 or 2)."""
    parser = argparse.ArgumentParser(
        prog=f"jobs/{command}.py", description=f"Cluster entry point for `alray {command}`; other arguments "
        "(--set, --ray-address, --spark-master, --json, --quiet, --verbose) go to the alray command.")
    parser.add_argument("--config", required=True, help="YAML config: a path, or a URI such as s3://bucket/alray.yaml")
    parser.add_argument("--run-id", required=run_id_required,
                        help="run id; {date} and {hour} become the UTC date (YYYYMMDD) and hour (YYYYMMDDTHH)")
    args, rest = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="alray-job-") as folder:
        try:
            config = fetch_config(args.config, folder)
            run_id = expand_run_id(args.run_id) if args.run_id else None
        except ValueError as exc:
            print(f"alray: error: {exc}", file=sys.stderr)
            return EXIT_USER
        if config != args.config:
            print(f"alray: config {args.config} read into {config}", file=sys.stderr)
        return cli_main([command, config, *(["--run-id", run_id] if run_id else []), *rest])
