"""What the benchmark scripts share: peak-memory sampling and writing their JSON results."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any


class Sampler:
    """Calls ``_sample`` every ``interval_s`` seconds on a thread, between ``start`` and ``stop``
    (or inside a ``with`` block), and once more at the end."""

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PeakMemory(Sampler):
    """Samples the resident memory of this process and of its children (Spark's JVM, workers).

    ``driver_peak`` is this process's peak in bytes, ``total_peak`` that of the whole tree.
    """

    def __init__(self, interval_s: float = 0.1) -> None:
        import psutil  # only the benchmarks that measure memory need it

        super().__init__(interval_s)
        self._error = psutil.Error
        self._process = psutil.Process()
        self.driver_peak = self._process.memory_info().rss
        self.total_peak = self.driver_peak

    def _sample(self) -> None:
        try:
            driver = self._process.memory_info().rss
            children = sum(c.memory_info().rss for c in self._process.children(recursive=True))
        except self._error:  # a child ended between listing and reading
            return
        self.driver_peak = max(self.driver_peak, driver)
        self.total_peak = max(self.total_peak, driver + children)


def write_results(output: Path, results: dict[str, Any]) -> None:
    """Write a benchmark's figures as JSON and say where."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {output}")
