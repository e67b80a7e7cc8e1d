"""The active-learning simulator on a tiny digits config: curves, revealed labels, learning, seeds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from alray.cli import main
from alray.errors import ConfigError
from alray.simulate import labels_to_reach, simulate
from alray.simulate_config import STRATEGY_NAMES, SimulateConfig, load_simulate_config, strategy_entries
from alray.strategies import strategy_names


def tiny(tmp_path, **overrides) -> SimulateConfig:
    return SimulateConfig(**{
        "dataset": "digits", "seeds": [0], "initial_labels": 20, "batch_size": 30, "rounds": 2,
        "strategies": ["random", "margin", "uncertainty_diversity"], "mc_samples": 5, "n_pool": 600,
        "full_pool_reference": False, "model": {"train_steps": 60}, "output": str(tmp_path / "out"),
        **overrides,
    })


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return simulate(tiny(tmp_path_factory.mktemp("sim")))


def test_every_preset_is_made_of_registry_strategies():
    for name in STRATEGY_NAMES:
        entries = strategy_entries(name)
        if name == "random":
            assert entries is None
            continue
        assert entries and all(entry.strategy in strategy_names() for entry in entries)
    assert [e.label() for e in strategy_entries("diversity+weights:entropy")] == ["diversity", "weights:entropy"]
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        strategy_entries("diversity+nope:bald")


def test_curves_grow_by_the_batch_and_the_model_learns(result):
    for name in ("random", "margin", "uncertainty_diversity"):
        curve = sorted((p for p in result.points if p.strategy == name), key=lambda p: p.round)
        assert [p.round for p in curve] == [0, 1, 2]
        assert [p.n_labels for p in curve] == [20, 50, 80]
        assert curve[-1].accuracy > curve[0].accuracy
    # the seed set is shared: every strategy starts from the same accuracy
    assert len({p.accuracy for p in result.points if p.round == 0}) == 1


def test_files_are_written(result):
    with open(result.files["curves_csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 3
    summary = json.loads(Path(result.files["summary_json"]).read_text())
    assert set(summary["strategies"]) == {"random", "margin", "uncertainty_diversity"}
    assert summary["strategies"]["margin"]["labels_to_reach"]["0.9"]["seeds"] == 1
    with open(result.files["curves_png"], "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_curves(tmp_path, result):
    again = simulate(tiny(tmp_path, strategies=["margin"]), plot=False)
    first = [p for p in result.points if p.strategy == "margin"]
    assert [(p.n_labels, p.accuracy) for p in again.points] == [(p.n_labels, p.accuracy) for p in first]


def test_labels_to_reach(result):
    curve = [p for p in result.points if p.strategy == "random"]
    assert labels_to_reach(curve, 0.0) == 20
    assert labels_to_reach(curve, 1.01) is None


def test_config_errors_name_the_key(tmp_path):
    path = tmp_path / "sim.yaml"
    path.write_text("simulate:\n  strategies: [random, magic]\n")
    with pytest.raises(ConfigError, match=r"simulate\.strategies"):
        load_simulate_config(path)
    path.write_text("simulate:\n  batch_sise: 3\n")
    with pytest.raises(ConfigError, match=r"simulate\.batch_sise: unknown key"):
        load_simulate_config(path)


def test_cli_user_error_exits_2(tmp_path, capsys):
    path = tmp_path / "sim.yaml"
    path.write_text("simulate:\n  dataset: digits\n  rounds: 500\n")
    assert main(["simulate", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "simulate.rounds" in capsys.readouterr().err


def test_a_cold_start_seed_set_is_picked_with_no_model_and_named_in_the_curves(tmp_path):
    from alray.simulate import initial_set, load_dataset

    config = tiny(tmp_path, initial_labels=10, rounds=1, batch_size=10, strategies=["random"],
                  initial_strategies=["random", "typiclust"])
    data = load_dataset(config, 0)
    picked = initial_set("typiclust", data, 10, config=config, seed=0)
    assert len(set(picked.tolist())) == 10
    assert len(set(data.y_pool[picked].tolist())) >= 8  # one typical sample per cluster: most digits
    assert (initial_set("typiclust", data, 10, config=config, seed=0) == picked).all()
    summary = simulate(config, plot=False).summary
    assert list(summary["strategies"]) == ["random", "typiclust>random"]
    with pytest.raises(ValueError, match="reads scores or predictions; the seed set is picked with no model"):
        tiny(tmp_path, initial_strategies=["bald"])


@pytest.mark.slow
def test_an_ssl_seed_set_trains_one_encoder_per_seed_on_ray_train_then_reuses_it(ray_session, tmp_path):
    from alray.simulate import initial_set, load_dataset
    from alray.simulate_ssl import seed_encoder

    embed = {"epochs": 2, "batch_size": 64, "image_size": 16, "channels": 1, "width": 4, "projection_dim": 8,
             "augment": {"flip_probability": 0.0}}
    config = tiny(tmp_path, initial_labels=10, rounds=1, batch_size=10, strategies=["random"], n_pool=200,
                  seeds=[0, 1], initial_strategies=["random", "typiclust"], initial_embedding="ssl",
                  embed=embed, cache=str(tmp_path / "cache"))
    first = simulate(config, plot=False).summary
    encoders = first["encoders"]
    assert [e["seed"] for e in encoders] == [0, 1] and not any(e["reused"] for e in encoders)
    assert encoders[0]["path"] != encoders[1]["path"]  # each seed's pool has its own encoder
    assert all(e["epochs"] == 2 and Path(e["path"]).is_file() for e in encoders)
    # The second simulation of the same config trains nothing and picks the same seed sets.
    second = simulate(config, plot=False).summary
    assert [e["reused"] for e in second["encoders"]] == [True, True]
    assert [e["path"] for e in second["encoders"]] == [e["path"] for e in encoders]
    assert second["strategies"] == first["strategies"]
    # The seed set is picked on the encoder's embeddings (4 x width wide), not on the 64 pixels.
    data = load_dataset(config, 0)
    encoder = seed_encoder(config, data, 0, output=tmp_path)
    assert encoder.reused and encoder.embeddings.shape == (200, 16)
    on_ssl = initial_set("typiclust", data, 10, config=config, seed=0, embeddings=encoder.embeddings)
    on_pixels = initial_set("typiclust", data, 10, config=config, seed=0)
    assert len(set(on_ssl.tolist())) == 10 and set(on_ssl.tolist()) != set(on_pixels.tolist())


def test_ssl_seed_sets_need_an_image_dataset(tmp_path):
    with pytest.raises(ValueError, match="initial_embedding: ssl trains an image encoder; mnist1d has no images"):
        tiny(tmp_path, dataset="mnist1d", initial_embedding="ssl")


def test_the_loop_trains_the_1d_cnn_when_asked(tmp_path):
    config = tiny(tmp_path, rounds=1, strategies=["random", "power_bald"],
                  model={"architecture": "sequence_cnn", "channels": 8, "train_steps": 150, "learning_rate": 1e-2})
    points = simulate(config, plot=False).points
    assert [p.n_labels for p in points if p.strategy == "power_bald"] == [20, 50]
    assert all(0.3 < p.accuracy <= 1.0 for p in points)  # chance is 0.1
    import numpy as np

    from alray.models import SequenceCNN
    from alray.simulate import _train, load_dataset

    assert isinstance(_train(config, load_dataset(config, 0), np.arange(20), 0), SequenceCNN)


def _lake_with_digits(tmp_path, n=700):
    """A lake holding a run's features (the digits' pixels as embeddings) and a labels table beside it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_digits

    from alray.lake import Lake

    x, y = load_digits(return_X_y=True)
    ids = [f"img-{i:05d}" for i in range(n)]
    lake = Lake(str(tmp_path / "lake"))
    features = pa.table({"run_id": ["r1"] * n, "id": ids,
                         "embedding": pa.array(list(x[:n].astype(np.float32)), pa.list_(pa.float32()))})
    lake.replace_run("features", features, "r1")
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    # labels for all but the last 50 features, plus ids the run never scored
    pq.write_table(pa.table({"id": [*ids[:-50], "elsewhere-1"], "label": [*names[y[:n - 50]], "one"]}),
                   tmp_path / "labels.parquet")
    return lake, names[y[: n - 50]]


