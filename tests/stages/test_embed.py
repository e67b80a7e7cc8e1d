"""The embed stage on real Ray Train with 2 workers: a killed worker and a rerun resume from the
last checkpoint, a finished encoder is reused, and it reloads bitwise as an embedding-only model."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from alray.config import config_from_dict
from alray.demo import build_pool
from alray.errors import ConfigError, InputError
from alray.faults import arm
from alray.models import load_model
from alray.stages.embed import STATE_FILE, encoder_key, train_or_reuse, training_dataset
from alray.stages.pool_source import open_pool
from tests.conftest import FAILPOINTS_DIR

pytestmark = pytest.mark.slow

EMBED = {"epochs": 3, "batch_size": 16, "image_size": 16, "channels": 1, "width": 4, "projection_dim": 8,
         "num_workers": 2, "cpus_per_worker": 0.5, "augment": {"flip_probability": 0.0}}


def _config(tmp_path, **embed):
    pool, _images, _labels = build_pool(n_images=40, n_blank=2, n_blurred=2, n_corrupt=2, seed=0)
    (tmp_path / "pool").mkdir(exist_ok=True)
    pq.write_table(pool, str(tmp_path / "pool" / "part-00000.parquet"))
    return config_from_dict({"pool": {"path": str(tmp_path / "pool")}, "selection": {"n_samples": 5},
                             "output": {"path": str(tmp_path / "lake")}, "embed": {**EMBED, **embed}})


def test_killed_worker_and_rerun_resume_then_the_encoder_is_reused_and_reloads_bitwise(ray_session, tmp_path):
    config = _config(tmp_path, max_failures=0)
    arm(FAILPOINTS_DIR, "embed.after_checkpoint")  # a worker dies right after epoch 1's checkpoint
    with pytest.raises(Exception):  # noqa: B017 - Ray Train's own error type for a run out of retries
        train_or_reuse(config.pool, config.embed, config.output, config.ray)
    assert not os.path.exists(os.path.join(FAILPOINTS_DIR, "embed.after_checkpoint")), "the failpoint never fired"

    # The rerun (retries allowed now; that does not change the encoder's key) resumes after
    # epoch 1; a worker killed again after epoch 2 is restarted and resumes after epoch 2.
    config.embed.max_failures = 1
    arm(FAILPOINTS_DIR, "embed.after_checkpoint")
    result = train_or_reuse(config.pool, config.embed, config.output, config.ray)
    assert not os.path.exists(os.path.join(FAILPOINTS_DIR, "embed.after_checkpoint"))
    assert not result.reused and result.resumed_at == [1, 2]
    assert result.epochs == 3 and len(result.loss_curve) == 3 and len(result.images_per_s) == 3
    # the 2 corrupt rows are skipped, unless the last epoch's drop_last left them out anyway
    assert 0 <= result.n_skipped <= 2
    assert result.path == str(tmp_path / "lake" / "encoders" / result.key / "encoder.pt")

    again = train_or_reuse(config.pool, config.embed, config.output, config.ray)
    assert again.reused and again.path == result.path and again.loss_curve == result.loss_curve

    model = load_model(result.path)
    assert (model.n_classes, model.embedding_dim, model.image_size, model.in_channels) == (0, 16, 16, 1)
    payload = torch.load(result.path, weights_only=True)
    metadata = payload["metadata"]
    assert metadata["pool"] == config.pool.path and metadata["epochs"] == 3 and metadata["config_hash"] == result.key
    assert metadata["loss_curve"] == result.loss_curve and metadata["image_size"] == 16 and metadata["created_at"]
    # bitwise what the last Ray Train checkpoint holds, and the same embeddings on every load
    state = torch.load(os.path.join(metadata["train_checkpoint"], STATE_FILE), weights_only=True)
    trained = {k[len("encoder."):]: v for k, v in state["model"].items() if k.startswith("encoder.")}
    loaded = model.state_dict()  # type: ignore[attr-defined]
    assert trained.keys() == loaded.keys()
    assert all(torch.equal(trained[k], loaded[k]) for k in trained)
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.encode(x)[0], load_model(result.path).encode(x)[0])


def test_the_key_follows_the_pool_and_the_settings_but_not_where_or_how_fast(tmp_path):
    config = _config(tmp_path)
    source = open_pool(config.pool)
    key = encoder_key(config.pool, source, config.embed)
    same = config.embed.model_copy(update={"output": str(tmp_path / "elsewhere"), "cpus_per_worker": 1.0,
                                           "max_failures": 5, "use_gpu": True})
    assert encoder_key(config.pool, source, same) == key
    assert encoder_key(config.pool, source, config.embed.model_copy(update={"epochs": 4})) != key
    secret = config.pool.model_copy(update={"storage_options": {"AWS_SECRET_ACCESS_KEY": "x"}})
    assert encoder_key(secret, source, config.embed) == key
    pq.write_table(pa.table({"id": ["new"], "image": [b""]}), str(tmp_path / "pool" / "part-00001.parquet"))
    assert encoder_key(config.pool, open_pool(config.pool), config.embed) != key  # new rows, a new encoder


def test_refuses_pools_without_images_and_workers_that_starve_the_reads(ray_session, tmp_path):
    (tmp_path / "features").mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "features": [[0.0, 1.0], [1.0, 0.0]]}),
                   str(tmp_path / "features" / "part.parquet"))
    config = config_from_dict({"pool": {"path": str(tmp_path / "features")}, "selection": {"n_samples": 1},
                               "output": {"path": str(tmp_path / "lake")}, "embed": EMBED})
    with pytest.raises(InputError, match="needs images"):
        training_dataset(open_pool(config.pool), config.embed, storage_options=None)
    greedy = _config(tmp_path, cpus_per_worker=1.0)
    with pytest.raises(ConfigError, match="embed: num_workers x cpus_per_worker"):
        train_or_reuse(greedy.pool, greedy.embed, greedy.output, greedy.ray)


def test_a_run_whose_encoder_training_fails_is_recorded_as_failed(ray_session, tmp_path):
    from alray.lake import Lake
    from alray.pipeline import run_pipeline

    (tmp_path / "features").mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "features": [[0.0, 1.0], [1.0, 0.0]]}),
                   str(tmp_path / "features" / "part.parquet"))
    config = config_from_dict({"run": {"run_id": "embed-fails"}, "pool": {"path": str(tmp_path / "features")},
                               "selection": {"n_samples": 1}, "output": {"path": str(tmp_path / "lake")},
                               "embed": EMBED})
    with pytest.raises(InputError, match="needs images"):
        run_pipeline(config)
    row = Lake.from_output(config.output).read_run("runs", "embed-fails").to_pylist()
    assert len(row) == 1
    assert row[0]["status"] == "failed"
    assert "needs images" in row[0]["error"] and row[0]["finished_at"] is not None
