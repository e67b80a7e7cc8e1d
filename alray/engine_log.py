"""Where Ray's and Spark's own output goes: a run's log file under the lake, the console only when asked.

Ray's driver logs, the lines its workers print (forwarded to the driver), Spark's JVM (log4j,
its console progress) and py4j write to the process's stdout and stderr, some from Python and
some straight to the file descriptors from C++ and Java. While :func:`capture` is active, file
descriptors 1 and 2 and ``sys.stdout`` / ``sys.stderr`` feed one pipe; a thread reads it and
writes every line to the run's log file. alray's own lines go to the console streams the
process had before (:func:`console`). Processes started meanwhile (Spark's JVM) keep the pipe
as their stdout and stderr, so what they print later still reaches a log file, never the console.

A few engine messages tell the user something they can act on (memory, spilling, a cluster
too small for the job): :data:`NOTABLE` turns each into one console line, once per capture.
"""

from __future__ import annotations

import datetime
import io
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class Notable:
    """An engine message the user can act on: the line it matches and the one line alray prints for it."""

    name: str
    pattern: re.Pattern[str]
    message: str  # formatted with the match's named groups


NOTABLE: tuple[Notable, ...] = (
    Notable("ray_shm", re.compile(r"object store is using \S+ instead of /dev/shm"),
            "ray: the object store is on disk, /dev/shm is too small: scoring is slower; give /dev/shm more "
            "space (docker run --shm-size) or lower ray.object_store_memory"),
    Notable("ray_spill", re.compile(r"Spilled (?P<mib>\d+) MiB"),
            "ray: the object store spilled to disk ({mib} MiB so far); raise ray.object_store_memory or lower "
            "score.batch_size"),
    Notable("ray_oom", re.compile(r"killed due to the node running low on memory"),
            "ray: a worker was killed for lack of memory (Ray retries it); lower score.batch_size or "
            "score.num_actors"),
    Notable("ray_resources", re.compile(r"Cluster resources are not enough to run any task|"
                                        r"No available node types can fulfill resource request"),
            "ray: the cluster has too few CPUs/GPUs for the actor pool and may wait forever; lower "
            "score.num_actors, score.cpus_per_actor or score.gpus_per_actor"),
    Notable("spark_oom", re.compile(r"java\.lang\.OutOfMemoryError"),
            "spark: the JVM ran out of memory; raise spark.conf.spark.driver.memory (local) or the executors' "
            "memory"),
    Notable("spark_cache", re.compile(r"MemoryStore: Not enough space to cache"),
            "spark: not enough memory to cache the candidates, so they are recomputed (slower); raise "
            "spark.conf.spark.driver.memory or selection.n_partitions"),
)


def notable_message(line: str) -> tuple[str, str] | None:
    """The (rule name, console line) of the first :data:`NOTABLE` rule ``line`` matches, or None."""
    for rule in NOTABLE:
        match = rule.pattern.search(line)
        if match:
            return rule.name, rule.message.format(**match.groupdict())
    return None


_SYNC = b"\x00alray-log-sync\x00"
# Engine lines kept in memory before a run names its log file (none print that early but a misconfigured JVM).
MAX_PENDING_LINES = 10_000


class _Pipe:
    """The process's one pipe and the thread that drains it into the current log file.

    Made once and kept: the JVM and other children inherit its write end and may print long
    after a capture ends, so the reader runs as long as the process does.
    """

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.lock = threading.Lock()
        self.target: io.BufferedWriter | None = None
        self.pending: list[bytes] = []  # lines before a log file is named
        self.on_line: Callable[[str], None] | None = None
        self.synced = threading.Condition(self.lock)
        self.sync_count = 0
        threading.Thread(target=self._drain, name="alray-engine-log", daemon=True).start()

    def _drain(self) -> None:
        rest = b""
        while True:
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                return
            rest += chunk
            *lines, rest = rest.split(b"\n")
            for raw in lines:
                try:
                    self._line(raw + b"\n")
                except Exception:  # a reader that died would leave every writer blocked
                    continue

    def _line(self, raw: bytes) -> None:
        if _SYNC in raw:
            raw = raw.replace(_SYNC, b"")
            with self.lock:
                self.sync_count += 1
                self.synced.notify_all()
            if raw.strip() == b"":
                return
        with self.lock:
            if self.target is not None:
                try:
                    self.target.write(raw)
                    self.target.flush()
                except (OSError, ValueError):  # a full disk, a closed file: keep the lines in memory
                    self.target = None
            if self.target is None and len(self.pending) < MAX_PENDING_LINES:
                self.pending.append(raw)
            on_line = self.on_line
        if on_line is not None:
            # Progress bars redraw with carriage returns: the last state is the line.
            on_line(raw.decode("utf-8", "replace").rstrip("\n").rsplit("\r", 1)[-1])

    def sync(self, timeout: float = 5.0) -> None:
        """Wait until everything written to the pipe so far has been handled."""
        with self.lock:
            wanted = self.sync_count + 1
        os.write(self.write_fd, _SYNC + b"\n")
        with self.lock:
            self.synced.wait_for(lambda: self.sync_count >= wanted, timeout=timeout)


_PIPE: _Pipe | None = None


