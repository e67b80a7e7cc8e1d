"""Shared fixtures: one Ray instance, one Spark session and one small demo pool (and detection demo) per test
session."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from alray.config import Config, SparkConfig, config_from_dict
from alray.faults import ENV as FAILPOINTS_ENV

# Set before any engine starts, so Ray workers and Spark's Python workers inherit it; nothing
# fails unless a test arms a failpoint in this folder.
FAILPOINTS_DIR = os.path.join(tempfile.mkdtemp(prefix="alray-failpoints-"), "armed")
os.environ[FAILPOINTS_ENV] = FAILPOINTS_DIR


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance shared by every test that scores on Ray."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """A local[2] Spark session shared by every test that selects on Spark."""
    from alray.engines import spark_session

    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = spark_session(SparkConfig(master="local[2]", conf={
        "spark.sql.warehouse.dir": str(tmp_path_factory.mktemp("warehouse")),
        "spark.sql.shuffle.partitions": "4",
    }))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory):
    """A subset of the demo pool (300 digits plus blank, blurred and corrupt rows) and its model."""
    from alray.demo import build_demo

    root = tmp_path_factory.mktemp("demo")
    return build_demo(pool_path=str(root / "pool"), labeled_path=str(root / "labeled"),
                      checkpoint_path=str(root / "model.pt"), n_images=300, per_class=5, epochs=30, seed=0)


@pytest.fixture(scope="session")
def detection_files(tmp_path_factory):
    """A small detection demo: 80 shape images (96 px; the detector takes 64), blank and corrupt ones, 50
    labeled with their boxes, and a TorchScript detector trained on them."""
    from alray.detection.demo import build_detection_demo

    root = tmp_path_factory.mktemp("detection")
    return build_detection_demo(pool_path=str(root / "pool"), labeled_path=str(root / "labeled"),
                                checkpoint_path=str(root / "detector.pt"), n_images=80, n_labeled=50, epochs=60,
                                width=8, seed=0)


def demo_config(demo_files, lake: Path, **selection) -> Config:
    """A config for the demo subset writing to ``lake``; selection keys may be overridden.

    The selection runs on Spark (``engine: spark``) unless ``engine`` is given: these tests are
    about the Spark stage, which ``engine: auto`` would skip for a pool this small. Its strategies
    are BALD-weighted diversity unless given (``auto``, the default, would pick by the budget)."""
    return config_from_dict({
        "run": {"seed": 0},
        "pool": {"path": demo_files.pool, "format": "parquet"},
        "labeled": {"path": demo_files.labeled},
        "model": {"checkpoint": demo_files.checkpoint},
        "score": {"mc_samples": 10, "batch_size": 128, "num_actors": 1},
        "selection": {
            "n_samples": 30,
            "filters": [{"column": "sharpness", "op": ">", "value": 50.0}],
            "n_partitions": 3,
            "engine": "spark",
            "strategies": [{"input": "embeddings", "strategy": "diversity"}, {"input": "bald", "strategy": "weights"}],
            **selection,
        },
        "output": {"path": str(lake)},
    })
