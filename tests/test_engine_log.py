"""The engines' output captured into a log file: fd-level writes, Python streams, children, notable lines."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys

import pytest

from alray import engine_log
from alray.engine_log import capture, log_run_to, notable_message


@pytest.mark.parametrize(("line", "name"), [
    ("2026-12-05 14:44:01,419\tWARNING services.py:2248 -- WARNING: The object store is using /tmp/ray instead "
     "of /dev/shm because /dev/shm has only 67108864 bytes available. This will harm performance!", "ray_shm"),
    ("(raylet) Spilled 2048 MiB, 12 objects, avg write throughput 600 MiB/s", "ray_spill"),
    ("(raylet) [2026-12-05 14:50:00,000 E 12 12] node_manager.cc:3000: 1 Worker(s) were killed due to the node "
     "running low on memory.", "ray_oom"),
    ("WARNING streaming_executor.py:500 -- Cluster resources are not enough to run any task from "
     "ActorPoolMapOperator[MapBatches(PoolScorer)]. The job may hang forever", "ray_resources"),
    ("Exception in thread \"Executor task launch worker\" java.lang.OutOfMemoryError: Java heap space", "spark_oom"),
    ("26/12/05 14:44:36 WARN MemoryStore: Not enough space to cache rdd_12_3 in memory!", "spark_cache"),
])
def test_lines_a_user_can_act_on_become_one_line_naming_the_key(line, name):
    found = notable_message(line)
    assert found is not None and found[0] == name
    assert "\n" not in found[1] and found[1].startswith(("ray: ", "spark: "))


@pytest.mark.parametrize("line", [
    "2026-12-05 14:44:01,419\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled for "
    "this Ray cluster.",
    "[2026-12-05 14:44:06,259 E 29931 29931] core_worker.cc:2465: Actor with class name: "
    "'MapWorker(MapBatches(PoolScorer))' and ID: '82' has constructor arguments in the object store and "
    "max_restarts > 0.",
    "26/12/05 14:44:34 WARN Utils: Your hostname, vm, resolves to a loopback address: 127.0.0.1",
    "26/12/05 14:44:36 WARN NativeCodeLoader: Unable to load native-hadoop library for your platform",
    "WARNING: Using incubator modules: jdk.incubator.vector",
])
def test_lines_a_user_can_do_nothing_about_stay_in_the_log(line):
    assert notable_message(line) is None


class _ToStderrAtEmit(logging.Handler):
    """As Ray's handlers do: write to whatever sys.stderr is when a record is emitted."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


def _sync() -> None:
    assert engine_log._PIPE is not None
    engine_log._PIPE.sync()


def test_every_kind_of_engine_output_goes_to_the_log_and_alray_lines_to_the_console(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    log = tmp_path / "lake" / "logs" / "r1.log"
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        with capture() as active:
            os.write(2, b"before the log is named: a JVM banner\n")
            log_run_to(str(log))
            os.write(1, b"fd 1: a C++ line\n")
            os.write(2, b"fd 2: [2026 E core_worker.cc] an error-level line\n")
            print("sys.stdout: a worker line forwarded by Ray")
            print("sys.stderr: a py4j line", file=sys.stderr)
            library = logging.getLogger("alray-test.engine")
            library.addHandler(_ToStderrAtEmit())
            library.warning("a library warning through logging")
            # a child started now (as Spark's JVM is) keeps the pipe after the capture ends
            child = subprocess.Popen([sys.executable, "-c", "import sys, time; print('child now'); "
                                      "sys.stdout.flush(); time.sleep(0.5); print('child later', file=sys.stderr)"])
            os.write(2, b"(raylet) Spilled 512 MiB, 3 objects\n")
            os.write(2, b"(raylet) Spilled 1024 MiB, 6 objects\n")
            print("[alray] score: 10/10 rows", file=active.err)
        child.wait(timeout=30)
        _sync()
    text = log.read_text()
    for expected in ("a JVM banner", "fd 1: a C++ line", "core_worker.cc", "a worker line forwarded",
                     "a py4j line", "a library warning through logging", "child now", "child later",
                     "Spilled 1024 MiB"):
        assert expected in text, expected
    assert text.startswith("==== alray: Ray's and Spark's output from ")
    console = err.getvalue()
    assert "[alray] score: 10/10 rows" in console
    assert not any(marker in console for marker in ("JVM banner", "C++", "core_worker", "py4j", "child",
                                                    "library warning"))
    # the spilling is said once, in one line that names the log
    warnings = [line for line in console.splitlines() if line.startswith("[alray] warning: ray: the object store "
                                                                           "spilled")]
    assert len(warnings) == 1 and "512 MiB" in warnings[0] and str(log) in warnings[0]
    assert out.getvalue() == ""


def test_verbose_echoes_the_engine_lines_and_restores_the_streams(tmp_path):
    err = io.StringIO()
    before = os.fstat(2).st_ino, sys.stderr
    with contextlib.redirect_stderr(err):
        with capture(verbose=True):
            log_run_to(str(tmp_path / "r2.log"))
            os.write(2, b"26/12/05 WARN Utils: a Spark warning\n")
            _sync()
        assert sys.stderr is err
    assert (os.fstat(2).st_ino, sys.stderr) == before
    assert "a Spark warning" in err.getvalue()
    assert "a Spark warning" in (tmp_path / "r2.log").read_text()


def test_without_a_log_file_nothing_is_lost():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), capture():
        os.write(2, b"an engine line of a command that named no log\n")
    assert "an engine line of a command that named no log" in err.getvalue()
