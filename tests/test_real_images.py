"""Real image collections through the scoring stage: every mode in one batch, hostile files cost
one row and bounded memory, ids are checked before scoring, and a failed run leaves no rows."""

from __future__ import annotations

import contextlib
import io
import json
import resource
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from alray.cli import main as alray_main
from alray.image_samples import encode, every_kind, large_jpeg, photo_crops, png_bomb
from alray.inference import ScoringOptions, score_batch
from alray.lake import Lake
from alray.models import SmallCNN, save_checkpoint
from alray.payloads import decode_image
from alray.tables import REJECT_REASON

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("channels", [1, 3])
def test_one_batch_of_every_mode_and_format_scores_every_row(channels):
    kinds = every_kind()
    photos = photo_crops(20)  # sizes vary, two of them grayscale
    batch = pa.table({"id": [*kinds, *(f"photo-{i}" for i in range(20))],
                      "image": pa.array([*kinds.values(), *photos], pa.binary())})
    torch.manual_seed(0)
    model = SmallCNN(in_channels=channels, image_size=16, n_classes=3).eval()
    out = score_batch(model, batch, ScoringOptions(payload="image", mc_samples=4, seed=0, run_id="r"))
    reasons = dict(zip(out.column("id").to_pylist(), out.column(REJECT_REASON).to_pylist(), strict=True))
    assert {k: v for k, v in reasons.items() if v is not None} == {}
    assert {len(v) for v in out.column("channel_mean").to_pylist()} == {3}
    assert out.column("bald").null_count == 0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.manual_seed(0)
    save_checkpoint(SmallCNN(in_channels=1, image_size=16, n_classes=4), path)
    return str(path)


LIMIT = 4_000_000  # pixels: 32 MB at 8 bytes a pixel, the decoder's bound


def _hostile_batch() -> pa.Table:
    rng = np.random.default_rng(0)
    noise = (rng.random((2000, 2000, 3)) * 255).astype(np.uint8)  # at the limit, incompressible
    images = {
        "bomb-beyond-pillow": png_bomb(14000, 14000),   # 196 MP: Pillow's own bomb error
        "bomb-beyond-warning": png_bomb(10000, 10000),  # 100 MP: Pillow's bomb warning
        "jpeg-reduced": large_jpeg(6000, 4000),          # 24 MP, decoded at 1/4
        "at-the-limit": _png(noise),
        "small": every_kind()["format-png"],
    }
    return pa.table({"id": list(images), "image": pa.array(list(images.values()), pa.binary())})


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def test_a_decoding_workers_peak_memory_stays_within_the_pixel_limit(ray_session, checkpoint):
    """The scoring stage decodes images in Ray workers (the model's actors get arrays): one hostile
    batch decoded in a real Ray worker grows its peak memory by what the pixel limit allows."""
    import ray

    from alray.inference import InputSpec
    from alray.models import load_checkpoint
    from alray.stages.score import decode_pool_batch

    spec = InputSpec.of(load_checkpoint(checkpoint))

    @ray.remote(num_cpus=0.5)
    class MeasuredDecoder:
        def __init__(self) -> None:
            self.options = ScoringOptions(payload="image", mc_samples=4, seed=0, run_id="m", max_image_pixels=LIMIT)

        def score(self, batch: pa.Table) -> tuple[int, int, dict[str, str | None]]:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            out = decode_pool_batch(batch, spec, self.options)
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            return before, after, dict(zip(out.column("id").to_pylist(), out.column(REJECT_REASON).to_pylist(),
                                            strict=True))

    actor = MeasuredDecoder.remote()
    warm = pa.table({"id": ["w1", "w2"], "image": pa.array([every_kind()["format-png"]] * 2, pa.binary())})
    ray.get(actor.score.remote(warm))  # the first call allocates the decoder's own buffers
    batch = _hostile_batch()
    before, after, reasons = ray.get(actor.score.remote(batch))
    ray.kill(actor)
    assert reasons["bomb-beyond-pillow"].startswith("image: 14000x14000 pixels (196,000,000) exceed")
    assert reasons["bomb-beyond-warning"].startswith("image: 10000x10000 pixels (100,000,000) exceed")
    assert reasons["jpeg-reduced"] is None and reasons["at-the-limit"] is None and reasons["small"] is None
    encoded = sum(len(v) for v in batch.column("image").to_pylist())
    # The decoder holds at most two 4-byte copies of a limit-sized image; the batch's bytes are
    # held as Arrow data and as Python bytes; 48 MiB for the strips, the packed inputs and the allocator.
    bound = 8 * LIMIT + 2 * encoded + (48 << 20)
    growth = after - before
    print(f"decoding worker peak growth {growth / 2**20:.1f} MiB, bound {bound / 2**20:.1f} MiB "
          f"(a 196 MP bomb decoded whole would take {196_000_000 / 2**20:.0f} MiB)")
    assert growth <= bound


