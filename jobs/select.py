"""Cluster entry point for `alray select`: `python jobs/select.py CONFIG --run-id ID [--set K=V]...`.

Exits with the CLI's codes (0 ok, 2 bad config or input, 1 internal failure).
"""

from __future__ import annotations

import sys

from alray.cli import main

if __name__ == "__main__":
    sys.exit(main(["select", *sys.argv[1:]]))
