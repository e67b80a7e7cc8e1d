"""A stage's progress display: live bars on a terminal, periodic plain lines elsewhere, nothing when quiet."""

from __future__ import annotations

import io
import re
import time

from alray.progress import Progress


def _score(progress: Progress, *, total: int = 400, steps: int = 8, pause: float = 0.1) -> None:
    with progress.stage("score"):
        progress.rows(0, total=total)
        for step in range(1, steps + 1):
            time.sleep(pause)
            progress.rows(step * total // steps)
            if step == steps // 2:
                progress.say("score: half way")


def test_plain_lines_say_rows_rate_and_time_left_every_interval():
    stream = io.StringIO()
    progress = Progress(stream, interactive=False, interval_s=0.25)
    _score(progress, pause=0.15)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[alray] score: started"
    periodic = [line for line in lines if re.fullmatch(
        r"\[alray\] score: [\d,]+/400 rows \(\d+%\), [\d,]+ rows/s, \d+s left, \d+s so far", line)]
    assert len(periodic) >= 2, lines
    assert "[alray] score: half way" in lines
    assert re.fullmatch(r"\[alray\] score: finished in 1\.\ds \(400 rows, [\d,]+ rows/s\)", lines[-1]), lines[-1]
    assert 1.1 < progress.timings["score_s"] < 5


def test_a_terminal_gets_one_live_bar_that_leaves_one_line():
    stream = io.StringIO()
    progress = Progress(stream, interactive=True)
    _score(progress, pause=0.15)
    text = stream.getvalue()
    assert "\r" in text and re.search(r"\[alray\] score: +\d+%\|.*\| 00:0\d, [\d,]+/400 rows", text), text
    assert "started" not in text
    # what stays on the screen: the line said meanwhile and the end of the stage
    final = [chunk.rsplit("\r", 1)[-1] for chunk in text.split("\n")]
    assert [line for line in final if line.strip()] == [
        "[alray] score: half way", final[-2]]
    assert final[-2].startswith("[alray] score: finished in ")


def test_phases_show_in_the_display_and_sum_their_time():
    stream = io.StringIO()
    progress = Progress(stream, interactive=False, interval_s=0.1)
    with progress.stage("select"):
        for _ in range(2):
            with progress.phase("select", "local_rounds"):
                time.sleep(0.15)
    assert "[alray] select: local_rounds, 0s so far" in stream.getvalue()
    assert 0.3 <= progress.timings["select.local_rounds_s"] < 1


def test_quiet_shows_nothing_and_still_times():
    stream = io.StringIO()
    progress = Progress(stream, quiet=True, interactive=True, interval_s=0.05)
    _score(progress, steps=2)
    progress.say("not shown")
    assert stream.getvalue() == ""
    assert progress.timings["score_s"] > 0
