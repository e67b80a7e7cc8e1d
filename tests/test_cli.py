"""The alray command: exit codes and one-line errors, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import yaml


def alray(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alray.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def write_config(tmp_path, **changes) -> str:
    data = {
        "pool": {"path": str(tmp_path / "no-pool")},
        "model": {"checkpoint": str(tmp_path / "model.pt")},
        "selection": {"n_samples": 5},
        "output": {"path": str(tmp_path / "lake")},
        **changes,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_validate_prints_the_resolved_config(tmp_path):
    result = alray("validate", write_config(tmp_path), "--set", "selection.n_samples=7")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["selection"]["n_samples"] == 7
    assert re.fullmatch(r".*job\.yaml: valid \(config hash [0-9a-f]{16}\)\n", result.stderr), result.stderr


def test_bad_config_exits_2_with_one_line_naming_the_key(tmp_path):
    result = alray("validate", write_config(tmp_path, selection={"n_samples": 5, "strategy": "x"}))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "selection.strategy: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_override_exits_2_naming_the_flag(tmp_path):
    result = alray("run", write_config(tmp_path), "--set", "selection.n_samples=-1")
    assert result.returncode == 2
    assert result.stderr.startswith("alray: error: --set selection.n_samples=-1: selection.n_samples: ")
    assert "job.yaml" not in result.stderr and "Traceback" not in result.stderr
    result = alray("validate", write_config(tmp_path), "--set", "selection.n_samples=abc",
                   "--set", "score.batch_size=0")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    parts = result.stderr.removeprefix("alray: error: ").split("; ")
    assert sorted(part.split(": ")[0] for part in parts) == ["--set score.batch_size=0",
                                                              "--set selection.n_samples=abc"]


def test_an_error_of_the_file_names_the_file_even_with_overrides(tmp_path):
    result = alray("validate", write_config(tmp_path, selection={"n_samples": "x"}), "--set", "score.batch_size=8")
    assert result.returncode == 2
    assert result.stderr.startswith(f"alray: error: {tmp_path / 'job.yaml'}: selection.n_samples: ")


def test_validate_json_is_one_line(tmp_path):
    result = alray("validate", write_config(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert result.stdout.count("\n") == 1 and shown["valid"] is True
    assert re.fullmatch(r"[0-9a-f]{16}", shown["config_hash"]) and shown["config"]["selection"]["n_samples"] == 5


def test_missing_pool_exits_2_naming_the_table(tmp_path):
    result = alray("run", write_config(tmp_path), "--quiet", "--run-id", "r1")
    assert result.returncode == 2
    assert f"{tmp_path / 'no-pool'}: table not found" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_missing_config_file_exits_2(tmp_path):
    result = alray("run", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "config file not found" in result.stderr


def test_bad_run_id_exits_2_naming_the_flag(tmp_path):
    result = alray("run", write_config(tmp_path), "--run-id", "a/b")
    assert result.returncode == 2
    assert result.stderr.startswith("alray: error: --run-id a/b: run.run_id: expected letters")
    assert "job.yaml" not in result.stderr


def test_embed_without_an_embed_section_exits_2(tmp_path):
    result = alray("embed", write_config(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "embed: " in result.stderr and "no embed section" in result.stderr
    result = alray("embed", write_config(tmp_path, embed={"epochs": 0}))
    assert result.returncode == 2 and "embed.epochs" in result.stderr


def test_embed_trains_prints_each_epoch_then_reuses(tmp_path):
    import pyarrow.parquet as pq
    import pytest

    from alray.demo import build_pool

    pytest.importorskip("ray.train")
    pool, _images, _labels = build_pool(n_images=24, n_blank=0, n_blurred=0, n_corrupt=0, seed=0)
    (tmp_path / "pool").mkdir()
    pq.write_table(pool, str(tmp_path / "pool" / "part-00000.parquet"))
    config = write_config(tmp_path, pool={"path": str(tmp_path / "pool")}, model=None, embed={
        "epochs": 2, "batch_size": 8, "image_size": 16, "channels": 1, "width": 4, "num_workers": 1})
    result = subprocess.run([sys.executable, "-m", "alray.cli", "embed", config], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    epochs = re.findall(r"\[alray\] embed: epoch (\d)/2: loss [0-9.]+, [0-9.]+ images/s", result.stderr)
    assert epochs == ["1", "2"], result.stderr[-2000:]
    assert re.search(r"encoder trained: .*/lake/encoders/[0-9a-f]{16}/encoder\.pt\n  key [0-9a-f]{16}, 2 epochs, "
                     r"final loss [0-9.]+, wall [0-9.]+s", result.stdout), result.stdout
    again = alray("embed", config, "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["reused"] is True and summary["epochs"] == 2 and "reused encoder" in again.stderr


# What Ray's and Spark's internals print: none of it may reach the console of a default run.
ENGINE_MARKERS = re.compile(r"\bWARN\b|\bINFO\b|log4j|core_worker|streaming_executor|raylet|\(MapWorker|py4j|"
                            r"SparkContext|\[Stage \d|Using Spark's|Token authentication|jdk\.incubator")


def _in_a_terminal(args: list[str], timeout: float = 300, cwd=None) -> tuple[int, str]:
    """Run ``python -m alray.cli ARGS`` with a pseudo-terminal (120 x 40) as its stdin, stdout and stderr."""
    import fcntl
    import os
    import pty
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    job = subprocess.Popen([sys.executable, "-m", "alray.cli", *args], stdin=slave, stdout=slave, stderr=slave,
                           close_fds=True, cwd=cwd)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has exited
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = job.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if job.poll() is None:
            job.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def _alray_lines_only(code: int, screen: str, *, rows: str) -> None:
    """A succeeded command's screen: at most 40 lines, none of the engines', a live score bar over ``rows``."""
    assert code == 0, screen[-3000:]
    lines = screen.replace("\r\n", "\n").split("\n")
    assert len(lines) <= 40, screen
    assert not ENGINE_MARKERS.search(screen), ENGINE_MARKERS.search(screen)
    # a live bar with rows, rate and percentage drew over itself, and left one line per stage
    assert re.search(rf"\r\[alray\] score: +\d+%\|.*\| \d\d:\d\d, [\d,]+/{rows} rows", screen)
    assert re.search(rf"[\r\n]\[alray\] score: finished in [\d.]+s \({rows} rows, [\d,]+ rows/s\)", screen)


def test_the_demo_on_a_terminal_shows_at_most_40_alray_lines_and_logs_the_engines(tmp_path):
    """What the issue asks of ``make demo``: ``alray demo`` builds the pool and the model (under the directory it
    runs from) and runs conf/demo.yaml in at most 40 lines of its own (its selection runs locally: the next
    test sees Spark's logs go to the file too)."""
    from pathlib import Path

    demo_yaml = Path(__file__).resolve().parents[1] / "conf" / "demo.yaml"
    code, screen = _in_a_terminal(["demo", "--config", str(demo_yaml), "--run-id", "tty-1"], cwd=tmp_path,
                                  timeout=600)
    _alray_lines_only(code, screen, rows=r"1,8\d\d")
    assert "demo: pool of 1" in screen and "The ranking of what to label next:" in screen
    log = tmp_path / "demo" / "lake" / "logs" / "tty-1.log"
    assert f"engine logs (Ray, Spark): {log.relative_to(tmp_path)}" in screen
    text = log.read_text()
    assert "streaming_executor" in text and "core_worker.cc" in text  # Ray's driver and its C++ core


def test_a_run_on_a_terminal_shows_alray_lines_only_and_logs_the_engines(demo_files, tmp_path):
    from tests.conftest import demo_config

    config = demo_config(demo_files, tmp_path / "lake")  # selection on Spark: both engines start
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    code, screen = _in_a_terminal(["run", str(path), "--run-id", "tty-1"])
    _alray_lines_only(code, screen, rows=r"3\d\d")
    log = tmp_path / "lake" / "logs" / "tty-1.log"
    assert f"engine logs (Ray, Spark): {log}" in screen
    text = log.read_text()
    assert "streaming_executor" in text and "core_worker.cc" in text  # Ray's driver and its C++ core
    assert "log4j" in text and " WARN " in text  # Spark's JVM


def test_verbose_shows_the_engines_and_quiet_only_the_summary(demo_files, tmp_path):
    from tests.conftest import demo_config

    config = demo_config(demo_files, tmp_path / "lake", engine="local")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    verbose = alray("run", str(path), "--run-id", "loud", "--verbose")
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert "streaming_executor" in verbose.stderr and "[alray] score: finished" in verbose.stderr
    # scored again (not carried over from the first run), so that the engines have something to log
    quiet = alray("run", str(path), "--run-id", "quiet", "--quiet", "--set", "run.incremental=false")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stderr == ""
    assert quiet.stdout.startswith("\nrun quiet: succeeded\n") and "engine logs (Ray, Spark): " in quiet.stdout
    assert "streaming_executor" in (tmp_path / "lake" / "logs" / "quiet.log").read_text()
