"""Benchmark of the self-supervised encoder (`alray embed`): how good its embeddings are, and how
fast it trains on Ray Train.

Quality, on two labeled pools: the demo pool (``alray.demo``: scikit-learn's digits as 32 px
PNGs plus blank, blurred and corrupt rows; the digits' labels are the hidden ones) and
scikit-learn's 8x8 digits as PNGs, decoded at 16 px. For each, the encoder is trained with
``alray.stages.embed.train_or_reuse`` (the code path of ``alray embed``: Ray Train, the pool
streamed by Ray Data) and the digit rows are embedded three ways: by the trained encoder, by the
same architecture randomly initialised (the same initial weights training started from), and as
raw pixels. Each is scored by a linear probe (logistic regression on the frozen, standardised
embeddings, all labels) and a 20-NN classifier (cosine), both 5-fold stratified
cross-validated accuracy.

Throughput: images/s of ``embed.num_workers`` 1 and 2 on the demo pool (the mean of the epochs
after the first, which includes the start of the data pipeline).

Run ``python benchmarks/encoder_quality.py [--quick]``; figures are printed and written as JSON to
``benchmarks/results/encoder_quality[-quick].json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _measure import write_results

try:
    import alray  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from alray.config import EmbedConfig, OutputConfig, PoolConfig, RayConfig
from alray.demo import build_pool, png_bytes
from alray.engines import ensure_ray
from alray.models import load_model
from alray.models.encoders import embed_images
from alray.progress import Progress
from alray.simulate_ssl import decoded_pool
from alray.stages.embed import new_encoder, train_or_reuse

RESULTS_DIR = Path(__file__).resolve().parent / "results"
N_NEIGHBOURS = 20
N_FOLDS = 5
# Digits: a mirror changes a digit, and they fill their frame, so crops keep more of it.
AUGMENT = {"flip_probability": 0.0, "crop_min_scale": 0.4}


def demo_pool(folder: Path) -> tuple[str, list[str], np.ndarray]:
    """The demo pool as a parquet folder; the ids of its digit rows and their labels."""
    table, _images, labels = build_pool(seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(folder / "part-00000.parquet"))
    ids = [i for i in table.column("id").to_pylist() if i.startswith("digit-")]
    return str(folder), ids, labels


def digits_pool(folder: Path) -> tuple[str, list[str], np.ndarray]:
    """scikit-learn's 8x8 digits as PNGs (grey levels 0..16 scaled to 0..255) in a parquet folder."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    ids = [f"d{i:05d}" for i in range(len(images))]
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids, "image": [png_bytes(img) for img in images]}),
                   str(folder / "part-00000.parquet"))
    return str(folder), ids, digits.target.astype(np.int64)


def probe_scores(features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Linear-probe and 20-NN accuracy, 5-fold stratified cross-validated (mean and std)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    folds = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=0)
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    knn = make_pipeline(Normalizer(), KNeighborsClassifier(n_neighbors=N_NEIGHBOURS))
    out: dict[str, float] = {}
    for name, estimator in (("linear_probe", linear), ("knn20", knn)):
        scores = cross_val_score(estimator, features, labels, cv=folds)
        out[name] = round(float(scores.mean()), 4)
        out[f"{name}_std"] = round(float(scores.std()), 4)
    return out


def quality(name: str, pool: str, ids: list[str], labels: np.ndarray, embed: EmbedConfig, lake: Path,
            progress: Progress) -> dict[str, Any]:
    """Train (or reuse) the encoder on ``pool`` and score three embeddings of its labeled rows."""
    output = OutputConfig(path=str(lake))
    begin = time.perf_counter()
    result = train_or_reuse(PoolConfig(path=pool), embed, output, RayConfig(), progress=progress)
    train_s = time.perf_counter() - begin
    images = decoded_pool(Path(pool), ids, channels=1, size=embed.image_size)
    trained = load_model(result.path)
    random = new_encoder(embed)  # the initial weights training started from
    rows = {
        "ssl_encoder": probe_scores(embed_images(trained, images), labels),
        "random_encoder": probe_scores(embed_images(random, images), labels),
        "raw_pixels": probe_scores(images.reshape(len(images), -1), labels),
    }
    for method, scores in rows.items():
        print(f"{name:>6} {method:<15} linear probe {scores['linear_probe']:.3f} ± {scores['linear_probe_std']:.3f}"
              f"   20-NN {scores['knn20']:.3f} ± {scores['knn20_std']:.3f}")
    return {"pool": pool, "n_labeled": len(ids), "image_size": embed.image_size, "epochs": result.epochs,
            "train_s": round(train_s, 1), "loss_curve": [round(v, 4) for v in result.loss_curve],
            "encoder": result.path, "embedding_dim": trained.embedding_dim, **rows}


def throughput(pool: str, embed: EmbedConfig, lake: Path, progress: Progress) -> dict[str, Any]:
    """Images/s of 1 and 2 Ray Train workers on ``pool`` (epochs after the first)."""
    out: dict[str, Any] = {}
    for workers in (1, 2):
        config = embed.model_copy(update={"num_workers": workers, "epochs": 3,
                                          "output": str(lake / f"throughput-{workers}")})
        result = train_or_reuse(PoolConfig(path=pool), config, OutputConfig(path=str(lake)), RayConfig(),
                                progress=progress)
        steady = result.images_per_s[1:] or result.images_per_s
        out[f"workers_{workers}"] = {"images_per_s": round(float(np.mean(steady)), 1),
                                     "per_epoch": [round(v, 1) for v in result.images_per_s],
                                     "wall_s": round(result.wall_s, 1)}
        print(f"throughput: {workers} worker(s): {out[f'workers_{workers}']['images_per_s']:.1f} images/s "
              f"(epochs {out[f'workers_{workers}']['per_epoch']}, wall {result.wall_s:.1f}s)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs: a smoke run, not figures")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 50, 2 with --quick)")
    parser.add_argument("--ray-num-cpus", type=int, default=3,
                        help="logical CPUs of the local Ray instance: 2 workers of 1 CPU and 1 for the reads")
    args = parser.parse_args()
    epochs = args.epochs or (2 if args.quick else 50)
    ensure_ray(RayConfig(num_cpus=args.ray_num_cpus))
    progress = Progress()
    base = {"epochs": epochs, "batch_size": 256, "channels": 1, "width": 16, "projection_dim": 64,
            "learning_rate": 2e-3, "temperature": 0.2, "num_workers": 2, "cpus_per_worker": 1.0,
            "augment": AUGMENT, "seed": 0}
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="alray-encoder-bench-") as folder:
        root = Path(folder)
        demo, demo_ids, demo_labels = demo_pool(root / "demo")
        digits, digit_ids, digit_labels = digits_pool(root / "digits")
        results: dict[str, Any] = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                        "ray_num_cpus": args.ray_num_cpus},
            "settings": base,
            "quality": {
                "demo": quality("demo", demo, demo_ids, demo_labels, EmbedConfig(**base, image_size=32),
                                root / "lake", progress),
                "digits": quality("digits", digits, digit_ids, digit_labels, EmbedConfig(**base, image_size=16),
                                  root / "lake", progress),
            },
            "throughput_demo_32px": throughput(demo, EmbedConfig(**base, image_size=32), root / "lake", progress),
        }
    results["elapsed_s"] = round(time.perf_counter() - begin, 1)
    write_results(RESULTS_DIR / f"encoder_quality{'-quick' if args.quick else ''}.json", results)


if __name__ == "__main__":
    main()
