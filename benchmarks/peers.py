"""Peers in the same run: scikit-activeml's and baal's query strategies on the simulator's exact loop.

Run ``python benchmarks/peers.py [--setting NAME|all] [--seeds 0,1,2,3,4]`` (the names: ``SETTINGS``)
after ``make peers`` (``pip install -e '.[peers]'``: scikit-activeml and baal, dev-only). Each peer
strategy is registered with the simulator (:data:`alray.simulate_config.PEER_STRATEGIES`) and runs
inside ``alray simulate``'s loop beside alray's strategies: the same seeds, splits, seed sets, task
model, MC-dropout passes (T=20), training and test set; only the batch each picks differs.

- scikit-activeml 1.0.1: ``RandomSampling``, ``UncertaintySampling`` (margin, entropy), ``CoreSet``
  and ``TypiClust`` on the task model's embeddings, ``Badge`` with the model's MC-mean
  probabilities and embeddings (through a classifier that returns them, fitted on nothing);
- baal 2.1.0: ``BALD``, ``Entropy``, ``Margin`` and ``PowerSampling(BALD)`` (PowerBALD) on the
  MC-dropout probabilities (baal's [N, C, T] layout), seeded through NumPy's and torch's global
  generators, which baal draws from; ``BatchBALD`` with ``--batchbald``: one query of 20 from
  1,277 rows (T=20, 10 classes, its default 500 draws) takes 160 s on this machine, so a 5-seed
  digits run would spend about 4.5 hours in it.

Each setting writes ``benchmarks/results/peers-SETTING.json`` (the simulator's summary) and its
curves under ``benchmarks/results/peers-SETTING/``. ``--strategies`` runs a subset; with ``--part NAME``
the subset is written as a part and ``--merge`` joins a setting's parts: since every curve depends on
its seed alone (the seed set, initial weights, shuffles and MC masks are the seed's), strategies run in
parallel processes give the same rows as one run. The MNIST-1D settings (the 1-D CNN, 2,000 steps a
round) cost about 80 s per strategy and seed with batches of 200 on one core here. ``--worst-case`` reads
the written summaries and prints, for every strategy, its labels to each large-batch target over the
best strategy's (the figure RESULTS.md quotes for ``auto``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
try:
    from alray.simulate import CurvePoint, format_table, plot_curves, simulate
    from alray.simulate_config import PEER_STRATEGIES, PeerQuery, SimulateConfig, load_simulate_config
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(ROOT))
    from alray.simulate import CurvePoint, format_table, plot_curves, simulate
    from alray.simulate_config import PEER_STRATEGIES, PeerQuery, SimulateConfig, load_simulate_config

RESULTS = ROOT / "benchmarks" / "results"
ALRAY = ["random", "margin", "bald", "power_bald", "coreset", "uncertainty_diversity", "badge", "typiclust", "auto"]
EXTRA_ALRAY = ["entropy", "cluster_margin"]  # by --strategies
MNIST1D = ["simulate.initial_labels=100", "simulate.model.train_steps=2000", "simulate.targets=[0.8,0.85,0.9]"]
SETTINGS: dict[str, tuple[str, list[str]]] = {
    # conf file, overrides
    "digits": ("simulate-digits.yaml", []),
    "large-batch": ("simulate-large-batch.yaml", []),  # 65 a round: 5% of the pool
    "large-batch-10": ("simulate-large-batch.yaml", ["simulate.batch_size=130", "simulate.rounds=4"]),  # 10%
    "low-budget": ("simulate-digits.yaml", ["simulate.initial_labels=10", "simulate.batch_size=10",
                                            "simulate.rounds=4", "simulate.targets=[0.7,0.8]"]),
    # MNIST-1D with the 1-D CNN (4,000 pool rows): 2,000 steps a round reach 0.92 with the whole pool.
    "mnist1d": ("simulate-mnist1d-cnn.yaml", [*MNIST1D, "simulate.batch_size=200", "simulate.rounds=10"]),  # 5%
    "mnist1d-10": ("simulate-mnist1d-cnn.yaml", [*MNIST1D, "simulate.batch_size=400", "simulate.rounds=5"]),
    # 1 to 5 labels per class: 300 steps a round (the CNN overfits 10 to 50 rows whatever the budget)
    "mnist1d-low-budget": ("simulate-mnist1d-cnn.yaml", [
        "simulate.initial_labels=10", "simulate.batch_size=10", "simulate.rounds=4", "simulate.model.train_steps=300",
        "simulate.targets=[0.2,0.25]"]),
}


def _pool_arrays(query: PeerQuery) -> tuple[np.ndarray, np.ndarray, int]:
    """scikit-activeml's view: X (labeled then unlabeled embeddings), y (NaN where unlabeled), offset L."""
    x = np.vstack([query.labeled_embeddings, query.embeddings]).astype(np.float64)
    y = np.concatenate([query.labeled_y.astype(np.float64), np.full(len(query.embeddings), np.nan)])
    return x, y, len(query.labeled_embeddings)


