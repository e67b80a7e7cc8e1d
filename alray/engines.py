"""Start or attach to the engines: Ray for scoring, Spark for selection."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TYPE_CHECKING

from alray.config import RayConfig, SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def ensure_ray(config: RayConfig) -> None:
    """Initialise Ray once per process: attach to ``config.address`` or start a local instance."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    # "local" starts a private instance: with no address Ray would join any cluster a
    # `ray start` left on this machine, which is not what an unconfigured run means.
    ray.init(
        address=config.address or "local",
        num_cpus=config.num_cpus if config.address is None else None,
        object_store_memory=config.object_store_memory if config.address is None else None,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
        ignore_reinit_error=True,
    )


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
    )
    for key, value in config.conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
