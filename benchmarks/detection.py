"""Object detection: strategies compared by the mAP@0.5 of the retrained detector, and the detector path's
scoring throughput.

``python benchmarks/detection.py simulate [--quick]``: on the synthetic shapes pool (96 px images,
circles dominating squares and triangles, 0 to 4 objects each; 600 unlabeled and 300 test images
per seed), each strategy starts from the same 40 random labeled images; every round the tiny
CenterNet detector is trained from scratch on the labeled images (40 epochs, one thread),
exported to TorchScript and scored on the test images (mAP@0.5), then it scores the unlabeled
images through the scoring path of ``alray run`` (:func:`alray.detection.scorer.score_detection_batch`)
and the selection core (:func:`alray.selection.local.select_table`) picks the next 40. Random picks
uniformly. JSON: ``benchmarks/results/detection-simulate.json``.

``python benchmarks/detection.py throughput``: images per second of one scoring actor's batch
function with the detector (no extra pass, a mirrored pass, T=10 MC-dropout passes, with the
objects' crops), then of the Ray score stage (``alray score``) on a 2,000-image pool.
JSON: ``benchmarks/results/detection-throughput.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from _measure import write_results

try:
    import alray  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from alray.config import SelectionConfig, config_from_dict
from alray.detection.centernet import TinyCenterNet
from alray.detection.columns import DetectionOptions
from alray.detection.demo import MODEL_SIDE, POOL_SIDE, decoded_inputs, to_model_side
from alray.detection.metrics import mean_average_precision
from alray.detection.scorer import score_detection_batch
from alray.detection.synthetic import CLASS_NAMES, build_pool
from alray.detection.training import predict, train_detector
from alray.inference import ScoringOptions
from alray.models.detector import load_detector, save_detector
from alray.selection.local import select_table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
STRATEGIES: dict[str, list[dict[str, Any]] | None] = {
    "random": None,
    "objectness": [{"input": "objectness_least_confidence", "strategy": "weights"}],
    "class_uncertainty": [{"input": "object_entropy_max", "strategy": "weights"}],
    "uncertainty_diversity": [{"input": "embeddings", "strategy": "diversity"},
                              {"input": "object_entropy_max", "strategy": "weights"}],
    "uncertainty_diversity_balanced": [{"input": "embeddings", "strategy": "diversity"},
                                       {"input": "object_entropy_max", "strategy": "weights"},
                                       {"input": "object_classes", "strategy": "object_balance", "target": "uniform"}],
}
OPTIONS = DetectionOptions(known_labels=frozenset(range(len(CLASS_NAMES))), n_classes=len(CLASS_NAMES),
                           score_threshold=0.2)


def _environment() -> dict[str, Any]:
    return {"torch": torch.__version__, "cpu_count": os.cpu_count(),
            # Timings on a shared machine mean little without the load they ran under.
            "load_average_1min_at_start": os.getloadavg()[0]}


def _train(inputs: np.ndarray, truths: list, *, seed: int, epochs: int, folder: Path) -> Any:
    torch.manual_seed(seed)
    model = TinyCenterNet(len(CLASS_NAMES), width=8)
    result = train_detector(model, inputs, truths, epochs=epochs, seed=seed)
    path = folder / "detector.pt"
    save_detector(model, path, n_classes=len(CLASS_NAMES), in_channels=3, image_size=MODEL_SIDE,
                  outputs=("probs", "features", "embedding"), class_names=CLASS_NAMES)
    return model, load_detector(path), result.seconds


def _features(detector: Any, table: pa.Table, *, seed: int) -> pa.Table:
    options = ScoringOptions(payload="image", mc_samples=1, seed=seed, run_id="simulate")
    parts = [score_detection_batch(table.slice(i, 64), options, OPTIONS, detector=detector)
             for i in range(0, table.num_rows, 64)]
    return pa.concat_tables(parts).drop_columns(["run_id", "_reject_reason"])


def simulate(*, seeds: list[int], n_pool: int, n_test: int, n_initial: int, batch: int, rounds: int,
             epochs: int, folder: Path) -> dict[str, Any]:
    """mAP@0.5 per strategy, seed and round (the labeled count), and the seconds each step took."""
    curves: dict[str, dict[str, list[float]]] = {name: {} for name in STRATEGIES}
    for seed in seeds:
        pool = build_pool(n_pool, size=POOL_SIDE, max_objects=4, n_blank=0, n_corrupt=0, seed=100 + seed)
        test = build_pool(n_test, size=POOL_SIDE, max_objects=4, n_blank=0, n_corrupt=0, seed=1000 + seed)
        pool_inputs = decoded_inputs(pool.table.column("image").to_pylist())
        test_inputs = decoded_inputs(test.table.column("image").to_pylist())
        truths = to_model_side(pool.truths, POOL_SIDE, MODEL_SIDE)
        test_truths = to_model_side(test.truths, POOL_SIDE, MODEL_SIDE)
        start = np.random.default_rng(seed).choice(n_pool, n_initial, replace=False)
        for name, strategies in STRATEGIES.items():
            labeled = [int(i) for i in start]
            rng = np.random.default_rng(seed + 1)
            curve: list[float] = []
            for step in range(rounds + 1):
                t0 = time.perf_counter()
                model, detector, train_s = _train(pool_inputs[labeled], [truths[i] for i in labeled], seed=seed,
                                                  epochs=epochs, folder=folder)
                quality = mean_average_precision(predict(model, test_inputs), test_truths, n_classes=len(CLASS_NAMES))
                curve.append(quality)
                line = f"  seed {seed} {name:<31} {len(labeled):>4} labels: mAP@0.5 {quality:.3f} (train {train_s:.1f}s"
                if step == rounds:
                    print(line + ")", flush=True)
                    break
                unlabeled = [i for i in range(n_pool) if i not in set(labeled)]
                if strategies is None:
                    picks = [int(i) for i in rng.choice(unlabeled, batch, replace=False)]
                else:
                    features = _features(detector, pool.table, seed=seed)
                    excluded = {pool.ids[i]: "labeled" for i in labeled}
                    ranking, _ = select_table(features, SelectionConfig(n_samples=batch, strategies=strategies,
                                                                        n_partitions=2), seed=seed, excluded=excluded)
                    chosen = ranking.filter(ranking.column("selected")).column("id").to_pylist()
                    position = {identifier: i for i, identifier in enumerate(pool.ids)}
                    picks = [position[i] for i in chosen]
                labeled += picks
                print(line + f", round {time.perf_counter() - t0:.1f}s)", flush=True)
            curves[name][str(seed)] = curve
    labels = [n_initial + batch * r for r in range(rounds + 1)]
    summary = {name: {"mean": [float(np.mean([c[str(s)][r] for s in seeds])) for r in range(rounds + 1)],
                      "std": [float(np.std([c[str(s)][r] for s in seeds])) for r in range(rounds + 1)]}
               for name, c in curves.items()}
    for row in summary.values():
        row["area_under_curve"] = float(np.mean(row["mean"]))
    return {"labels": labels, "seeds": seeds, "pool": n_pool, "test": n_test, "epochs": epochs,
            "curves": curves, "summary": summary}


def _rate(fn: Any, n: int, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def throughput(*, n_images: int, n_stage: int, folder: Path) -> dict[str, Any]:
    """Images per second of the batch function (four modes) and of the Ray score stage."""
    from alray.detection.demo import build_detection_demo

    files = build_detection_demo(pool_path=str(folder / "pool"), labeled_path=str(folder / "labeled"),
                                 checkpoint_path=str(folder / "detector.pt"), n_images=max(n_images, n_stage),
                                 n_labeled=150, epochs=20, seed=0)
    detector = load_detector(files.checkpoint)
    table = pq.read_table(files.pool).slice(0, n_images)
    torch.set_num_threads(1)  # as a scoring actor with cpus_per_actor 1
    figures: dict[str, Any] = {"images": n_images, "batch": 64, "threads": 1}
    for mode, detection, samples in (("deterministic", OPTIONS, 1),
                                     ("hflip", dataclasses.replace(OPTIONS, samples="hflip"), 1),
                                     ("mc_dropout_T10", dataclasses.replace(OPTIONS, samples="mc_dropout"), 10),
                                     ("objects", dataclasses.replace(OPTIONS, objects=True), 1)):
        options = ScoringOptions(payload="image", mc_samples=samples, seed=0, run_id="bench")

        def run(options: ScoringOptions = options, detection: DetectionOptions = detection) -> None:
            for i in range(0, table.num_rows, 64):
                score_detection_batch(table.slice(i, 64), options, detection, detector=detector)

        figures[mode] = round(_rate(run, table.num_rows), 1)
        print(f"  batch function, {mode}: {figures[mode]} images/s", flush=True)
    from alray.pipeline import run_pipeline
    from alray.progress import Progress

    config = config_from_dict({
        "task": "detection", "detection": {"classes": list(CLASS_NAMES), "score_threshold": 0.2},
        "pool": {"path": files.pool}, "model": {"checkpoint": files.checkpoint},
        "score": {"batch_size": 64, "max_bad_fraction": 0.1}, "selection": {"n_samples": 10},
        "output": {"path": str(folder / "lake")}, "ray": {"num_cpus": 2}})
    summary = run_pipeline(config, progress=Progress(quiet=True), stages=("score",))
    figures["stage"] = {"images": summary.counts["pool"], "seconds": summary.timings["score_s"],
                        "images_per_s": round(summary.counts["pool"] / summary.timings["score_s"], 1)}
    print(f"  Ray score stage, {summary.counts['pool']} images, 1 actor: {summary.timings['score_s']:.1f}s, "
          f"{figures['stage']['images_per_s']} images/s", flush=True)
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run one benchmark, print its figures and write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("simulate", "throughput"))
    parser.add_argument("--quick", action="store_true", help="simulate: 1 seed, 2 rounds, 300 images")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"environment": _environment()}
    with tempfile.TemporaryDirectory(prefix="alray-detection-bench-") as folder:
        if args.what == "simulate":
            quick = dict(seeds=[0], n_pool=300, n_test=150, rounds=2) if args.quick else dict(
                seeds=list(range(args.seeds)), n_pool=600, n_test=300, rounds=4)
            results["simulate"] = simulate(n_initial=40, batch=40, epochs=40, folder=Path(folder), **quick)
            for name, row in results["simulate"]["summary"].items():
                print(f"{name:<31} " + " ".join(f"{m:.3f}" for m in row["mean"])
                      + f"  (mean over rounds {row['area_under_curve']:.3f})")
            name = "detection-simulate-quick.json" if args.quick else "detection-simulate.json"
        else:
            results["throughput"] = throughput(n_images=512, n_stage=2000, folder=Path(folder))
            name = "detection-throughput.json"
    results["environment"]["load_average_1min_at_end"] = os.getloadavg()[0]
    write_results(args.output or RESULTS_DIR / name, results)
    return results


if __name__ == "__main__":
    main()