def _skactiveml(method: str):
    from skactiveml.base import SkactivemlClassifier
    from skactiveml.pool import Badge, CoreSet, RandomSampling, TypiClust, UncertaintySampling

    class Precomputed(SkactivemlClassifier):
        """The simulator's model as scikit-activeml sees it: X is a row index into its outputs."""

        def __init__(self, probs=None, embeddings=None, classes=None, missing_label=np.nan, cost_matrix=None,
                     random_state=None):
            super().__init__(classes=classes, missing_label=missing_label, cost_matrix=cost_matrix,
                             random_state=random_state)
            self.probs = probs
            self.embeddings = embeddings

        def fit(self, X, y, sample_weight=None):
            self._validate_data(X, y, sample_weight)
            return self

        def predict_proba(self, X, return_embeddings=False):
            rows = np.asarray(X)[:, 0].astype(np.int64)
            return (self.probs[rows], self.embeddings[rows]) if return_embeddings else self.probs[rows]

    def pick(query: PeerQuery) -> np.ndarray:
        x, y, offset = _pool_arrays(query)
        if method in ("margin", "entropy", "badge"):
            probs = np.vstack([np.full((offset, query.n_classes), 1.0 / query.n_classes),
                               query.mc_probs.mean(axis=1)])
            index = np.arange(len(y), dtype=np.float64)[:, None]
            clf = Precomputed(probs=probs, embeddings=x, classes=np.arange(query.n_classes)).fit(index, y)
            if method == "badge":
                strategy: Any = Badge(clf_embedding_flag_name="return_embeddings", random_state=query.seed)
            else:
                strategy = UncertaintySampling(method="margin_sampling" if method == "margin" else "entropy",
                                               random_state=query.seed)
            rows = strategy.query(index, y, clf=clf, fit_clf=False, batch_size=query.n_select)
        else:
            strategy = {"random": RandomSampling, "coreset": CoreSet, "typiclust": TypiClust}[method](
                random_state=query.seed)
            rows = strategy.query(x, y, batch_size=query.n_select)
        return np.asarray(rows, dtype=np.int64) - offset

    return pick


def _baal(method: str):
    import torch
    from baal.active.heuristics import BALD, BatchBALD, Entropy, Margin
    from baal.active.heuristics.stochastics import PowerSampling

    def pick(query: PeerQuery) -> np.ndarray:
        predictions = np.ascontiguousarray(query.mc_probs.transpose(0, 2, 1))  # [N, C, T]
        np.random.seed(query.seed % 2**32)  # baal draws from the global generators
        torch.manual_seed(query.seed)
        k = query.n_select
        if method == "powerbald":
            ranks, _ = PowerSampling(BALD(), query_size=k, temperature=1.0).get_ranks(predictions)
        elif method == "batchbald":
            ranks = BatchBALD(num_samples=k)(predictions)
        else:
            ranks = {"bald": BALD, "entropy": Entropy, "margin": Margin}[method]()(predictions)
        return np.asarray(ranks, dtype=np.int64)[:k]

    return pick


PEERS = {
    **{f"skactiveml:{m}": (_skactiveml, m) for m in ("random", "margin", "entropy", "coreset", "typiclust", "badge")},
    **{f"baal:{m}": (_baal, m) for m in ("bald", "entropy", "margin", "batchbald", "powerbald")},
}