@pytest.fixture(scope="module")
def photo_pool(tmp_path_factory, checkpoint):
    """500 real-photo crops (200 grayscale), every mode and format, and hostile files: a parquet
    pool and the same images as files behind a CSV listing."""
    root = tmp_path_factory.mktemp("photos")
    images = {f"photo-{i:03d}.jpg": data for i, data in enumerate(photo_crops(500))}
    images.update(every_kind())
    images["bomb-beyond-pillow.png"] = png_bomb(14000, 14000)
    images["bomb-beyond-limit.png"] = png_bomb(9000, 6000)
    images["jpeg-over-the-limit.jpg"] = large_jpeg(9000, 6000)  # 54 MP: decoded at 1/2
    ids = list(images)
    (root / "pool").mkdir()
    pq.write_table(pa.table({"id": ids, "image": pa.array(list(images.values()), pa.binary())}),
                   str(root / "pool" / "part-0.parquet"))
    (root / "files").mkdir()
    for name, data in images.items():
        (root / "files" / name.replace(";", "_")).write_bytes(data)
    listing = pa.table({"id": ids, "uri": [str(root / "files" / n.replace(";", "_")) for n in ids]})
    pacsv.write_csv(listing, str(root / "listing.csv"))
    return root, ids


def _config_file(root, pool: dict, name: str, checkpoint: str) -> str:
    data = {
        "run": {"seed": 0},
        "pool": pool,
        "model": {"checkpoint": checkpoint, "device": "cpu"},
        "score": {"mc_samples": 4, "batch_size": 64},
        "selection": {"n_samples": 20, "n_partitions": 2},
        "output": {"path": str(root / f"lake-{name}")},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = alray_main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_real_photos_and_hostile_files_run_to_exit_0(ray_session, spark, photo_pool, checkpoint, kind):
    root, ids = photo_pool
    pool = ({"path": str(root / "pool"), "format": "parquet"} if kind == "parquet"
            else {"path": str(root / "listing.csv"), "format": "csv"})
    config = _config_file(root, pool, kind, checkpoint)
    code, out, err = _run_cli("run", config, "--run-id", f"photos-{kind}", "--json", "--quiet")
    assert code == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    lake = Lake(str(root / f"lake-{kind}"))
    rejects = lake.read_run("rejects", f"photos-{kind}").to_pylist()
    reasons = {row["id"]: row["reason"] for row in rejects}
    assert set(reasons) == {"bomb-beyond-pillow.png", "bomb-beyond-limit.png"}
    assert "14000x14000 pixels (196,000,000) exceed score.max_image_pixels 50,000,000" in reasons[
        "bomb-beyond-pillow.png"]
    assert "9000x6000 pixels (54,000,000)" in reasons["bomb-beyond-limit.png"]
    features = lake.read_run("features", f"photos-{kind}", columns=["id", "width", "channel_mean"])
    widths = dict(zip(features.column("id").to_pylist(), features.column("width").to_pylist(), strict=True))
    assert widths["jpeg-over-the-limit.jpg"] == 4500  # decoded at 1/2 scale
    ranking = lake.read_run("ranking", f"photos-{kind}", columns=["id"])
    counts = summary["counts"]
    # every pool id ends in exactly one of: the ranking (as a candidate), the rejects, the filtered count
    assert counts["pool"] == len(ids) == ranking.num_rows + len(rejects) + counts["filtered"]
    assert sorted(ranking.column("id").to_pylist() + list(reasons)) == sorted(ids)


@pytest.mark.parametrize("ids, message", [
    (["a", "b", "a", "c", "b", "d", "e", "e", "f", "f"],
     "pool {path}: 4 duplicate id(s) ('a', 'b', 'e'); ids must be unique"),
    (["a", "", "b", None, "  ", "c"],
     "pool {path}: 3 row(s) with an empty id (row 1, 3, 4, counted from 0); every row needs a non-empty id"),
])
def test_bad_ids_fail_in_seconds_before_ray_starts(tmp_path, checkpoint, ids, message):
    path = tmp_path / "pool.parquet"
    image = every_kind()["format-png"]
    pq.write_table(pa.table({"id": pa.array(ids, pa.string()), "image": pa.array([image] * len(ids), pa.binary())}),
                   str(path))
    config = _config_file(tmp_path, {"path": str(path)}, "ids", checkpoint)
    # A Ray that cannot start: the check must come first.
    code = ("import sys, alray.engines as e\n"
            "def refuse(*a, **k): raise SystemExit('ray was started')\n"
            "e.ensure_ray = refuse\nimport alray.stages.score as s\ns.ensure_ray = refuse\n"
            "from alray.cli import entry\nsys.argv = ['alray', 'run', sys.argv[1], '--run-id', 'ids']\nentry()\n")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, config], capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "alray: error: " + message.format(path=path)
    assert "ray was started" not in result.stderr and "Traceback" not in result.stderr
    assert elapsed < 30, f"the id check took {elapsed:.1f} s"


