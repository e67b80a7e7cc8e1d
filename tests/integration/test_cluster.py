"""A real multi-node run: a two-node Ray cluster and a Spark standalone master and worker on
loopback, the job submitted through ``jobs/``, and its ranking equal to a local run's.

Every address is on loopback. Ray rewrites ``127.0.0.1`` to the machine's outward address, so the
Ray nodes use ``127.0.0.2`` (loopback too, and left alone by Ray). The clusters are this module's
own: their own ports, temp folder and auth token, stopped by process group, never by ``ray stop``
(which would stop every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from deltalake import DeltaTable

from alray.pipeline import run_pipeline
from alray.progress import Progress
from tests.conftest import demo_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RAY_HOST = "127.0.0.2"
SPARK_HOST = "127.0.0.1"
START_TIMEOUT_S = 150
JOB_TIMEOUT_S = 600


_HANDED_OUT: set[int] = set()


def _free_port() -> int:
    # A port the OS calls free, and never one this module handed out already: two services asked
    # for ports in a row could otherwise get the same one and one of them fail to bind.
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@dataclass
class Clusters:
    """Addresses of the running clusters and the environment a job needs to reach them."""

    ray_address: str
    spark_master: str
    env: dict[str, str]
    ray_temp: Path
    spark_logs: dict[str, Path]


def _start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    # A process group of its own, so stopping it reaches every process it started and nothing else.
    with open(log, "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)


def _wait_for(process: subprocess.Popen, log: Path, text: str, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"{what} did not start (exit {process.poll()}); last log lines:\n{tail}")
        time.sleep(0.5)


def _stop(processes: list[subprocess.Popen], marker: str) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    # Anything that left the groups but still names this module's private temp folder is ours too.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


@pytest.fixture(scope="module")
def clusters(tmp_path_factory) -> Iterator[Clusters]:
    import pyspark

    # Short: Ray's unix socket paths under it must stay below 108 bytes.
    temp = Path(tmp_path_factory.mktemp("clusters", numbered=True))
    ray_temp = Path("/tmp") / f"alray-ray-{secrets.token_hex(4)}"
    ray_temp.mkdir()
    token = temp / "ray-token"
    token.write_text(secrets.token_hex(32))
    spark_home = Path(pyspark.__file__).parent
    (temp / "spark-conf").mkdir()
    env = {
        **os.environ,
        # This cluster's own token, so it neither needs nor touches ~/.ray.
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0",
        "SPARK_HOME": str(spark_home), "SPARK_CONF_DIR": str(temp / "spark-conf"),
        "SPARK_LOCAL_IP": SPARK_HOST, "SPARK_LOG_DIR": str(temp / "spark-logs"),
        "SPARK_WORKER_DIR": str(temp / "spark-work"),
        # The REST submission server would take the fixed port 6066, shared by the whole machine.
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
        "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    ray_bin = str(Path(sys.executable).parent / "ray")
    ray_port, spark_port = _free_port(), _free_port()

    def ray_node(*extra: str) -> list[str]:
        # Explicit agent ports: with dynamic ones the raylet waits for their port files and, on a
        # busy machine, gives up before the agents have written them.
        return [ray_bin, "start", *extra, f"--node-ip-address={RAY_HOST}", "--num-cpus=1",
                f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
                f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}",
                "--object-store-memory=150000000", f"--temp-dir={ray_temp}", "--disable-usage-stats", "--block"]

    spark_class = str(spark_home / "bin" / "spark-class")
    logs = {name: temp / f"{name}.log" for name in ("ray-head", "ray-worker", "spark-master", "spark-worker")}
    processes: list[subprocess.Popen] = []
    try:
        master = _start([spark_class, "org.apache.spark.deploy.master.Master", "--host", SPARK_HOST,
                         "--port", str(spark_port), "--webui-port", str(_free_port())], logs["spark-master"], env)
        processes.append(master)
        # A port taken between choosing it and binding it fails the GCS server's start: try again
        # on fresh ports rather than fail the suite on that race.
        for attempt in range(3):
            head = _start(ray_node("--head", f"--port={ray_port}", "--include-dashboard=false"),
                          logs["ray-head"], env)
            try:
                _wait_for(head, logs["ray-head"], "Ray runtime started", "the Ray head node")
                break
            except pytest.fail.Exception:
                _stop([head], f"--port={ray_port}")
                if attempt == 2:
                    raise
                ray_port = _free_port()
        processes.append(head)
        worker = _start(ray_node(f"--address={RAY_HOST}:{ray_port}"), logs["ray-worker"], env)
        processes.append(worker)
        _wait_for(master, logs["spark-master"], "I have been elected leader", "the Spark master")
        spark_worker = _start([spark_class, "org.apache.spark.deploy.worker.Worker",
                               f"spark://{SPARK_HOST}:{spark_port}", "--host", SPARK_HOST, "--cores", "1",
                               "--memory", "1g", "--webui-port", str(_free_port()),
                               "--work-dir", str(temp / "spark-work")], logs["spark-worker"], env)
        processes.append(spark_worker)
        _wait_for(worker, logs["ray-worker"], "Ray runtime started", "the Ray worker node")
        _wait_for(spark_worker, logs["spark-worker"], "Successfully registered with master", "the Spark worker")
        yield Clusters(ray_address=f"{RAY_HOST}:{ray_port}", spark_master=f"spark://{SPARK_HOST}:{spark_port}",
                       env=env, ray_temp=ray_temp,
                       spark_logs={"master": logs["spark-master"], "worker": logs["spark-worker"]})
    finally:
        _stop(processes, str(ray_temp))
        shutil.rmtree(ray_temp, ignore_errors=True)


def _cluster_config(demo_files, lake: Path, folder: Path) -> Path:
    """The demo subset's config as a YAML file, with the Spark settings a standalone cluster needs."""
    data = demo_config(demo_files, lake).model_dump(mode="json")
    data["spark"]["conf"] = {
        "spark.driver.host": SPARK_HOST, "spark.driver.bindAddress": SPARK_HOST,
        "spark.executor.memory": "512m", "spark.executor.cores": "1", "spark.cores.max": "1",
        "spark.sql.shuffle.partitions": "2",
    }
    path = folder / "cluster.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _job(command: list[str], env: dict[str, str]) -> dict:
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert result.returncode == 0, f"{command[:3]} exited {result.returncode}:\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def _ranking(table_path: str, run_id: str) -> pa.Table:
    table = DeltaTable(table_path).to_pyarrow_dataset().to_table(filter=pc.field("run_id") == run_id)
    return table.sort_by("rank")


