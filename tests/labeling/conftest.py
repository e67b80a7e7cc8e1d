"""Fixtures of the labeling tests: a succeeded run written straight into a lake, and a real Label Studio
server (the ``label-studio`` package in its own cached venv, on a loopback port, with its own SQLite)."""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from alray.config import Config, config_from_dict
from alray.detection.boxes import DETECTIONS_TYPE
from alray.lake import Lake
from alray.lake.rounds import record_selection
from alray.tables import RUNS_SCHEMA

LABEL_STUDIO_VERSION = "1.23.2"
LABEL_STUDIO_TOKEN = "alray-test-token-0123456789abcdef"
LABEL_STUDIO_HOME = Path(os.environ.get("ALRAY_TEST_LABEL_STUDIO_HOME",
                                        Path.home() / ".cache" / "alray-test-label-studio"))
CLASSES = ["zero", "one", "two"]


def _png(value: int, size: int = 12) -> bytes:
    pixels = (np.arange(size * size).reshape(size, size) * (value + 1) % 256).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def lake_config(root: Path, pool: str, **labeled) -> Config:
    """A config whose pool is ``pool`` (parquet, image bytes) and whose lake is ``root/lake``."""
    return config_from_dict({
        "pool": {"path": pool, "format": "parquet"},
        "labeled": {"classes": CLASSES, **labeled},
        "selection": {"n_samples": 4},
        "output": {"path": str(root / "lake")},
    })


def write_pool(root: Path, n: int = 12) -> str:
    """A pool of ``n`` small PNG images with ids ``img/NN.png``."""
    folder = root / "pool"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [f"img/{i:02d}.png" for i in range(n)], "image": [_png(i) for i in range(n)]}),
                   folder / "part-0.parquet")
    return str(folder)


def write_run(config: Config, run_id: str, picks: list[str], *, others: list[str] = (),  # type: ignore[assignment]
              started: dt.datetime | None = None, detections: dict[str, list[dict]] | None = None) -> None:
    """A succeeded run as the pipeline records it: runs row, features (embedding, probs, pred, scores), ranking,
    round. With ``detections`` (boxes per id) the features hold a detection run's ``detections`` instead of
    probs and pred."""
    lake = Lake.from_output(config.output)
    started = started or dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    ids = [*picks, *others]
    probs = [[0.6, 0.3, 0.1] if i % 2 else [0.2, 0.7, 0.1] for i in range(len(ids))]
    features = {
        "run_id": [run_id] * len(ids), "id": ids, "probs": pa.array(probs, pa.list_(pa.float32())),
        "embedding": pa.array([[float(i), float(i % 3)] for i in range(len(ids))], pa.list_(pa.float32())),
        "pred": pa.array([int(np.argmax(p)) for p in probs], pa.int32()),
        "entropy": [0.5 + i / 100 for i in range(len(ids))], "margin": [0.3] * len(ids)}
    if detections is not None:
        del features["probs"], features["pred"], features["margin"]
        features["detections"] = pa.array(
            [[{"probs": None, **box} for box in detections.get(i, [])] for i in ids], DETECTIONS_TYPE)
    lake.replace_run("features", pa.table(features), run_id)
    lake.replace_run("ranking", pa.table({
        "run_id": [run_id] * len(ids), "id": ids, "rank": list(range(1, len(ids) + 1)),
        "selected": [i < len(picks) for i in range(len(ids))], "score": [1.0 / (i + 1) for i in range(len(ids))]}),
        run_id)
    row = {name: None for name in RUNS_SCHEMA.names}
    row.update(run_id=run_id, status="succeeded", started_at=started, config=config.to_json(),
               n_selected=len(picks))
    lake.replace_run("runs", pa.Table.from_pylist([row], schema=RUNS_SCHEMA), run_id, partition=False)
    record_selection(lake, run_id, at=started)


