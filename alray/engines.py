"""Start or attach to the engines: Ray for scoring, Spark for selection."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from alray import engine_log
from alray.config import RayConfig, SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


# Tasks whose events a local instance's GCS keeps (for `ray list tasks`, the dashboard): Ray's
# default, 100,000, is ~3.5 KiB each, so the GCS grew by ~130 MiB over a 10M-row score stage
# (~40,000 batches, each a decode task, an actor call and a progress call).
TASK_EVENTS_KEPT = 10_000
# How long a local instance keeps an idle worker beyond one per CPU (Ray's default: 1 s). The score
# stage's write tasks reserve no CPU, so they run in such a worker; killed between two writes and
# started again (seconds of imports each time), workers took a quarter of the CPU of a 2-CPU stage.
IDLE_WORKER_KEPT_MS = 10_000
# The local instance's system config; a user's RAY_<key> environment variable wins.
LOCAL_SYSTEM_CONFIG = {"task_events_max_num_task_in_gcs": TASK_EVENTS_KEPT,
                       "idle_worker_killing_time_threshold_ms": IDLE_WORKER_KEPT_MS}


def ensure_ray(config: RayConfig) -> None:
    """Initialise Ray once per process: attach to ``config.address`` or start a local instance."""
    import ray
    from ray.data import DataContext

    # Ray Data's own bars would fight alray's display; they show with the engines' output (--verbose).
    DataContext.get_current().enable_progress_bars = engine_log.shows_engine_output()
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    # "local" starts a private instance: with no address Ray would join any cluster a
    # `ray start` left on this machine, which is not what an unconfigured run means.
    system_config = {key: value for key, value in LOCAL_SYSTEM_CONFIG.items() if f"RAY_{key}" not in os.environ}
    ray.init(
        address=config.address or "local",
        num_cpus=config.num_cpus if config.address is None else None,
        object_store_memory=config.object_store_memory if config.address is None else None,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
        ignore_reinit_error=True,
        _system_config=system_config if config.address is None else None,
    )


class _RowCounter:
    """A Ray actor that scoring workers tell how many rows they finished."""

    def __init__(self) -> None:
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows

    def total(self) -> int:
        return self.rows


@contextmanager
def ray_row_counter(report: Callable[[int], None], *, interval_s: float = 0.5) -> Iterator[Any]:
    """A row counter for Ray workers (an actor handle: ``counter.add.remote(n)``) while the block runs.

    A thread asks it every ``interval_s`` and calls ``report(rows done so far)``; the last count is
    reported when the block ends. Rows of a batch retried after a worker died count twice.
    """
    import ray

    counter: Any = ray.remote(num_cpus=0)(_RowCounter).remote()  # type: ignore[attr-defined]
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(interval_s):
            try:
                report(ray.get(counter.total.remote(), timeout=interval_s * 10))
            except (ray.exceptions.RayError, TimeoutError):  # display only: a slow answer skips a tick
                continue

    thread = threading.Thread(target=poll, name="alray-row-counter", daemon=True)
    thread.start()
    try:
        yield counter
    finally:
        stop.set()
        thread.join()
        # On failure the display keeps its last count; the run's own counts come from the tables.
        with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
            report(ray.get(counter.total.remote(), timeout=10))
        ray.kill(counter)


@contextmanager
def spark_task_progress(report: Callable[[str], None], *, interval_s: float = 0.5) -> Iterator[None]:
    """While the block runs, ``report("tasks D/N")`` for the Spark stages running now (nothing when none is).

    Reads the status tracker of the process's SparkContext, if it has one; never starts one.
    """
    stop = threading.Event()

    def poll() -> None:
        shown = ""
        while not stop.wait(interval_s):
            pyspark = sys.modules.get("pyspark")
            context = getattr(pyspark, "SparkContext", None) if pyspark else None
            active = getattr(context, "_active_spark_context", None)
            if active is None:
                continue
            try:
                tracker = active.statusTracker()
                stages = [tracker.getStageInfo(i) for i in tracker.getActiveStageIds()]
                done = sum(s.numCompletedTasks for s in stages if s is not None)
                total = sum(s.numTasks for s in stages if s is not None)
            except Exception:  # a display only: a session stopping meanwhile skips a tick
                continue
            text = f"tasks {done}/{total}" if total else ""
            if text != shown:
                report(text)
                shown = text

    thread = threading.Thread(target=poll, name="alray-spark-tasks", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        report("")


def check_leaves_a_read_cpu(config: RayConfig, *, section: str, count_key: str, count: int, per_key: str,
                            per: float, task_cpus: float = 1.0) -> None:
    """Refuse ``count`` x ``per`` reserved CPUs (scoring actors, training workers) that take every CPU of a
    local Ray instance: the pool's read tasks (``task_cpus`` each, one by default) could then never run, and
    the job would wait forever. ``section``, ``count_key`` and ``per_key`` name the config keys in the error."""
    import ray

    from alray.errors import ConfigError

    if config.address is not None:
        return  # a cluster may autoscale; its operators size it
    total = float(ray.cluster_resources().get("CPU", 0.0))
    reserved = count * per
    needed = max(1.0, task_cpus)
    if reserved > total - needed + 1e-9:
        raise ConfigError(
            f"{section}: {count_key} x {per_key} = {reserved:g} CPUs leaves less than {needed:g} of the local Ray "
            f"instance's {total:g} CPUs to read the pool; lower {section}.{per_key} (e.g. "
            f"{max(0.1, (total - needed) / count):.2g}) or {section}.{count_key}"
        )


def local_with_retries(master: str, attempts: int = 4) -> str:
    """``local[N]`` as ``local[N,attempts]``: local mode runs a failed task only once otherwise."""
    match = re.fullmatch(r"local\[(\d+|\*)\]", master.strip())
    return f"local[{match.group(1)},{attempts}]" if match else master


def spark_session(config: SparkConfig) -> SparkSession:
    """The process's Spark session, created on first use with the venv's Python for workers."""
    # Spark's Python workers must run the interpreter that has alray and its dependencies.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder
    # Under spark-submit (and so the spark-operator) the master and deploy mode are spark-submit's:
    # setting one here would override them. spark-submit is where PYSPARK_GATEWAY_PORT comes from.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(local_with_retries(config.master))
    builder = (
        builder.appName("alray-select")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "2g")
        # Spark's stage bars would fight alray's display; they show with the engines' output (--verbose).
        .config("spark.ui.showConsoleProgress", str(engine_log.shows_engine_output()).lower())
    )
    for key, value in config.conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
