"""Cluster entry point of the scoring stage (Ray): the command of a KubeRay RayJob or `ray job submit`.

    python jobs/score.py --config s3://bucket/alray.yaml --run-id nightly-{date} --ray-address auto

Exits with the CLI's codes (0 ok, 2 bad config or input, 1 internal failure).
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
    sys.exit(run_entry_point("score"))
