"""Cluster entry point of the selection stage (Spark): the main file of a SparkApplication or `spark-submit`.

    spark-submit --master spark://host:7077 jobs/select.py --config s3://bucket/alray.yaml --run-id nightly-{date}

Under spark-submit, spark-submit's master and deploy mode are used. Exits with the CLI's codes
(0 ok, 2 bad config or input, 1 internal failure).
"""

from __future__ import annotations

import os
import sys

# This file shares its name with the standard library's `select`, which subprocess and asyncio
# import: move this folder from the front of the import path to its end, after the standard library.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE] + [_HERE]

from _common import run_entry_point  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_entry_point("select"))
