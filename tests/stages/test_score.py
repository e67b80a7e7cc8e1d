"""The scoring stage on real Ray: config options reach the actors, results match one-batch scoring."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from alray.config import config_from_dict
from alray.demo import png_bytes
from alray.errors import ConfigError, InputError
from alray.inference import ScoringOptions, score_batch
from alray.lake import Lake
from alray.models import SmallCNN, load_checkpoint, save_checkpoint
from alray.pipeline import run_pipeline
from alray.progress import Progress
from alray.stages.score import check_inputs
from alray.tables import REJECT_REASON


@pytest.fixture(scope="module")
def small_pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("score-stage")
    rng = np.random.default_rng(0)
    images = [png_bytes((rng.random((16, 16)) * 255).astype(np.uint8)) for _ in range(40)]
    pool = pa.table({
        "id": [f"img-{i:03d}" for i in range(41)],
        "image": pa.array([*images, b"not an image"], pa.binary()),
        "camera_id": [f"cam-{i % 3}" for i in range(41)],
    })
    (root / "pool").mkdir()
    # two files, so the two actors of a test each get input
    pq.write_table(pool.slice(0, 20), str(root / "pool" / "part-0.parquet"))
    pq.write_table(pool.slice(20), str(root / "pool" / "part-1.parquet"))
    torch.manual_seed(0)
    save_checkpoint(SmallCNN(image_size=16, n_classes=4, loss_head=True), root / "model.pt")
    return root, pool


def _config(root, **score):
    return config_from_dict({
        "run": {"seed": 3, "run_id": "stage-1"},
        "pool": {"path": str(root / "pool")},
        "model": {"checkpoint": str(root / "model.pt"), "device": "cpu"},
        "score": {"mc_samples": 6, "batch_size": 16, "max_bad_fraction": 0.1, **score},
        "selection": {"n_samples": 5},
        "output": {"path": str(root / "lake")},
    })


@pytest.mark.slow
def test_full_mc_on_two_actors_equals_one_batch_head_scoring(ray_session, small_pool):
    root, pool = small_pool
    config = _config(root, mc_mode="full", num_actors=2, cpus_per_actor=0.5)
    summary = run_pipeline(config, progress=Progress(quiet=True), stages=("score",))
    assert (summary.counts["pool"], summary.counts["rejected"]) == (41, 1)
    features = Lake.from_output(config.output).read_run("features", "stage-1").sort_by("id")
    expected = score_batch(load_checkpoint(root / "model.pt"), pool,
                           ScoringOptions(payload="image", mc_samples=6, seed=3, run_id="stage-1"))
    expected = expected.filter(pa.compute.is_null(expected.column(REJECT_REASON))).sort_by("id")
    assert features.column("id").to_pylist() == expected.column("id").to_pylist()
    assert features.column("camera_id").to_pylist() == expected.column("camera_id").to_pylist()
    for name in ("bald", "entropy", "variation_ratio", "pred_loss", "sharpness"):
        np.testing.assert_allclose(features.column(name).to_numpy(), expected.column(name).to_numpy(),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    assert features.column("pred_loss").null_count == 0


def test_score_config_options_are_checked(small_pool):
    root, _ = small_pool
    with pytest.raises(ConfigError, match=r"score\.mc_mode"):
        _config(root, mc_mode="half")
    with pytest.raises(ConfigError, match=r"model\.architecture: expected torchvision:NAME"):
        config_from_dict({**_config(root).model_dump(), "model": {"checkpoint": "m.pt", "architecture": "resnet"}})


def test_a_pool_the_model_cannot_read_fails_before_ray_starts(small_pool, tmp_path):
    root, _ = small_pool
    pq.write_table(pa.table({"id": ["a"], "features": [[0.1, 0.2]]}), str(tmp_path / "features.parquet"))
    config = _config(root).model_copy(update={"pool": _config(root).pool.model_copy(
        update={"path": str(tmp_path / "features.parquet")})})
    with pytest.raises(InputError, match="the model takes image inputs, the pool has features payloads"):
        check_inputs(config.pool, config.model)


def test_an_actor_pool_that_takes_every_local_cpu_is_refused(ray_session, small_pool):
    root, _ = small_pool
    config = _config(root, num_actors=2, cpus_per_actor=1.0)  # the session's Ray has 2 CPUs
    with pytest.raises(ConfigError, match="leaves less than 1 of the local Ray instance's 2 CPUs"):
        run_pipeline(config, progress=Progress(quiet=True), stages=("score",))


def test_decode_tasks_that_cannot_run_beside_the_actors_are_refused(ray_session, small_pool):
    root, _ = small_pool
    config = _config(root, num_actors=1, cpus_per_actor=1.0)
    config = config.model_copy(update={"score": config.score.model_copy(update={"cpus_per_decode_task": 1.5})})
    with pytest.raises(ConfigError, match=r"leaves less than 1\.5 of the local Ray instance's 2 CPUs"):
        run_pipeline(config, progress=Progress(quiet=True), stages=("score",))


def test_ray_data_tasks_run_to_the_end_inside_the_block_and_pause_again_after():
    import ray.data

    from alray.stages.score import tasks_run_to_the_end

    context = ray.data.DataContext.get_current()
    before = context._max_num_blocks_in_streaming_gen_buffer
    assert before is not None  # Ray's default: a task pauses when its output blocks wait
    with pytest.raises(RuntimeError), tasks_run_to_the_end():
        # a Dataset made here copies the context: its tasks are never paused holding their CPUs
        assert ray.data.DataContext.get_current()._max_num_blocks_in_streaming_gen_buffer is None
        raise RuntimeError("the stage failed")
    assert context._max_num_blocks_in_streaming_gen_buffer == before


def test_scored_rows_are_written_while_every_cpu_is_held(tmp_path, ray_session):
    """The write tasks need no free CPU: on a machine whose actors and decode tasks hold every CPU, the
    scored rows are written as they come instead of waiting in the object store for the stage's end."""
    import time

    import ray
    import ray.data

    from alray.stages.score import write_staged

    rows = pa.table({"id": [f"r{i:05d}" for i in range(5_000)],
                     "embedding": pa.array(list(np.arange(5_000 * 4, dtype=np.float32).reshape(-1, 4)),
                                           pa.list_(pa.float32()))})
    scored = ray.data.from_arrow([rows.slice(start, 500) for start in range(0, 5_000, 500)])

    @ray.remote(num_cpus=1)
    def hold_a_cpu(seconds: float) -> None:
        time.sleep(seconds)

    holders = [hold_a_cpu.remote(120) for _ in range(int(ray.cluster_resources()["CPU"]))]
    try:
        deadline = time.monotonic() + 60
        while ray.available_resources().get("CPU", 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.2)  # until the holders run
        assert ray.available_resources().get("CPU", 0) == 0
        write_staged(scored, str(tmp_path / "staged"), 1_200)
        done, _ = ray.wait(holders, timeout=0)
        assert not done  # written while every CPU was held
    finally:
        for holder in holders:
            ray.cancel(holder, force=True)
    files = sorted((tmp_path / "staged").glob("*.parquet"))
    written = pa.concat_tables([pq.read_table(f) for f in files]).sort_by("id")
    assert written.equals(rows)
    sizes = sorted(pq.read_metadata(f).num_rows for f in files)
    assert all(1_200 <= n <= 2_400 for n in sizes[1:]) and len(files) <= 5_000 // 1_200


def test_a_decode_task_takes_a_pool_block_unless_its_decoded_inputs_grow_past_the_cap():
    from alray.inference import InputSpec
    from alray.stages.score import DECODED_BATCH_BYTES, decode_rows_for

    features, text = InputSpec("features", n_features=64), InputSpec("text")
    assert decode_rows_for(features, 256, 3_328) == 3_328  # 0.8 MiB decoded: the whole block
    assert decode_rows_for(text, 256, 3_328) == 3_328
    big = InputSpec("image", in_channels=3, image_size=224)  # 602,112 bytes a row: one batch is already past
    assert decode_rows_for(big, 256, 256) == 256 and decode_rows_for(big, 32, 1_024) == 32
    mid = InputSpec("image", in_channels=1, image_size=64)  # 16 KiB a row: 1,024 rows make the cap
    rows = decode_rows_for(mid, 256, 8_192)
    assert rows == 1_024 and rows * 4 * 64 * 64 <= DECODED_BATCH_BYTES and rows % 256 == 0
    assert decode_rows_for(None, 256, 3_328) == 256