def test_a_run_that_fails_leaves_no_rows_and_says_why(ray_session, spark, photo_pool, checkpoint):
    root, _ = photo_pool
    lake = Lake(str(root / "lake-fail"))
    with open(_config_file(root, {"path": str(root / "pool")}, "fail", checkpoint)) as handle:
        base = yaml.safe_load(handle)

    # Fails after the scoring committed its rows: the two bombs are more rejects than allowed.
    base["score"]["max_bad_fraction"] = 0.001
    (root / "too-many.yaml").write_text(yaml.safe_dump(base))
    code, _, err = _run_cli("run", str(root / "too-many.yaml"), "--run-id", "too-many", "--quiet")
    assert code == 2 and "rows rejected" in err
    # Fails in the selection, after the scoring succeeded: a filter on a column the features lack.
    base["score"].pop("max_bad_fraction")
    base["selection"]["filters"] = [{"column": "no_such_column", "op": ">", "value": 1}]
    (root / "bad-filter.yaml").write_text(yaml.safe_dump(base))
    code, _, err = _run_cli("run", str(root / "bad-filter.yaml"), "--run-id", "bad-filter", "--quiet")
    assert code == 2 and "no_such_column" in err

    for run_id in ("too-many", "bad-filter"):
        for table in ("features", "rejects", "ranking"):
            assert lake.read_run(table, run_id, columns=["id"]).num_rows == 0, (run_id, table)
        row = lake.read_run("runs", run_id).to_pylist()[0]
        assert row["status"] == "failed" and row["stages_completed"] == ""
        assert ("no_such_column" if run_id == "bad-filter" else "rows rejected") in row["error"]

    # The next attempt of a failed run id scores afresh (nothing to resume from) and succeeds.
    base["selection"].pop("filters")
    (root / "fixed.yaml").write_text(yaml.safe_dump(base))
    code, out, err = _run_cli("run", str(root / "fixed.yaml"), "--run-id", "bad-filter", "--quiet", "--json")
    assert code == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["resumed"] is False
    assert lake.read_run("ranking", "bad-filter", columns=["id"]).num_rows > 0


def test_decoded_photos_keep_their_colour_statistics():
    crop = photo_crops(1)[0]  # astronaut: a colour photo
    decoded = decode_image(crop, channels=3, size=16)
    assert len(set(np.round(decoded.channel_mean, 6))) == 3


def test_a_folder_of_image_files_runs_end_to_end(ray_session, spark, tmp_path, checkpoint):
    from PIL import Image

    root = tmp_path / "bucket"
    crops = photo_crops(40)
    names = []
    for i, data in enumerate(crops):
        folder = root / f"site-{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        if i % 4 == 1:  # some re-encoded as PNG and WebP
            image = Image.open(io.BytesIO(data))
            fmt = "PNG" if i % 8 == 1 else "WEBP"
            name, data = f"photo-{i:02d}.{fmt.lower()}", encode(image, fmt)
        else:
            name = f"photo-{i:02d}.jpg"
        (folder / name).write_bytes(data)
        names.append(f"site-{i % 3}/{name}")
    (root / "site-0" / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "README.txt").write_text("ignored: not an image")
    pq.write_table(pa.table({"id": names[:10], "camera": ["cam-a"] * 10}), str(tmp_path / "meta.parquet"))
    pool = {"path": str(root), "format": "images", "metadata_path": str(tmp_path / "meta.parquet")}
    config = _config_file(tmp_path, pool, "images", checkpoint)
    code, out, err = _run_cli("run", config, "--run-id", "folder", "--json", "--quiet")
    assert code == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    lake = Lake(str(tmp_path / "lake-images"))
    rejects = lake.read_run("rejects", "folder").to_pylist()
    assert [r["id"] for r in rejects] == ["site-0/corrupt.jpg"] and "image" in rejects[0]["reason"]
    features = lake.read_run("features", "folder", columns=["id", "file_size", "modified_at", "camera"])
    rows = {r["id"]: r for r in features.to_pylist()}
    assert set(rows) == set(names) and summary["counts"]["pool"] == len(names) + 1
    assert rows[names[0]]["file_size"] == (root / names[0]).stat().st_size
    assert rows[names[0]]["camera"] == "cam-a" and rows[names[-1]]["camera"] is None
    ranking = lake.read_run("ranking", "folder", columns=["id", "selected"])
    assert sum(ranking.column("selected").to_pylist()) == 20
    assert not (tmp_path / "lake-images" / "_staging" / "folder").exists()  # the listing went with the run