def test_the_loop_replays_on_a_runs_features_and_the_users_labels(tmp_path):
    lake, _ = _lake_with_digits(tmp_path)
    config = tiny(tmp_path, dataset="lake", n_test=150, n_pool=None, batch_size=50, strategies=["random", "auto"],
                  lake={"output": {"path": lake.root}, "run_id": "r1", "labels_path": str(tmp_path / "labels.parquet")})
    from alray.simulate import load_dataset

    data = load_dataset(config, 0)
    assert data.n_classes == 10 and len(data.y_pool) + len(data.y_test) == 650  # labeled feature rows only
    assert not set(data.ids) & {"elsewhere-1", "img-00699"}
    points = simulate(config, plot=False).points
    auto = sorted((p for p in points if p.strategy == "auto"), key=lambda p: p.round)
    assert [p.n_labels for p in auto] == [20, 70, 120]  # batches of 10% of the 500-row pool
    assert auto[-1].accuracy > 0.6  # a head on the embeddings learns the user's classes (chance: 0.1)


def test_a_lake_without_matching_labels_names_the_labels_table(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lake, _ = _lake_with_digits(tmp_path)
    pq.write_table(pa.table({"id": ["nobody"], "label": ["x"]}), tmp_path / "none.parquet")
    path = tmp_path / "sim.yaml"
    path.write_text(f"simulate:\n  dataset: lake\n  lake: {{output: {{path: {lake.root}}}, run_id: r1, "
                    f"labels_path: {tmp_path / 'none.parquet'}}}\n")
    assert main(["simulate", str(path), "--out", str(tmp_path / "o")]) == 2
    path.write_text("simulate:\n  dataset: lake\n")
    with pytest.raises(ConfigError, match=r"simulate\.lake"):
        load_simulate_config(path)


def test_a_registered_peer_strategy_runs_on_the_same_loop(tmp_path, monkeypatch):
    import numpy as np

    from alray.simulate_config import PEER_STRATEGIES, PeerQuery

    seen: list[PeerQuery] = []

    def top_margin(query: PeerQuery) -> np.ndarray:  # a peer's margin sampling, written on its inputs
        seen.append(query)
        p = np.sort(query.mc_probs.mean(axis=1), axis=1)
        return np.argsort(p[:, -1] - p[:, -2], kind="stable")[: query.n_select]

    monkeypatch.setitem(PEER_STRATEGIES, "peer:margin", top_margin)
    points = simulate(tiny(tmp_path, strategies=["margin", "peer:margin"]), plot=False).points
    ours = [p.accuracy for p in points if p.strategy == "margin"]
    theirs = [p.accuracy for p in points if p.strategy == "peer:margin"]
    assert ours == theirs  # the same picks on the same loop give the same curve
    query = seen[0]
    assert query.mc_probs.shape[1:] == (5, 10) and query.n_select == 30 and len(query.labeled_y) == 20
    assert query.embeddings.shape[0] == query.mc_probs.shape[0] == 580  # the unlabeled rows of the 600
