"""What a run shows while it works: one progress display per stage on stderr, and the stage timings.

On a terminal a stage is a live bar (rows done, rows/s and the time left when its rows are
counted, else the phase it is in and the time so far) that leaves one line when the stage ends.
Elsewhere (a pipe, a file, a scheduler's log) it is plain lines: the start, one every
``interval_s`` with the same figures, and the end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from alray import engine_log


class _Display:
    """The display of one stage: a tqdm bar on a terminal, periodic lines elsewhere."""

    def __init__(self, progress: Progress, name: str) -> None:
        self.progress = progress
        self.name = name
        self.total: int | None = None
        self.done = 0
        self.phase = ""
        self.detail = ""  # what the engine says it is doing (Spark's running tasks)
        self.start = time.perf_counter()
        self.first_rows: tuple[float, int] | None = None  # when rows first moved, and how many
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.bar: Any = None
        if progress.interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=None, desc=f"[alray] {name}", unit=" rows", file=progress.stream, leave=False,
                            dynamic_ncols=True, mininterval=0.2, bar_format="{desc}: {elapsed}{postfix}")
        self.ticker = threading.Thread(target=self._tick, name=f"alray-progress-{name}", daemon=True)
        self.ticker.start()

    def rows(self, done: int, total: int | None = None) -> None:
        with self.lock:
            if total is not None:
                self.total = total
            self.done = min(done, self.total) if self.total else done
            if self.first_rows is None and done > 0:
                self.first_rows = (time.perf_counter(), self.done)
            if self.bar is not None:
                self._draw()

    def set_phase(self, phase: str) -> None:
        with self.lock:
            self.phase = phase
            if self.bar is not None:
                self._draw()

    def set_detail(self, detail: str) -> None:
        with self.lock:
            self.detail = detail
            if self.bar is not None:
                self._draw()

    def rate(self) -> float | None:
        """Rows per second since the first rows were done (actor start-up is not work)."""
        if self.first_rows is None:
            return None
        seconds = time.perf_counter() - self.first_rows[0]
        return (self.done - self.first_rows[1]) / seconds if seconds > 0.2 else None

    def figures(self) -> str:
        """``1,200/1,824 rows (66%), 150 rows/s, 4s left``, or the phase."""
        parts = []
        if self.total is not None or self.done:
            if self.total:
                share = "" if self.bar is not None else f" ({self.done / self.total:.0%})"  # the bar shows it
                parts.append(f"{self.done:,}/{self.total:,} rows{share}")
            else:
                parts.append(f"{self.done:,} rows")
            rate = self.rate()
            if rate:
                parts.append(f"{rate:,.0f} rows/s")
                if self.total:
                    parts.append(f"{_duration((self.total - self.done) / rate)} left")
        parts += [text for text in (self.phase, self.detail) if text]
        return ", ".join(parts)

    def _draw(self) -> None:
        figures = self.figures()
        self.bar.set_postfix_str(figures, refresh=False)
        if self.total:
            self.bar.bar_format = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}"
            self.bar.total = self.total
            self.bar.n = self.done
        self.bar.refresh()

    def _tick(self) -> None:
        every = 0.5 if self.bar is not None else self.progress.interval_s
        while not self.stop.wait(every):
            with self.lock:
                if self.bar is not None:
                    self._draw()  # the elapsed time moves even when no row does
                    continue
                figures = self.figures()
            if figures:
                self.progress.say(f"{self.name}: {figures}, {_duration(time.perf_counter() - self.start)} so far")

    def close(self) -> None:
        self.stop.set()
        self.ticker.join()
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class Progress:
    """A run's progress displays and stage timings.

    ``quiet`` shows nothing (the timings are still kept). ``interactive`` forces or forbids the
    live bars; by default they are used when the stream is a terminal. ``stream`` defaults to
    the console's stderr (:func:`alray.engine_log.console`), looked up when a line is written.
    """

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False, interactive: bool | None = None,
                 interval_s: float = 10.0) -> None:
        self._stream = stream
        self.quiet = quiet
        self._interactive = interactive
        self.interval_s = interval_s
        self.timings: dict[str, float] = {}
        self._displays: list[_Display] = []

    @property
    def stream(self) -> TextIO:
        """Where the lines go."""
        return self._stream if self._stream is not None else engine_log.console()[1]

    @property
    def interactive(self) -> bool:
        """Whether stages show live bars: a terminal, and no engine output echoed beside them."""
        if self.quiet:
            return False
        if self._interactive is not None:
            return self._interactive
        try:
            tty = self.stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        return tty and not (engine_log.active() is not None and engine_log.shows_engine_output())

    def say(self, message: str) -> None:
        """Print one progress line (above a live bar, if one is shown)."""
        if not self.quiet:
            engine_log.write_line(self.stream, f"[alray] {message}")

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage and show its progress; rows and phases reported meanwhile feed the display."""
        display = None
        if not self.quiet:
            if not self.interactive:
                self.say(f"{name}: started")
            display = _Display(self, name)
            self._displays.append(display)
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.timings[f"{name}_s"] = round(elapsed, 3)
            if display is not None:
                display.close()
                self._displays.remove(display)
                rows = f" ({display.done:,} rows, {display.done / elapsed:,.0f} rows/s)" if display.done else ""
                self.say(f"{name}: finished in {elapsed:.1f}s{rows}")

    def rows(self, done: int, total: int | None = None) -> None:
        """Rows the current stage has finished (of ``total`` when known); thread-safe."""
        if self._displays:
            self._displays[-1].rows(done, total)

    def detail(self, text: str) -> None:
        """What the current stage's engine is doing (``tasks 3/8``), shown after its phase; thread-safe."""
        if self._displays:
            self._displays[-1].set_detail(text)

    @contextmanager
    def phase(self, stage: str, name: str) -> Iterator[None]:
        """Time one phase of a stage (``timings["STAGE.NAME_s"]``, summed over repeats); the display shows it.
        On a lazy engine a phase holds the action that runs it: its time includes what it computes."""
        if self._displays:
            self._displays[-1].set_phase(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            key = f"{stage}.{name}_s"
            self.timings[key] = round(self.timings.get(key, 0.0) + time.perf_counter() - start, 3)