class Capture:
    """An active capture: the console streams, the log file, the notable lines already said."""

    def __init__(self, pipe: _Pipe, out: TextIO, err: TextIO, *, verbose: bool) -> None:
        self.pipe = pipe
        self.out = out
        self.err = err
        self.verbose = verbose
        self.log_path: str | None = None
        self._local_log: str | None = None
        self._storage_options: Mapping[str, str] | None = None
        self._said: set[str] = set()

    def on_line(self, line: str) -> None:
        """One engine line: echoed when verbose; a notable one said once as a console line."""
        if self.verbose and line.strip():
            write_line(self.err, line)
        found = notable_message(line)
        if found is not None and found[0] not in self._said:
            self._said.add(found[0])
            where = f" (details in {self.log_path})" if self.log_path else ""
            write_line(self.err, f"[alray] warning: {found[1]}{where}")

    def log_to(self, path: str, storage_options: Mapping[str, str] | None = None) -> None:
        """Write the engines' lines to ``path`` (local, or an object-store URI copied there when the capture ends)."""
        self.pipe.sync()
        local = path
        if "://" in path:
            handle, local = tempfile.mkstemp(prefix="alray-", suffix=".log")
            os.close(handle)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        target = open(local, "ab")  # noqa: SIM115 - kept open while the engines may print
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        target.write(f"==== alray: Ray's and Spark's output from {stamp}, pid {os.getpid()} ====\n".encode())
        with self.pipe.lock:
            previous, self.pipe.target = self.pipe.target, target
            for raw in self.pipe.pending:
                target.write(raw)
            self.pipe.pending.clear()
            target.flush()
        if previous is not None:
            previous.close()
        self._upload()  # a previous remote log of this capture, now complete
        self.log_path, self._local_log, self._storage_options = path, local, storage_options

    def _upload(self) -> None:
        if self.log_path is None or "://" not in self.log_path or self._local_log is None:
            return
        import pyarrow as pa

        from alray.lake import filesystem_for

        try:
            filesystem, inner = filesystem_for(self.log_path, self._storage_options)
            with open(self._local_log, "rb") as source, filesystem.open_output_stream(inner) as sink:
                sink.write(source.read())
        except (OSError, pa.ArrowException) as exc:  # the run's result stands; say where the log stayed
            write_line(self.err, f"[alray] warning: the engine log could not be copied to {self.log_path} "
                       f"({str(exc).splitlines()[0][:120]}); it is at {self._local_log}")

    def finish(self) -> None:
        """Drain the pipe into the log; copy a remote log; say where pending lines went."""
        self.pipe.sync()
        with self.pipe.lock:
            pending, self.pipe.pending = self.pipe.pending, []
        if pending:  # no run named a log file: nothing is lost, the lines go to the console
            for raw in pending:
                write_line(self.err, raw.decode("utf-8", "replace").rstrip("\n"))
        with self.pipe.lock:
            if self.pipe.target is not None:
                self.pipe.target.flush()
        self._upload()


_ACTIVE: Capture | None = None
_CONSOLE_LOCK = threading.Lock()


def write_line(stream: TextIO, line: str) -> None:
    """One line on a console stream, clearing and redrawing any progress bar on it."""
    from tqdm import tqdm

    with _CONSOLE_LOCK:
        tqdm.write(line, file=stream)
        stream.flush()


def _console_copy(stream: TextIO) -> tuple[TextIO, bool]:
    """A stream that reaches what ``stream`` reaches after fds 1 and 2 are redirected; whether it is a new one."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream, False  # a StringIO, or a test's capture: not a file descriptor we redirect
    if fd not in (1, 2):
        return stream, False
    stream.flush()
    copy = open(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8",  # noqa: SIM115
                errors="replace")
    return copy, True


@contextmanager
def capture(*, verbose: bool = False) -> Iterator[Capture]:
    """Send the engines' output to a log file (see :meth:`Capture.log_to`) while the block runs.

    With ``verbose`` their lines are also echoed to the console. Nested captures reuse the outer one.
    """
    global _PIPE, _ACTIVE
    if _ACTIVE is not None:
        yield _ACTIVE
        return
    if _PIPE is None:
        _PIPE = _Pipe()
    pipe = _PIPE
    pipe.sync()
    with pipe.lock:  # an earlier capture's log is complete: this one's lines wait for their own
        previous, pipe.target = pipe.target, None
    if previous is not None:
        previous.close()
    out, own_out = _console_copy(sys.stdout)
    err, own_err = _console_copy(sys.stderr)
    active = Capture(pipe, out, err, verbose=verbose)
    saved_streams = sys.stdout, sys.stderr
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = os.dup(1), os.dup(2)
    engine_stream = open(os.dup(pipe.write_fd), "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
    os.dup2(pipe.write_fd, 1)
    os.dup2(pipe.write_fd, 2)
    sys.stdout = sys.stderr = engine_stream
    pipe.on_line = active.on_line
    _ACTIVE = active
    try:
        yield active
    finally:
        engine_stream.flush()
        active.finish()
        pipe.on_line = None
        _ACTIVE = None
        sys.stdout, sys.stderr = saved_streams
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in saved_fds:
            os.close(fd)
        engine_stream.close()
        for stream, own in ((out, own_out), (err, own_err)):
            if own:
                stream.close()
            else:
                stream.flush()


def active() -> Capture | None:
    """The capture in force, if any."""
    return _ACTIVE


def console() -> tuple[TextIO, TextIO]:
    """The streams alray's own lines go to: the console's stdout and stderr, whether or not a capture is active."""
    if _ACTIVE is not None:
        return _ACTIVE.out, _ACTIVE.err
    return sys.stdout, sys.stderr


def shows_engine_output() -> bool:
    """Whether the engines' own output reaches the console (no capture, or a verbose one)."""
    return _ACTIVE is None or _ACTIVE.verbose


def log_run_to(path: str, storage_options: Mapping[str, str] | None = None) -> str | None:
    """Point the active capture at ``path``; the path, or None when no capture is active."""
    if _ACTIVE is None:
        return None
    _ACTIVE.log_to(path, storage_options)
    return path
