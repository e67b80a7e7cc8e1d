"""Peers in the same run: scikit-activeml's and baal's query strategies on the simulator's exact loop.

Run ``python benchmarks/peers.py [--setting digits|large-batch|large-batch-10|low-budget|all] [--seeds 0,1,2,3,4]``
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
curves under ``benchmarks/results/peers-SETTING/``.
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
    from alray.simulate import format_table, simulate
    from alray.simulate_config import PEER_STRATEGIES, PeerQuery, load_simulate_config
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(ROOT))
    from alray.simulate import format_table, simulate
    from alray.simulate_config import PEER_STRATEGIES, PeerQuery, load_simulate_config

RESULTS = ROOT / "benchmarks" / "results"
ALRAY = ["random", "margin", "bald", "power_bald", "coreset", "uncertainty_diversity", "badge", "typiclust", "auto"]
SETTINGS: dict[str, tuple[str, list[str]]] = {
    # conf file, overrides
    "digits": ("simulate-digits.yaml", []),
    "large-batch": ("simulate-large-batch.yaml", []),  # 65 a round: 5% of the pool
    "large-batch-10": ("simulate-large-batch.yaml", ["simulate.batch_size=130", "simulate.rounds=4"]),  # 10%
    "low-budget": ("simulate-digits.yaml", ["simulate.initial_labels=10", "simulate.batch_size=10",
                                            "simulate.rounds=4", "simulate.targets=[0.7,0.8]"]),
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
    args = parser.parse_args(argv)
    peers = register(batchbald=args.batchbald)
    for setting in (list(SETTINGS) if args.setting == "all" else [args.setting]):
        conf, overrides = SETTINGS[setting]
        strategies = json.dumps([*ALRAY, *peers])
        config = load_simulate_config(ROOT / "conf" / conf, [
            *overrides, f"simulate.seeds=[{args.seeds}]", f"simulate.strategies={strategies}",
            "simulate.initial_strategies=[random]", *args.overrides])
        result = simulate(config, output=RESULTS / f"peers-{setting}")
        summary = {**result.summary, "command": "python benchmarks/peers.py --setting " + setting
                   + f" --seeds {args.seeds}" + "".join(f" --set {o}" for o in args.overrides)}
        (RESULTS / f"peers-{setting}.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        print(f"\n{setting}:\n{format_table(result.summary)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