def register(*, batchbald: bool = False) -> list[str]:
    """Register the peer strategies with the simulator (BatchBALD only when asked); their names."""
    names = [n for n in PEERS if batchbald or n != "baal:batchbald"]
    for name in names:
        factory, method = PEERS[name]
        PEER_STRATEGIES[name] = factory(method)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=[*SETTINGS, "all"], default="all")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batchbald", action="store_true", help="also baal's BatchBALD (slow: see above)")
    parser.add_argument("--strategies", help="comma-separated subset of alray's and the peers' names (default: all)")
    parser.add_argument("--part", help="write this subset as part NAME of the setting, for --merge (to run the "
                                       "strategies in parallel processes: every curve depends on its seed only)")
    parser.add_argument("--merge", action="store_true", help="combine the setting's parts into one summary")
    parser.add_argument("--worst-case", action="store_true",
                        help="from the written summaries: each strategy's largest ratio to the best labels-to-target "
                             "over the large-batch settings of both datasets")
    args = parser.parse_args(argv)
    if args.worst_case:
        for name, (ratio, cells) in worst_case(LARGE_BATCH_SETTINGS).items():
            print(f"{name:24s} {ratio:6.2f}  " + "  ".join(f"{cell}:{r:.2f}" for cell, r in cells))
        return 0
    peers = register(batchbald=args.batchbald)
    for setting in (list(SETTINGS) if args.setting == "all" else [args.setting]):
        if args.merge:
            summary = merge_parts(setting)
            print(f"\n{setting}:\n{format_table(summary)}", flush=True)
            continue
        conf, overrides = SETTINGS[setting]
        names = [*ALRAY, *peers] if args.strategies is None else args.strategies.split(",")
        unknown = sorted(set(names) - {*ALRAY, *EXTRA_ALRAY, *peers})
        if unknown:
            parser.error(f"--strategies: unknown {unknown}; expected names from {[*ALRAY, *EXTRA_ALRAY, *peers]}")
        name = f"peers-{setting}" + (f".part-{args.part}" if args.part else "")
        config = load_simulate_config(ROOT / "conf" / conf, [
            *overrides, f"simulate.seeds=[{args.seeds}]", f"simulate.strategies={json.dumps(names)}",
            "simulate.initial_strategies=[random]", *args.overrides])
        result = simulate(config, output=RESULTS / name)
        command = (f"python benchmarks/peers.py --setting {setting} --seeds {args.seeds}"
                   + "".join(f" --set {o}" for o in args.overrides)
                   + (f" --strategies {args.strategies}" if args.strategies else "")
                   + (f" --part {args.part}" if args.part else ""))
        summary = {**result.summary, "command": command}
        (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        print(f"\n{setting}:\n{format_table(result.summary)}", flush=True)
    return 0


LARGE_BATCH_SETTINGS = {"large-batch": ["0.9", "0.95"], "large-batch-10": ["0.9", "0.95"],
                        "mnist1d": ["0.8", "0.85"], "mnist1d-10": ["0.8", "0.85"]}


def worst_case(settings: dict[str, list[str]]) -> dict[str, tuple[float, list[tuple[str, float]]]]:
    """Each strategy's labels to a target over the fewest of any strategy that reaches it on every seed,
    per setting and target, and the largest of those ratios (inf where it misses a seed); smallest first."""
    summaries = {s: json.loads((RESULTS / f"peers-{s}.json").read_text())["strategies"] for s in settings}
    names = set.intersection(*(set(rows) for rows in summaries.values()))
    found: dict[str, tuple[float, list[tuple[str, float]]]] = {}
    for name in names:
        cells = []
        for setting, targets in settings.items():
            for target in targets:
                reach = {n: r["labels_to_reach"][target] for n, r in summaries[setting].items()}
                full = {n: r["mean"] for n, r in reach.items() if r["reached"] == r["seeds"]}
                cells.append((f"{setting}@{target}", full[name] / min(full.values()) if name in full else float("inf")))
        found[name] = (max(r for _, r in cells), cells)
    return dict(sorted(found.items(), key=lambda item: (item[1][0], item[0])))


def merge_parts(setting: str) -> dict[str, Any]:
    """One summary (peers-SETTING.json) and curves.csv from the setting's parts, which must share the loop."""
    import csv

    parts = sorted(RESULTS.glob(f"peers-{setting}.part-*.json"))
    if not parts:
        raise SystemExit(f"--merge: no benchmarks/results/peers-{setting}.part-*.json to merge")
    summaries = [json.loads(p.read_text()) for p in parts]
    loop = ("dataset", "seeds", "initial_labels", "batch_size", "rounds", "targets")
    for path, other in zip(parts[1:], summaries[1:], strict=True):
        differing = [k for k in loop if other[k] != summaries[0][k]]
        if differing:
            raise SystemExit(f"--merge: {path.name} differs from {parts[0].name} in {differing}")
    merged = {**summaries[0], "strategies": {}, "commands": [s["command"] for s in summaries],
              "elapsed_s": round(sum(s["elapsed_s"] for s in summaries), 1)}
    merged.pop("command", None)
    found = {name: row for summary in summaries for name, row in summary["strategies"].items()}
    order = [*ALRAY, *EXTRA_ALRAY, *PEERS]
    merged["strategies"] = {name: found[name] for name in sorted(found, key=lambda n: (
        order.index(n) if n in order else len(order), n))}
    rows: list[list[str]] = []
    for path in parts:
        with open(RESULTS / path.stem / "curves.csv", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows.extend(reader)
    folder = RESULTS / f"peers-{setting}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "curves.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    config = SimulateConfig.model_validate({**summaries[0]["config"], "strategies": list(merged["strategies"])})
    points = [CurvePoint(d, name, int(seed), int(r), int(n), float(acc)) for d, name, seed, r, n, acc in rows]
    plot_curves(config, points, merged, folder / "curves.png")
    merged["files"] = {"curves_csv": str(folder / "curves.csv"), "curves_png": str(folder / "curves.png"),
                       "summary_json": str(RESULTS / f"peers-{setting}.json")}
    (RESULTS / f"peers-{setting}.json").write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return merged


if __name__ == "__main__":
    sys.exit(main())
