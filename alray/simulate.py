"""The active-learning simulator: how fast a model learns from what each strategy picks.

A labeled dataset (scikit-learn digits or MNIST-1D) is split into a pool whose labels are held
back and a test set. From a random seed set, every round trains a model from scratch on the
labels revealed so far, measures its test accuracy, scores the rest of the pool with MC dropout
and selects the next batch with each strategy, then reveals those labels.

The scores are :func:`alray.scoring.all_scores` of :func:`alray.models.mc_predict` probabilities,
and the picks come from :func:`alray.selection.local.select_table`: the registry's strategies
and the selection core's rounds, with the Spark stage's partition hash, so a strategy picks here
what ``alray run`` would pick from the same features. No Ray or Spark runs inside the loop.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from alray.config import SelectionConfig
from alray.errors import InputError
from alray.models import FeatureMLP, SequenceCNN, id_keys, mc_predict
from alray.progress import Progress
from alray.scoring import all_scores
from alray.selection.local import select_table
from alray.selection.result import LABELED_REASON
from alray.simulate_config import PEER_STRATEGIES, PeerQuery, SimLakeConfig, SimulateConfig, strategy_entries
from alray.simulate_ssl import SeedEncoder, seed_encoder
from alray.tables import MC_SCORES
from alray.training import accuracy, train_classifier


@dataclass(frozen=True)
class Dataset:
    """Pool features (N, F) with their held-back labels (N,), a test set, and sample ids (N,)."""

    name: str
    x_pool: np.ndarray
    y_pool: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    ids: list[str]
    n_classes: int


def _digits(config: SimulateConfig, seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    test, pool = order[: config.n_test], order[config.n_test :]
    return Dataset("digits", x[pool], y[pool], x[test], y[test], [f"digits-{i:05d}" for i in pool], 10)


@lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise InputError("simulate.dataset: mnist1d needs the mnist1d package (pip install mnist1d)") from None
    # make_dataset generates the data from its templates locally (no download); seed 42 is the
    # canonical MNIST-1D set, so figures compare with the paper's.
    data = make_dataset(get_dataset_args())
    return (np.asarray(data["x"], np.float32), np.asarray(data["y"], np.int64),
            np.asarray(data["x_test"], np.float32), np.asarray(data["y_test"], np.int64))


def _mnist1d(config: SimulateConfig, seed: int) -> Dataset:
    x, y, x_test, y_test = _mnist1d_arrays()
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    return Dataset("mnist1d", (x - mean) / std, y, (x_test - mean) / std, y_test,
                   [f"mnist1d-{i:05d}" for i in range(len(x))], 10)


@lru_cache(maxsize=4)
def _lake_arrays(settings: str) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """Embeddings (N, D), label indices (N,), ids and the class count of a run's features joined to the labels
    (``settings``: the ``simulate.lake`` section as JSON)."""
    from alray.lake import Lake
    from alray.lake.inputs import read_columns
    from alray.strategies.base import embedding_matrix

    lake_config = SimLakeConfig.model_validate_json(settings)
    lake = Lake.from_output(lake_config.output)
    name = "simulate.lake"
    if not lake.run_files("features", lake_config.run_id):
        raise InputError(f"{name}.run_id: no features rows for run {lake_config.run_id!r} in {lake.table('features')}")
    features = lake.read_run("features", lake_config.run_id, columns=["id", "embedding"])
    labels = read_columns(lake_config.labels_path, lake_config.labels_format, ["id", lake_config.label_column],
                          name=f"{name}.labels_path",
                          storage_options=dict(lake_config.output.storage_options) or None)
    label_of = {str(i): v for i, v in zip(labels.column("id").to_pylist(),
                                          labels.column(lake_config.label_column).to_pylist(), strict=True)
                if v is not None}
    ids = [str(i) for i in features.column("id").to_pylist()]
    keep = np.array([i in label_of for i in ids], dtype=bool)
    keep &= np.asarray(features.column("embedding").is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if keep.sum() < 10:
        raise InputError(f"{name}.labels_path: {lake_config.labels_path}: only {int(keep.sum())} of the run's "
                         f"{len(ids)} feature ids have a label; expected at least 10")
    kept = [i for i, k in zip(ids, keep, strict=True) if k]
    classes = sorted({str(label_of[i]) for i in kept})
    index = {c: n for n, c in enumerate(classes)}
    x = embedding_matrix(features.filter(pa.array(keep)))
    y = np.array([index[str(label_of[i])] for i in kept], dtype=np.int64)
    return x, y, kept, len(classes)


def _lake(config: SimulateConfig, seed: int) -> Dataset:
    assert config.lake is not None  # the config's validator
    x, y, ids, n_classes = _lake_arrays(config.lake.model_dump_json())
    if config.n_test >= len(y):
        raise InputError(f"simulate.n_test: {config.n_test} test rows leave no pool of the {len(y)} labeled rows")
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    x = ((x - mean) / std).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(y))
    test, pool = order[: config.n_test], order[config.n_test :]
    return Dataset("lake", x[pool], y[pool], x[test], y[test], [ids[i] for i in pool], n_classes)


def load_dataset(config: SimulateConfig, seed: int) -> Dataset:
    """The dataset of ``config`` split for ``seed`` (digits and lake tables are split per seed; MNIST-1D has
    its own test set)."""
    loaders: dict[str, Callable[[SimulateConfig, int], Dataset]] = {"digits": _digits, "mnist1d": _mnist1d,
                                                                   "lake": _lake}
    data = loaders[config.dataset](config, seed)
    if config.n_pool is not None and config.n_pool < len(data.y_pool):
        keep = np.sort(np.random.default_rng(seed + 1).choice(len(data.y_pool), config.n_pool, replace=False))
        data = Dataset(data.name, data.x_pool[keep], data.y_pool[keep], data.x_test, data.y_test,
                       [data.ids[i] for i in keep], data.n_classes)
    if config.initial_labels + config.rounds * config.batch_size > len(data.y_pool):
        raise InputError(f"simulate.rounds: {config.initial_labels} + {config.rounds} x {config.batch_size} labels "
                         f"exceed the pool of {len(data.y_pool)} {config.dataset} rows")
    return data


def _train(config: SimulateConfig, data: Dataset, labeled: np.ndarray, seed: int) -> FeatureMLP | SequenceCNN:
    m = config.model
    # Same initial weights and shuffles for every strategy in a round: curves differ by the data only.
    torch.manual_seed(seed)
    model: FeatureMLP | SequenceCNN
    if m.architecture == "sequence_cnn":
        model = SequenceCNN(n_features=data.x_pool.shape[1], n_classes=data.n_classes, channels=m.channels,
                            embedding_dim=m.embedding_dim, dropout=m.dropout)
    else:
        model = FeatureMLP(n_features=data.x_pool.shape[1], n_classes=data.n_classes, hidden_dim=m.hidden_dim,
                           embedding_dim=m.embedding_dim, dropout=m.dropout)
    steps_per_epoch = math.ceil(len(labeled) / m.batch_size)
    epochs = max(1, math.ceil(m.train_steps / steps_per_epoch))
    train_classifier(model, data.x_pool[labeled], data.y_pool[labeled], epochs=epochs, batch_size=m.batch_size,
                     learning_rate=m.learning_rate, seed=seed)
    return model


def select_batch(name: str, model: FeatureMLP | SequenceCNN, data: Dataset, keys: np.ndarray, labeled: np.ndarray,
                 n_select: int, *, config: SimulateConfig, seed: int) -> np.ndarray:
    """Pool indices (n_select,) that strategy ``name`` picks among the unlabeled rows, in pick order.

    The unlabeled rows become a features table (embeddings and every MC-dropout score), the
    labeled rows its existing centres, and :func:`alray.selection.local.select_table` selects with
    the strategies ``name`` stands for: the code path of ``alray run``'s selection stage.
    """
    unlabeled = np.setdiff1d(np.arange(len(data.y_pool)), labeled)
    peer = PEER_STRATEGIES.get(name)
    entries = None if peer is not None else strategy_entries(name, n_neighbors=config.n_neighbors)
    if entries is None and peer is None:
        return np.random.default_rng([seed, 7]).choice(unlabeled, size=n_select, replace=False)
    x = torch.as_tensor(data.x_pool[unlabeled])
    prediction = mc_predict(model, x, keys[unlabeled], n_samples=config.mc_samples, seed=seed)
    assert prediction.probs is not None  # the simulator's models are classifiers
    with torch.no_grad():
        labeled_embeddings = model.embed(torch.as_tensor(data.x_pool[labeled])).numpy().astype(np.float32)
    if peer is not None:
        rows = peer(PeerQuery(mc_probs=prediction.probs.numpy(), embeddings=prediction.embedding.numpy(),
                              labeled_embeddings=labeled_embeddings, labeled_y=data.y_pool[labeled],
                              n_classes=data.n_classes, n_select=n_select, seed=seed))
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) != n_select or len(set(rows.tolist())) != n_select:
            raise RuntimeError(f"peer strategy {name!r} returned {len(rows)} rows, {len(set(rows.tolist()))} "
                               f"distinct, for a batch of {n_select}")
        return unlabeled[rows]
    assert entries is not None
    scores = all_scores(prediction.probs.numpy())
    mean_probs = scores["probs"]  # (N, C): the mean over the MC passes, as the features table's probs
    embeddings = np.vstack([prediction.embedding.numpy().astype(np.float32), labeled_embeddings])
    rows = np.concatenate([unlabeled, labeled])
    features = pa.table({
        "id": pa.array([data.ids[i] for i in rows], pa.string()),
        "embedding": pa.array(list(embeddings), pa.list_(pa.float32())),
        "pred": pa.array(np.concatenate([scores["pred"], np.full(len(labeled), -1)]).astype(np.int32)),
        "probs": pa.array(list(np.vstack([mean_probs, np.zeros((len(labeled), mean_probs.shape[1]))]).astype(
            np.float32)), pa.list_(pa.float32())),
        **{score: pa.array(np.concatenate([scores[score], np.zeros(len(labeled))]), pa.float64())
           for score in MC_SCORES},
    })
    selection = SelectionConfig(n_samples=n_select, strategies=entries, n_partitions=config.n_partitions,
                                oversample=config.oversample)
    excluded = {data.ids[i]: LABELED_REASON for i in labeled}
    ranking, _ = select_table(features, selection, seed=seed, excluded=excluded)
    picked = ranking.filter(ranking.column("selected")).column("id").to_pylist()
    index = {data.ids[i]: i for i in unlabeled}
    return np.array([index[i] for i in picked], dtype=np.int64)


@dataclass
class CurvePoint:
    """One round of one strategy and seed: labels revealed so far and the test accuracy."""

    dataset: str
    strategy: str
    seed: int
    round: int
    n_labels: int
    accuracy: float


def initial_set(name: str, data: Dataset, n: int, *, config: SimulateConfig, seed: int,
                embeddings: np.ndarray | None = None) -> np.ndarray:
    """Pool indices (n,) of the seed set: random, or picked by a model-free strategy on ``embeddings``
    (N, D) of the pool (the dataset's features when None).

    The cold start of ``alray run`` with no model: :func:`~alray.selection.local.select_table` picks
    with no labels from the embeddings a self-supervised encoder gives (or the features standing in).
    """
    entries = strategy_entries(name, n_neighbors=config.n_neighbors)
    if entries is None:
        return np.sort(np.random.default_rng([seed, 1]).choice(len(data.y_pool), size=n, replace=False))
    vectors = (data.x_pool if embeddings is None else embeddings).astype(np.float32)
    features = pa.table({"id": pa.array(data.ids, pa.string()),
                         "embedding": pa.array(list(vectors), pa.list_(pa.float32()))})
    selection = SelectionConfig(n_samples=n, strategies=entries, n_partitions=config.n_partitions,
                                oversample=config.oversample)
    ranking, _ = select_table(features, selection, seed=seed)
    index = {identifier: i for i, identifier in enumerate(data.ids)}
    return np.sort(np.array([index[i] for i in ranking.filter(ranking.column("selected")).column("id").to_pylist()],
                            dtype=np.int64))


def run_seed(config: SimulateConfig, seed: int, *, on_round: Callable[[CurvePoint], None] | None = None,
             output: Path | None = None, progress: Progress | None = None,
             ) -> tuple[list[CurvePoint], float | None, SeedEncoder | None]:
    """Every strategy's curve for one seed, the accuracy of a model trained on the whole pool, and
    the seed's self-supervised encoder (``initial_embedding: ssl`` with a model-free initial strategy)."""
    data = load_dataset(config, seed)
    keys = id_keys(data.ids)
    points: list[CurvePoint] = []
    encoder = None
    if config.initial_embedding == "ssl" and any(name != "random" for name in config.initial_strategies):
        encoder = seed_encoder(config, data, seed, output=output or Path(config.output), progress=progress)
    for initial_name in config.initial_strategies:
        initial = initial_set(initial_name, data, config.initial_labels, config=config, seed=seed,
                              embeddings=None if encoder is None else encoder.embeddings)
        # Round 0 is the same seed set for every strategy: train it once.
        first_model = _train(config, data, initial, seed * 1000)
        first_accuracy = accuracy(first_model, data.x_test, data.y_test)
        for curve, _, name in (c for c in config.curve_names() if c[1] == initial_name):
            labeled, model = initial, first_model
            for round_index in range(config.rounds + 1):
                acc = first_accuracy if round_index == 0 else accuracy(model, data.x_test, data.y_test)
                point = CurvePoint(data.name, curve, seed, round_index, len(labeled), round(acc, 6))
                points.append(point)
                if on_round is not None:
                    on_round(point)
                if round_index == config.rounds:
                    break
                picks = select_batch(name, model, data, keys, labeled, config.batch_size, config=config,
                                     seed=seed * 1000 + round_index)
                labeled = np.sort(np.concatenate([labeled, picks]))
                model = _train(config, data, labeled, seed * 1000 + round_index + 1)
    ceiling = None
    if config.full_pool_reference:
        full = _train(config, data, np.arange(len(data.y_pool)), seed * 1000)
        ceiling = accuracy(full, data.x_test, data.y_test)
    return points, ceiling, encoder


def labels_to_reach(curve: list[CurvePoint], target: float) -> int | None:
    """Labels of the first round whose accuracy reaches ``target``; None when no round does."""
    for point in sorted(curve, key=lambda p: p.round):
        if point.accuracy >= target:
            return point.n_labels
    return None


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "std": None}
    return {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4)}


