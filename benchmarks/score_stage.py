"""The scoring stage's throughput on Ray against the same model scoring in one process on one thread.

Builds (once, cached under ``--workdir``) a pool of ``--images`` demo-like PNGs (32 px digits,
shifted and noised) in 8 parquet files and the demo's small CNN, then measures:

- ``in_process``: :func:`alray.inference.score_batch` (decode, quality metrics, MC dropout, scores)
  over the pool in batches of ``--batch-size``, in this process on one thread (torch and BLAS),
  with the decode and the model's share timed apart;
- ``stage``: ``alray score``'s code path (:func:`alray.pipeline.run_pipeline`, score stage: read,
  decode tasks, model actors, write, commit) on a local Ray instance of ``--cpus`` CPUs. Start-up
  (worker processes, actors loading the model, the first blocks) is taken out by running the stage
  twice on the warm instance, on ``--small`` rows and on the whole pool: the throughput is the
  difference of rows over the difference of seconds, and the small run's time is reported as
  the start-up.

The target of issue 17: the stage at least 0.7 x (CPUs used) x the in-process single-thread rate.

    python benchmarks/score_stage.py                      # 20,480 images, 2 CPUs
    python benchmarks/score_stage.py --images 4096 --small 1024
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _measure import write_results
from scoring_throughput import build_model, png_pool

ROOT = Path(__file__).resolve().parents[1]

IMAGE_SIZE = 32
N_FILES = 8
SEED = 0


def build_inputs(root: Path, n_images: int) -> tuple[Path, Path]:
    """The pool's parquet files and the model checkpoint, written once per size."""
    from alray.models import save_checkpoint

    pool_dir = root / f"pool-{n_images}"
    model_path = root / "model.pt"
    if not (pool_dir / "_ready").exists():
        pool_dir.mkdir(parents=True, exist_ok=True)
        table = png_pool(n_images, image_size=IMAGE_SIZE, seed=SEED)
        for part in range(N_FILES):
            start, stop = part * n_images // N_FILES, (part + 1) * n_images // N_FILES
            pq.write_table(table.slice(start, stop - start), str(pool_dir / f"part-{part}.parquet"))
        (pool_dir / "_ready").write_text("ok\n")
    if not model_path.exists():
        import torch

        save_checkpoint(build_model("small", image_size=IMAGE_SIZE, device=torch.device("cpu"), seed=SEED), model_path)
    return pool_dir, model_path


def in_process(pool_dir: Path, model_path: Path, *, batch_size: int, mc_samples: int) -> dict[str, Any]:
    """Rows/s of score_batch on one thread, and the decode's and the model's seconds."""
    import torch
    from threadpoolctl import threadpool_limits

    from alray.inference import InputSpec, ScoringOptions, decode_batch, score_decoded
    from alray.models import load_checkpoint

    torch.set_num_threads(1)
    model = load_checkpoint(str(model_path)).eval()
    spec = InputSpec.of(model)
    options = ScoringOptions(payload="image", mc_samples=mc_samples, seed=SEED, run_id="bench")
    table = pq.read_table(pool_dir)
    decode_s = model_s = 0.0
    with threadpool_limits(1), torch.inference_mode():
        score_decoded(model, decode_batch(table.slice(0, batch_size), spec, options), options)  # warm
        for start in range(0, table.num_rows, batch_size):
            t0 = time.perf_counter()
            decoded = decode_batch(table.slice(start, batch_size), spec, options)
            t1 = time.perf_counter()
            score_decoded(model, decoded, options)
            decode_s += t1 - t0
            model_s += time.perf_counter() - t1
    total = decode_s + model_s
    return {"rows": table.num_rows, "seconds": round(total, 2), "rows_per_s": round(table.num_rows / total, 1),
            "decode_s": round(decode_s, 2), "model_s": round(model_s, 2)}


def stage(pool_dir: Path, small_dir: Path, model_path: Path, workdir: Path, *, cpus: int, batch_size: int,
          mc_samples: int, actors: int, cpus_per_actor: float, decode_cpus: float | None) -> dict[str, Any]:
    """The score stage twice on a warm local Ray instance (small pool, then the whole pool)."""
    import ray
    import ray.data

    from alray.config import config_from_dict
    from alray.pipeline import run_pipeline
    from alray.progress import Progress

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    score: dict[str, Any] = {"mc_samples": mc_samples, "batch_size": batch_size, "num_actors": actors,
                             "cpus_per_actor": cpus_per_actor, "mc_mode": "head"}
    if decode_cpus is not None:
        score["cpus_per_decode_task"] = decode_cpus

    def run(pool: Path, run_id: str) -> tuple[int, float]:
        config = config_from_dict({
            # incremental off: the warm run must not leave rows for the measured runs to carry over
            "run": {"seed": SEED, "run_id": run_id, "incremental": False}, "pool": {"path": str(pool)},
            "model": {"checkpoint": str(model_path)}, "score": score, "selection": {"n_samples": 1},
            "output": {"path": str(workdir / "lake")}, "ray": {"num_cpus": cpus},
        })
        progress = Progress(quiet=True)
        start = time.perf_counter()
        summary = run_pipeline(config, progress=progress, stages=("score",))
        return int(summary.counts["pool"]), float(progress.timings.get("score_s", time.perf_counter() - start))

    shutil.rmtree(workdir / "lake", ignore_errors=True)  # a finished run of the same id would be reused
    run(small_dir, "warm")  # worker processes start here
    n_small, t_small = run(small_dir, "small")
    n_big, t_big = run(pool_dir, "big")
    rate = (n_big - n_small) / (t_big - t_small)
    return {"cpus": cpus, "actors": actors, "cpus_per_actor": cpus_per_actor, "cpus_per_decode_task": decode_cpus,
            "small_rows": n_small, "small_s": round(t_small, 2), "rows": n_big, "seconds": round(t_big, 2),
            "rows_per_s_with_startup": round(n_big / t_big, 1), "rows_per_s": round(rate, 1),
            "startup_s": round(t_small - n_small / rate, 2)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_480)
    parser.add_argument("--small", type=int, default=2_048, help="rows of the run that measures start-up")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--mc-samples", type=int, default=20)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--cpus-per-actor", type=float, default=1.0)
    parser.add_argument("--decode-cpus", type=float, default=None, help="score.cpus_per_decode_task")
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / "results" / "tmp" / "score_stage"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "score_stage.json"))
    args = parser.parse_args(argv)
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    pool_dir, model_path = build_inputs(root, args.images)
    small_dir, _ = build_inputs(root, args.small)
    single = in_process(pool_dir, model_path, batch_size=args.batch_size, mc_samples=args.mc_samples)
    print("in process, one thread:", json.dumps(single), flush=True)
    figures = stage(pool_dir, small_dir, model_path, root, cpus=args.cpus, batch_size=args.batch_size,
                    mc_samples=args.mc_samples, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                    decode_cpus=args.decode_cpus)
    print("stage:", json.dumps(figures), flush=True)
    ratio = figures["rows_per_s"] / single["rows_per_s"]
    target = 0.7 * args.cpus
    print(f"stage / one thread in process: {ratio:.2f} (target >= {target:.2f} = 0.7 x {args.cpus} CPUs)")
    command = "python benchmarks/score_stage.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = {"benchmark": "score_stage", "command": command, "machine": {"cpus": os.cpu_count()},
               "in_process": single, "stage": figures, "ratio": round(ratio, 3), "target": target,
               "pool": {"images": args.images, "image_size": IMAGE_SIZE, "files": N_FILES}}
    write_results(Path(args.output), results)
    return results


if __name__ == "__main__":
    main()
