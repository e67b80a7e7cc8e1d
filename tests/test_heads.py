"""alray train: a cold-start round on an encoder, labels come back, a head on the encoder, an uncertainty round."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from alray.cli import main as alray_main
from alray.image_samples import encode, image_of_mode
from alray.lake import Lake
from alray.models import load_model
from alray.models.encoder_head import EncoderHead

transformers = pytest.importorskip("transformers")


def _cli(tmp_path, command: list[str], config: dict) -> tuple[int, str, str]:
    path = tmp_path / f"{command[0]}.yaml"
    path.write_text(yaml.safe_dump(config))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = alray_main([command[0], str(path), *command[1:]])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("encoder")
    config = transformers.ViTConfig(image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32)
    transformers.ViTModel(config).save_pretrained(str(path))
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3,
                                   image_std=[0.25] * 3).save_pretrained(str(path))
    return path


def test_cold_start_then_a_head_then_an_uncertainty_round(ray_session, spark, encoder_dir, tmp_path):
    modes = ["RGB", "L", "P"]
    ids = [f"img-{i:02d}" for i in range(36)]
    images = [encode(image_of_mode(modes[i % 3], width=20, height=20, seed=i), "PNG") for i in range(36)]
    pq.write_table(pa.table({"id": ids, "image": images}), str(tmp_path / "pool.parquet"))
    base = {"run": {"seed": 0}, "pool": {"path": str(tmp_path / "pool.parquet")},
            "model": {"checkpoint": str(encoder_dir)}, "score": {"batch_size": 16, "mc_samples": 6},
            "output": {"path": str(tmp_path / "lake")}}
    round0 = {**base, "selection": {"n_samples": 6, "n_partitions": 2,
                                    "strategies": [{"input": "embeddings", "strategy": "typiclust"}]}}
    code, out, err = _cli(tmp_path, ["run", "--run-id", "round0", "--json", "--quiet"], round0)
    assert code == 0, err[-2000:]
    lake = Lake(str(tmp_path / "lake"))
    ranking = lake.read_run("ranking", "round0").to_pandas()
    picks = ranking[ranking.selected].id.tolist()
    assert len(picks) == 6 and lake.read_run("features", "round0", columns=["bald"]).column("bald").null_count == 36

    # the annotators label the picks: the image mode is the class
    labels = [modes[ids.index(i) % 3] for i in picks]
    pq.write_table(pa.table({"id": picks, "label": labels}), str(tmp_path / "labeled.parquet"))
    with_labels = {**round0, "labeled": {"path": str(tmp_path / "labeled.parquet")}}
    code, out, err = _cli(tmp_path, ["train", "--json"], with_labels)
    assert code == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["features_run"] == "round0" and summary["n_used"] == 6
    assert summary["classes"] == sorted(set(labels))
    model = load_model(summary["checkpoint"])
    assert isinstance(model, EncoderHead) and model.n_classes == len(set(labels)) and model.embedding_dim == 16

    round1 = {**base, "model": {"checkpoint": summary["checkpoint"]}, "labeled": with_labels["labeled"],
              "selection": {"n_samples": 5, "n_partitions": 2}}  # the default: BALD-weighted diversity
    code, out, err = _cli(tmp_path, ["run", "--run-id", "round1", "--json", "--quiet"], round1)
    assert code == 0, err[-2000:]
    features = lake.read_run("features", "round1", columns=["id", "bald", "embedding"]).to_pandas()
    assert (features.bald > 0).all()  # MC dropout on the trained head
    before = lake.read_run("features", "round0", columns=["id", "embedding"]).to_pandas()
    np.testing.assert_array_equal(np.stack(features.sort_values("id").embedding),
                                  np.stack(before.sort_values("id").embedding))  # the same frozen encoder
    second = lake.read_run("ranking", "round1").to_pandas()
    assert not set(second[second.selected].id) & set(picks)


def test_train_names_what_is_missing(tmp_path, encoder_dir):
    pq.write_table(pa.table({"id": ["a"]}), str(tmp_path / "labeled.parquet"))
    config = {"pool": {"path": str(tmp_path / "pool.parquet")}, "model": {"checkpoint": str(encoder_dir)},
              "labeled": {"path": str(tmp_path / "labeled.parquet")}, "selection": {"n_samples": 1},
              "output": {"path": str(tmp_path / "lake")}}
    code, _, err = _cli(tmp_path, ["train"], config)
    assert code == 2 and err.strip().splitlines()[-1].endswith("missing required column 'label'")
    del config["labeled"]
    code, _, err = _cli(tmp_path, ["train"], config)
    assert code == 2 and "labeled.path: alray train needs labels" in err
    code, _, err = _cli(tmp_path, ["train"], {**config, "task": "detection"})
    assert code == 2 and "task: alray train fits a classification head; task detection has box labels" in err


def test_train_reads_the_labels_imported_into_the_lake(ray_session, encoder_dir, tmp_path):
    import datetime as dt

    from alray.lake.labels import add_labels

    modes = ["RGB", "L"]
    ids = [f"img-{i:02d}" for i in range(12)]
    images = [encode(image_of_mode(modes[i % 2], width=20, height=20, seed=i), "PNG") for i in range(12)]
    pq.write_table(pa.table({"id": ids, "image": images}), str(tmp_path / "pool.parquet"))
    config = {"run": {"seed": 0}, "pool": {"path": str(tmp_path / "pool.parquet")},
              "model": {"checkpoint": str(encoder_dir)}, "score": {"batch_size": 16, "mc_samples": 2},
              "selection": {"n_samples": 2}, "output": {"path": str(tmp_path / "lake")}}
    code, _, err = _cli(tmp_path, ["score", "--run-id", "round0", "--quiet"], config)
    assert code == 0, err[-2000:]
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    add_labels(Lake(str(tmp_path / "lake")), [{"id": i, "label": modes[ids.index(i) % 2], "source": "test",
                                               "round": "round0", "labeled_at": now} for i in ids[:6]], now=now)
    code, out, err = _cli(tmp_path, ["train", "--json"], config)  # no labeled.path: the lake's labels
    assert code == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["n_used"], summary["classes"]) == (6, ["L", "RGB"])
    # beside labeled.path, the lake's label of an id wins; the path adds its other ids
    pq.write_table(pa.table({"id": [ids[0], ids[6]], "label": ["wrong", "L"]}), str(tmp_path / "labeled.parquet"))
    both = {**config, "labeled": {"path": str(tmp_path / "labeled.parquet")}}
    code, out, err = _cli(tmp_path, ["train", "--json"], both)
    assert code == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["n_used"], summary["classes"]) == (7, ["L", "RGB"])
    path_only = {**config, "labeled": {"path": str(tmp_path / "labeled.parquet"), "from_lake": False}}
    code, out, err = _cli(tmp_path, ["train", "--json"], path_only)
    assert code == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["n_used"], summary["classes"]) == (2, ["L", "wrong"])