def lake_with_run(root: Path) -> Config:
    """A lake under ``root`` with run ``r1`` that picked ``img/00.png``..``img/03.png`` of a 12-image pool."""
    config = lake_config(root, write_pool(root))
    write_run(config, "r1", [f"img/{i:02d}.png" for i in range(4)], others=[f"img/{i:02d}.png" for i in range(4, 8)])
    return config


SHAPES = ["circle", "square"]
BOXES = {"img/00.png": [{"x0": 6.0, "y0": 3.0, "x1": 12.0, "y1": 9.0, "label": 1, "score": 0.9},
                        {"x0": -1.0, "y0": 0.0, "x1": 3.0, "y1": 6.0, "label": 0, "score": 0.4}],
         "img/01.png": []}


def detection_lake(root: Path, **detection) -> Config:
    """A lake under ``root`` with run ``d1`` of a detection config (no labeled classes: the detector's; more
    ``detection`` keys given) that picked two 12x12 images, the first with :data:`BOXES`' two objects, the
    second with none."""
    config = config_from_dict({"task": "detection", "detection": {"classes": SHAPES, **detection},
                               "pool": {"path": write_pool(root, 4), "format": "parquet"},
                               "selection": {"n_samples": 2}, "output": {"path": str(root / "lake")}})
    write_run(config, "d1", list(BOXES), others=["img/02.png"], detections=BOXES)
    return config


@pytest.fixture
def lake_run(tmp_path):
    """A lake with run ``r1`` (:func:`lake_with_run`); yields the config."""
    return lake_with_run(tmp_path)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def label_studio_venv() -> Path:
    """The cached venv holding the Label Studio server; created (pip install label-studio) the first time.

    A lock file keeps two test sessions from building it at once; the time it took is kept beside it.
    """
    venv = LABEL_STUDIO_HOME / f"venv-{LABEL_STUDIO_VERSION}"
    stamp = venv / ".alray-installed"
    LABEL_STUDIO_HOME.mkdir(parents=True, exist_ok=True)
    with open(LABEL_STUDIO_HOME / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                                   f"label-studio=={LABEL_STUDIO_VERSION}"], capture_output=True, text=True)
            if done.returncode:
                tail = [line for line in done.stderr.splitlines() if not line.startswith("WARNING: Location")]
                pytest.fail(f"cannot install label-studio=={LABEL_STUDIO_VERSION} into {venv}: "
                            + "\n".join(tail[-15:]))
            stamp.write_text(json.dumps({"install_s": round(time.perf_counter() - start, 1)}))
    return venv


@dataclass(frozen=True)
class LabelStudioServer:
    """A running Label Studio: its URL and the API token of its one (admin) user."""

    url: str
    token: str


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio server on a free loopback port with its own data dir; stopped after the tests."""
    venv = label_studio_venv()
    data = tmp_path_factory.mktemp("label-studio")
    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data), "DJANGO_DB": "sqlite",
           "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
           "COLLECT_ANALYTICS": "false"}
    with open(data / "server.log", "w") as log:
        server = subprocess.Popen(
            [str(venv / "bin" / "label-studio"), "start", "--no-browser", "--port", str(port),
             "--internal-host", "127.0.0.1", "--data-dir", str(data), "--username", "annotator@example.com",
             "--password", "alray-test-password", "--user-token", LABEL_STUDIO_TOKEN, "--enable-legacy-api-token"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            yield LabelStudioServer(_wait_until_up(server, f"http://127.0.0.1:{port}", data), LABEL_STUDIO_TOKEN)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def _wait_until_up(server: subprocess.Popen, url: str, data: Path, timeout_s: float = 300) -> str:
    """``url`` once the server answers its health check (the first start migrates its SQLite, ~1 min)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if server.poll() is not None:
            pytest.fail(f"Label Studio exited with {server.returncode}: see {data / 'server.log'}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return url
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"Label Studio did not answer on {url} within {timeout_s:.0f} s: see {data / 'server.log'}")
        time.sleep(1)