def summarise(config: SimulateConfig, points: list[CurvePoint], ceilings: list[float]) -> dict[str, Any]:
    """Labels to reach each target (per seed, mean and std over the seeds that reach it) and final accuracy."""
    strategies: dict[str, Any] = {}
    for name, _, _ in config.curve_names():
        per_seed = {seed: [p for p in points if p.strategy == name and p.seed == seed] for seed in config.seeds}
        reach: dict[str, Any] = {}
        for target in config.targets:
            values = {seed: labels_to_reach(curve, target) for seed, curve in per_seed.items()}
            reached = [float(v) for v in values.values() if v is not None]
            reach[f"{target:g}"] = {"per_seed": {str(k): v for k, v in values.items()}, **_spread(reached),
                                    "reached": len(reached), "seeds": len(values)}
        finals = [max(curve, key=lambda p: p.round).accuracy for curve in per_seed.values() if curve]
        strategies[name] = {"labels_to_reach": reach, "final_accuracy": _spread(finals)}
    return {
        "dataset": config.dataset, "seeds": list(config.seeds), "initial_labels": config.initial_labels,
        "initial_strategies": list(config.initial_strategies),
        "batch_size": config.batch_size, "rounds": config.rounds,
        "max_labels": config.initial_labels + config.rounds * config.batch_size,
        "targets": list(config.targets), "full_pool_accuracy": _spread(ceilings), "strategies": strategies,
    }


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table: labels to reach each target, mean ± std (seeds reaching it)."""
    targets = [f"{t:g}" for t in summary["targets"]]
    head = "| strategy | " + " | ".join(f"labels to {float(t):.0%}" for t in targets) + " | final accuracy |"
    lines = [head, "|" + " --- |" * (len(targets) + 2)]
    for name, entry in summary["strategies"].items():
        cells = []
        for t in targets:
            r = entry["labels_to_reach"][t]
            if r["mean"] is None:
                cells.append(f"not reached (0/{r['seeds']})")
            else:
                part = "" if r["reached"] == r["seeds"] else f" ({r['reached']}/{r['seeds']} seeds)"
                cells.append(f"{r['mean']:.0f} ± {r['std']:.0f}{part}")
        final = entry["final_accuracy"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {final['mean']:.3f} ± {final['std']:.3f} |")
    return "\n".join(lines)


def plot_curves(config: SimulateConfig, points: list[CurvePoint], summary: dict[str, Any], path: Path) -> None:
    """Mean test accuracy against labels per strategy, shaded by the spread over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5), dpi=110)
    for name, _, _ in config.curve_names():
        curves = [[p for p in points if p.strategy == name and p.seed == s] for s in config.seeds]
        n_labels = np.array([p.n_labels for p in sorted(curves[0], key=lambda p: p.round)])
        acc = np.array([[p.accuracy for p in sorted(c, key=lambda p: p.round)] for c in curves])
        mean, std = acc.mean(axis=0), acc.std(axis=0)
        width = 2.2 if name == "uncertainty_diversity" else 1.3
        (line,) = axes.plot(n_labels, mean, label=name, linewidth=width)
        axes.fill_between(n_labels, mean - std, mean + std, color=line.get_color(), alpha=0.12)
    for target in config.targets:
        axes.axhline(target, color="grey", linestyle=":", linewidth=0.8)
    ceiling = summary["full_pool_accuracy"]["mean"]
    if ceiling is not None:
        axes.axhline(ceiling, color="black", linestyle="--", linewidth=0.8, label="whole pool labeled")
    axes.set_xlabel("labels revealed")
    axes.set_ylabel("test accuracy")
    axes.set_title(f"{config.dataset}: mean over seeds {list(config.seeds)} (band: ± std)")
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


