"""Benchmark of the scoring stage: samples/s of one deterministic pass, T-sample full-model MC
dropout and T-sample head-only MC dropout (model level, pure torch), and end to end through
Ray Data with 1 and 2 actors on a pool of PNG images.

Run ``python benchmarks/scoring_throughput.py [--quick] [--device cuda] [--no-ray]``; figures
are printed and written as JSON to ``benchmarks/results/scoring_throughput[-cuda][-quick].json``.
The model-level part needs only torch and numpy (``--no-ray`` skips the rest); the end-to-end
part needs the whole project (Ray, deltalake, pillow, pyarrow).

The target of issue 3: head-only MC at T=20 keeps at least 0.6x the throughput of one
deterministic pass, because it runs the backbone once and samples only the head.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _measure import write_results

try:
    from alray.models import SmallCNN, id_keys, mc_predict
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from alray.models import SmallCNN, id_keys, mc_predict
from alray.scoring import all_scores_torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 0.6

# The models: "small" is the demo's CNN; "wide" has 4x the channels and a 256-wide embedding, so
# a GPU has enough work per sample for its figure to mean something.
MODELS = {
    "small": {"channels": 16, "embedding_dim": 64},
    "wide": {"channels": 64, "embedding_dim": 256},
}


def build_model(name: str, *, image_size: int, device: torch.device, seed: int = 0) -> SmallCNN:
    """An untrained SmallCNN of the named size (weights do not change the speed)."""
    torch.manual_seed(seed)
    model = SmallCNN(in_channels=1, image_size=image_size, n_classes=10, dropout=0.5, **MODELS[name])
    return model.to(device).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _score_batch(model: SmallCNN, x: torch.Tensor, keys: np.ndarray, mode: str, n_samples: int, seed: int) -> None:
    """One batch as alray.inference.score_batch does it, without the decoding: the model, every
    score on the model's device, then embeddings and scores back to the host."""
    if mode == "deterministic":
        with torch.no_grad():
            embedding, _ = model.encode(x)
            probs = torch.softmax(model.head(embedding), dim=-1)[:, None, :]
    else:
        prediction = mc_predict(model, x, keys, n_samples=n_samples, seed=seed, head_only=mode == "head")
        embedding, probs = prediction.embedding, prediction.probs
    scores = all_scores_torch(probs)
    embedding.float().cpu().numpy()
    for value in scores.values():
        value.cpu().numpy()