@pytest.fixture(scope="module")
def local_ranking(ray_session, spark, demo_files, tmp_path_factory) -> pa.Table:
    config = demo_config(demo_files, tmp_path_factory.mktemp("local-lake"))
    config.run.run_id = "cluster-reference"
    summary = run_pipeline(config, progress=Progress(quiet=True))
    return _ranking(summary.tables["ranking"], summary.run_id)


def _same_ranking(cluster: pa.Table, local: pa.Table) -> None:
    assert cluster.num_rows == local.num_rows > 0
    assert cluster.column("id").to_pylist() == local.column("id").to_pylist()
    assert cluster.column("selected").to_pylist() == local.column("selected").to_pylist()
    # float32 distances summed over Arrow batches of other sizes on the executors round differently
    assert cluster.column("score").to_pylist() == pytest.approx(local.column("score").to_pylist(), rel=1e-4)


@pytest.fixture(scope="module")
def cluster_run(clusters, demo_files, tmp_path_factory) -> tuple[dict, Path]:
    """The whole job, submitted through jobs/run.py to both clusters: its JSON summary and config."""
    folder = tmp_path_factory.mktemp("cluster-run")
    config = _cluster_config(demo_files, folder / "lake", folder)
    summary = _job([sys.executable, "jobs/run.py", "--config", f"file://{config}", "--run-id", "cluster-{date}",
                    "--ray-address", clusters.ray_address, "--spark-master", clusters.spark_master,
                    "--quiet", "--json"], clusters.env)
    return summary, config


def test_whole_job_on_a_two_node_ray_cluster_and_spark_standalone_ranks_as_a_local_run(
        clusters, cluster_run, local_ranking):
    summary, _ = cluster_run
    assert summary["status"] == "succeeded"
    assert re.fullmatch(r"cluster-\d{8}", summary["run_id"])
    _same_ranking(_ranking(summary["tables"]["ranking"], summary["run_id"]), local_ranking)

    # It ran on these clusters: both Ray nodes were up and a driver attached to them; the Spark
    # master registered the application and its worker launched an executor for it.
    # session_latest links to the session folder: count each raylet log once
    assert len({p.resolve() for p in clusters.ray_temp.glob("session_*/logs/raylet*.out")}) == 2
    assert list(clusters.ray_temp.glob("session_*/logs/python-core-driver-*")), "no driver attached to the Ray cluster"
    assert "Registered app alray-select" in clusters.spark_logs["master"].read_text(errors="replace")
    assert "Asked to launch executor" in clusters.spark_logs["worker"].read_text(errors="replace")


def test_spark_submit_of_the_select_job_reselects_the_run_as_a_local_run(clusters, cluster_run, local_ranking):
    import pyspark

    summary, config = cluster_run
    spark_submit = str(Path(pyspark.__file__).parent / "bin" / "spark-submit")
    # spark-submit chooses the master; the select stage must not replace it with spark.master's local[2].
    selected = _job([spark_submit, "--master", clusters.spark_master, "--conf", f"spark.driver.host={SPARK_HOST}",
                     "jobs/select.py", "--config", str(config), "--run-id", summary["run_id"], "--quiet", "--json"],
                    clusters.env)
    assert selected["status"] == "succeeded"
    assert selected["counts"] == summary["counts"]
    _same_ranking(_ranking(selected["tables"]["ranking"], summary["run_id"]), local_ranking)
    assert clusters.spark_logs["master"].read_text(errors="replace").count("Registered app alray-select") == 2
    runs = DeltaTable(selected["tables"]["runs"]).to_pyarrow_dataset().to_table(
        filter=pc.field("run_id") == summary["run_id"])
    assert runs.num_rows == 1, "a rerun of a run id replaces its row"