@dataclass
class SimulationResult:
    """The curves, the summary, and where they were written."""

    points: list[CurvePoint]
    summary: dict[str, Any]
    files: dict[str, str]


def simulate(config: SimulateConfig, *, output: str | Path | None = None,
             on_round: Callable[[CurvePoint], None] | None = None, plot: bool = True,
             progress: Progress | None = None) -> SimulationResult:
    """Run every seed and strategy of ``config``; write curves.csv, summary.json and curves.png.

    Deterministic for a config: the split, seed set, model initialisation, shuffles, MC masks and
    random picks are all functions of the seed (torch runs single-threaded here, which also keeps
    the small models fast on a shared machine).
    """
    folder = Path(output or config.output)
    folder.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started = time.perf_counter()
    points: list[CurvePoint] = []
    ceilings: list[float] = []
    encoders: list[SeedEncoder] = []
    try:
        for seed in config.seeds:
            seed_points, ceiling, encoder = run_seed(config, seed, on_round=on_round, output=folder,
                                                     progress=progress)
            points.extend(seed_points)
            if ceiling is not None:
                ceilings.append(ceiling)
            if encoder is not None:
                encoders.append(encoder)
    finally:
        torch.set_num_threads(threads)
    summary = summarise(config, points, ceilings)
    summary["initial_embedding"] = config.initial_embedding
    if encoders:
        summary["encoders"] = [{"seed": e.seed, "path": e.path, "reused": e.reused, "epochs": e.epochs,
                                "final_loss": e.final_loss, "train_s": e.train_s} for e in encoders]
    summary["elapsed_s"] = round(time.perf_counter() - started, 1)
    summary["config"] = config.model_dump(mode="json")
    files = {"curves_csv": str(folder / "curves.csv"), "summary_json": str(folder / "summary.json")}
    with open(files["curves_csv"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "strategy", "seed", "round", "n_labels", "accuracy"])
        for p in points:
            writer.writerow([p.dataset, p.strategy, p.seed, p.round, p.n_labels, f"{p.accuracy:.6f}"])
    if plot:
        files["curves_png"] = str(folder / "curves.png")
        plot_curves(config, points, summary, Path(files["curves_png"]))
    summary["files"] = files
    Path(files["summary_json"]).write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    return SimulationResult(points, summary, files)
