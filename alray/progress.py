"""Progress lines per stage on stderr, and the stage timings the run summary reports."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """Prints one line when a stage starts and one when it ends; keeps each stage's seconds."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.timings: dict[str, float] = {}

    def say(self, message: str) -> None:
        """Print one progress line."""
        if not self.quiet:
            print(f"[alray] {message}", file=self.stream, flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage and report its start and end."""
        self.say(f"{name}: started")
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.timings[f"{name}_s"] = round(elapsed, 3)
            self.say(f"{name}: finished in {elapsed:.1f}s")

    @contextmanager
    def phase(self, stage: str, name: str) -> Iterator[None]:
        """Time one phase of a stage (``timings["STAGE.NAME_s"]``, summed over repeats); prints nothing.
        On a lazy engine a phase holds the action that runs it: its time includes what it computes."""
        start = time.perf_counter()
        try:
            yield
        finally:
            key = f"{stage}.{name}_s"
            self.timings[key] = round(self.timings.get(key, 0.0) + time.perf_counter() - start, 3)