def bench_model_level(*, model_name: str, image_size: int, device: torch.device, n_rows: int, batch_size: int,
                      n_samples: int, seconds_per_mode: float, seed: int = 0) -> dict[str, Any]:
    """Samples/s of the three ways to score, on a synthetic pool of decoded images.

    Each mode runs batches of the pool (on ``device``; masks are made on the host and moved)
    until the pool is done or ``seconds_per_mode`` has passed, after one warm-up batch.

    Returns
    -------
    dict with samples/s per mode and the head-only / deterministic ratio
    """
    model = build_model(model_name, image_size=image_size, device=device, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    pool = torch.rand(n_rows, 1, image_size, image_size, generator=generator).to(device)
    keys = id_keys([f"row-{i:07d}" for i in range(n_rows)])
    results: dict[str, Any] = {}
    for mode in ("deterministic", "full", "head"):
        _score_batch(model, pool[:batch_size], keys[:batch_size], mode, n_samples, seed)  # warm-up
        _sync(device)
        done, start = 0, time.perf_counter()
        while done < n_rows:
            stop = min(done + batch_size, n_rows)
            _score_batch(model, pool[done:stop], keys[done:stop], mode, n_samples, seed)
            done = stop
            if time.perf_counter() - start > seconds_per_mode:
                break
        _sync(device)
        elapsed = time.perf_counter() - start
        results[mode] = {"samples": done, "seconds": round(elapsed, 3), "samples_per_s": round(done / elapsed, 1)}
    deterministic = results["deterministic"]["samples_per_s"]
    ratio = results["head"]["samples_per_s"] / deterministic
    return {
        "model": model_name, "image_size": image_size, "device": str(device), "batch_size": batch_size,
        "mc_samples": n_samples, "n_parameters": sum(p.numel() for p in model.parameters()),
        "modes": results, "head_over_deterministic": round(ratio, 3),
        "full_over_deterministic": round(results["full"]["samples_per_s"] / deterministic, 3),
        "target_head_over_deterministic": TARGET_RATIO, "meets_target": bool(ratio >= TARGET_RATIO),
    }


def bench_onnx_level(*, model_name: str, image_size: int, n_rows: int, batch_size: int, n_samples: int,
                     seconds_per_mode: float, workdir: Path, seed: int = 0) -> dict[str, Any]:
    """Samples/s of the same CNN exported to ONNX and run by onnxruntime (CPU), beside torch.

    The export holds the backbone and the classifier with outputs ``embedding`` and ``logits``;
    alray reads the classifier back from the graph, so head-only MC dropout runs the graph once
    and samples the head in torch, as for the torch model.
    """
    from torch import nn

    from alray.models import load_model

    cnn = build_model(model_name, image_size=image_size, device=torch.device("cpu"), seed=seed)

    class Split(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.classifier = cnn.backbone, cnn.classifier

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            embedding = self.backbone(x)
            return embedding, self.classifier(embedding)

    path = workdir / "model.onnx"
    torch.onnx.export(Split(), (torch.zeros(2, 1, image_size, image_size),), str(path), input_names=["input"],
                      output_names=["embedding", "logits"], dynamic_axes={"input": {0: "b"}}, dynamo=False)
    onnx_model = load_model(path, dropout=0.5)
    generator = torch.Generator().manual_seed(seed)
    pool = torch.rand(n_rows, 1, image_size, image_size, generator=generator)
    keys = id_keys([f"row-{i:07d}" for i in range(n_rows)])
    results: dict[str, Any] = {}
    for engine, model in (("torch", cnn), ("onnxruntime", onnx_model)):
        for mode in ("deterministic", "head"):
            _score_batch(model, pool[:batch_size], keys[:batch_size], mode, n_samples, seed)  # warm-up
            done, start = 0, time.perf_counter()
            while done < n_rows and time.perf_counter() - start <= seconds_per_mode:
                stop = min(done + batch_size, n_rows)
                _score_batch(model, pool[done:stop], keys[done:stop], mode, n_samples, seed)
                done = stop
            elapsed = time.perf_counter() - start
            results[f"{engine}_{mode}"] = {"samples": done, "seconds": round(elapsed, 3),
                                           "samples_per_s": round(done / elapsed, 1)}
    return {"model": model_name, "image_size": image_size, "batch_size": batch_size, "mc_samples": n_samples,
            "runs": results}


def png_pool(n_images: int, *, image_size: int, seed: int = 0) -> Any:
    """A pool table of ``n_images`` demo-like PNGs: digits, shifted and noised so no two are equal."""
    import pyarrow as pa
    from PIL import Image

    from alray.demo import digit_images, png_bytes

    digits, _ = digit_images(image_size)
    rng = np.random.default_rng(seed)
    payloads = []
    for i in range(n_images):
        base = np.roll(digits[i % len(digits)], shift=tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
        noisy = np.clip(base.astype(np.float64) + rng.normal(0, 8, size=base.shape), 0, 255).astype(np.uint8)
        payloads.append(png_bytes(Image.fromarray(noisy)))
    return pa.table({
        "id": pa.array([f"img-{i:06d}" for i in range(n_images)], pa.string()),
        "image": pa.array(payloads, pa.binary()),
        "camera_id": pa.array([f"cam-{i % 4}" for i in range(n_images)], pa.string()),
    })


def bench_ray(*, model_name: str, image_size: int, device: str, n_images: int, batch_size: int, n_samples: int,
              actor_counts: tuple[int, ...], workdir: Path, seed: int = 0) -> dict[str, Any]:
    """Samples/s of the score stage end to end (read, decode, quality, score, write, commit) per actor count.

    Ray starts once before the runs; each run's time is the score stage of the pipeline,
    actors' start-up included.
    """
    import pyarrow.parquet as pq

    from alray.config import config_from_dict
    from alray.engines import ensure_ray
    from alray.models import save_checkpoint
    from alray.pipeline import run_pipeline
    from alray.progress import Progress

    (workdir / "pool").mkdir(parents=True, exist_ok=True)
    pool = png_pool(n_images, image_size=image_size, seed=seed)
    # several files, so every actor gets blocks to work on
    n_files = 8
    for part in range(n_files):
        start, stop = part * n_images // n_files, (part + 1) * n_images // n_files
        pq.write_table(pool.slice(start, stop - start), str(workdir / "pool" / f"part-{part}.parquet"))
    model = build_model(model_name, image_size=image_size, device=torch.device("cpu"), seed=seed)
    save_checkpoint(model, workdir / "model.pt")
    n_cpus = max(2, os.cpu_count() or 2)
    gpus = 1 if device == "cuda" else 0

    def config(n_actors: int, run_id: str, pool: str) -> Any:
        return config_from_dict({
            # incremental off: a run must score the pool, not carry over the previous run's rows
            "run": {"seed": seed, "run_id": run_id, "incremental": False},
            "pool": {"path": pool},
            "model": {"checkpoint": str(workdir / "model.pt"), "device": device},
            # at most one CPU per actor, and one left for the read tasks (alray refuses less)
            "score": {"mc_samples": n_samples, "batch_size": batch_size, "num_actors": n_actors,
                      "cpus_per_actor": min(1.0, (n_cpus - 1) / n_actors), "gpus_per_actor": gpus / n_actors,
                      "mc_mode": "head"},
            "selection": {"n_samples": 1},
            "output": {"path": str(workdir / "lake")},
            "ray": {"num_cpus": n_cpus},
        })

    import logging

    import ray
    import ray.data

    # Ray starts here, quiet, before any timing; alray's own ensure_ray then finds it running.
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=n_cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ensure_ray(config(1, "warm", str(workdir / "pool")).ray)
    results: dict[str, Any] = {}
    for n_actors in actor_counts:
        progress = Progress(quiet=True)
        start = time.perf_counter()
        summary = run_pipeline(config(n_actors, f"actors-{n_actors}", str(workdir / "pool")), progress=progress,
                               stages=("score",))
        elapsed = time.perf_counter() - start
        stage = float(progress.timings.get("score", elapsed))
        results[f"{n_actors}_actors"] = {
            "samples": summary.counts["pool"], "score_stage_seconds": round(stage, 2),
            "samples_per_s": round(summary.counts["pool"] / stage, 1),
        }
    return {"model": model_name, "image_size": image_size, "device": device, "n_images": n_images,
            "batch_size": batch_size, "mc_samples": n_samples, "ray_num_cpus": n_cpus, "runs": results}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks, print the figures and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller pools and shorter runs (about a minute)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    parser.add_argument("--no-ray", action="store_true", help="model level only (needs just torch and numpy)")
    parser.add_argument("--model", choices=sorted(MODELS), default="small", help="small (demo CNN) or wide")
    parser.add_argument("--image-size", type=int, default=32, help="input side in pixels (a multiple of 4)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--mc-samples", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default under benchmarks/results/)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model_rows = 2048 if args.quick else 8192
    seconds_per_mode = 4.0 if args.quick else 12.0
    report: dict[str, Any] = {
        "benchmark": "scoring_throughput", "quick": args.quick,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None},
        "command": "python benchmarks/scoring_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    model_level = bench_model_level(model_name=args.model, image_size=args.image_size, device=device,
                                    n_rows=model_rows, batch_size=args.batch_size, n_samples=args.mc_samples,
                                    seconds_per_mode=seconds_per_mode)
    report["model_level"] = model_level
    modes = model_level["modes"]
    print(f"model level ({args.model} CNN, {args.image_size}px, {device}, batch {args.batch_size}, "
          f"T={args.mc_samples}, pure torch):")
    print(f"  one deterministic pass : {modes['deterministic']['samples_per_s']:>10.1f} samples/s")
    print(f"  full-model MC, T={args.mc_samples:<3}  : {modes['full']['samples_per_s']:>10.1f} samples/s "
          f"({model_level['full_over_deterministic']:.3f}x)")
    print(f"  head-only MC, T={args.mc_samples:<3}   : {modes['head']['samples_per_s']:>10.1f} samples/s "
          f"({model_level['head_over_deterministic']:.3f}x; target >= {TARGET_RATIO}x: "
          f"{'met' if model_level['meets_target'] else 'NOT met'})")
    if args.device == "cpu" and importlib.util.find_spec("onnxruntime") is not None:
        with tempfile.TemporaryDirectory(prefix="alray-bench-onnx-") as workdir:
            onnx_part = bench_onnx_level(model_name=args.model, image_size=args.image_size, n_rows=model_rows,
                                         batch_size=args.batch_size, n_samples=args.mc_samples,
                                         seconds_per_mode=seconds_per_mode, workdir=Path(workdir))
        report["onnx"] = onnx_part
        print(f"torch against onnxruntime (same {args.model} CNN, CPU, batch {args.batch_size}):")
        for name, run in onnx_part["runs"].items():
            print(f"  {name.replace('_', ' '):<26}: {run['samples_per_s']:>10.1f} samples/s")
    if not args.no_ray:
        with tempfile.TemporaryDirectory(prefix="alray-bench-") as workdir:
            ray_part = bench_ray(model_name=args.model, image_size=args.image_size, device=args.device,
                                 n_images=1000 if args.quick else 4000, batch_size=args.batch_size,
                                 n_samples=args.mc_samples, actor_counts=(1, 2), workdir=Path(workdir))
        report["ray"] = ray_part
        print(f"end to end through Ray Data ({ray_part['n_images']} PNG images, head-only MC T={args.mc_samples}, "
              f"decode + quality + score + write):")
        for name, run in ray_part["runs"].items():
            print(f"  {name.replace('_', ' '):<9}: {run['samples_per_s']:>10.1f} samples/s "
                  f"({run['score_stage_seconds']} s score stage)")
    suffix = ("-cuda" if args.device == "cuda" else "") + ("-quick" if args.quick else "")
    write_results(args.output or RESULTS_DIR / f"scoring_throughput{suffix}.json", report)
    return report


if __name__ == "__main__":
    main()
