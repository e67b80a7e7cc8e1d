"""Cluster entry point of a whole run (score on Ray, then select on Spark): the command of the CronJob.

    python jobs/run.py --config s3://bucket/alray.yaml [--run-id daily-{date}] [--ray-address ADDR] [--spark-master URL]

Without addresses, both engines run inside the process (local Ray, Spark local[N]). Exits with the
CLI's codes (0 ok, 2 bad config or input, 1 internal failure).
"""

from __future__ import annotations

import os
import sys

# jobs/select.py shares its name with the standard library's `select`, which subprocess and asyncio
# import: move this folder from the front of the import path to its end, after the standard library.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE] + [_HERE]

from _common import run_entry_point  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_entry_point("run", run_id_required=False))
