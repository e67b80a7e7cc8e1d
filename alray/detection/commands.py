"""The detection commands of the ``alray`` CLI: ``import-predictions`` and the detection demo, kept here so
that :mod:`alray.cli` only wires them."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from alray import engine_log
from alray.config import Config, load_config
from alray.errors import ConfigError

DETECTION_DEMO_CONFIG = "conf/demo-detection.yaml"


def add_import_predictions(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``alray import-predictions CONFIG PREDICTIONS --format coco|yolo --out PATH``."""
    parser = commands.add_parser(
        "import-predictions", help="turn COCO results JSON or YOLO txt predictions into the pool's detections column")
    parser.add_argument("config", help="YAML config file (its pool is read)")
    parser.add_argument("predictions", help="a COCO results JSON file, or a folder of YOLO .txt files")
    parser.add_argument("--format", required=True, choices=("coco", "yolo"), help="the predictions' format")
    parser.add_argument("--out", required=True, help="the new pool: a .parquet file, or a folder for one")
    parser.add_argument("--coco-images", help="COCO: a dataset JSON whose images' file_name are the pool ids and whose "
                        "categories give the class ids (by name in detection.classes, else in id order)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary line")


def import_predictions_command(args: argparse.Namespace) -> int:
    """Run ``alray import-predictions``; exit code 0 (InputError goes to the CLI's one-line exit 2)."""
    from alray.detection.importers import import_predictions, read_coco, read_yolo

    config = load_config(args.config, args.overrides)
    predictions = (read_coco(args.predictions, images_file=args.coco_images, class_names=config.detection.classes)
                   if args.format == "coco" else read_yolo(args.predictions))
    result = import_predictions(predictions, pool_path=config.pool.path, pool_format=config.pool.format,
                                out=args.out, storage_options=config.pool.storage_options or None)
    out = engine_log.console()[0]
    if args.json:
        print(json.dumps(asdict(result), sort_keys=True), file=out)
    else:
        print(f"import-predictions: {result.n_objects} objects on {result.n_with_objects} of {result.n_images} images "
              f"-> {result.path} (score it with task: detection, pool.path: {result.path})", file=out)
    return 0


def add_detection_demo_arguments(demo: argparse.ArgumentParser) -> None:
    """The ``alray demo`` options of the detection demo."""
    demo.add_argument("--task", choices=("classification", "detection"), default="classification",
                      help=f"detection: the shapes pool and a detector trained on it, run with {DETECTION_DEMO_CONFIG}")
    demo.add_argument("--images", type=int, default=400, help="detection demo: shape images in the pool (400)")
    demo.add_argument("--labeled", type=int, default=150, help="detection demo: of them, labeled to train the "
                      "detector (150)")
    demo.add_argument("--epochs", type=int, default=40, help="detection demo: the detector's training epochs (40)")


def detection_demo(args: argparse.Namespace, config: Config) -> int:
    """``alray demo --task detection``: build the shapes pool, train the detector, run ``config`` on them."""
    from alray.detection.demo import build_detection_demo
    from alray.pipeline import run_pipeline
    from alray.progress import Progress
    from alray.report import print_summary, print_top_ranking

    if config.task != "detection" or config.model is None:
        raise ConfigError(f"{args.config}: alray demo --task detection needs a config with task: detection and a "
                          f"model.checkpoint to write the detector to (e.g. {DETECTION_DEMO_CONFIG})")
    progress = Progress(quiet=args.quiet)
    with progress.stage("demo-build"):
        files = build_detection_demo(pool_path=config.pool.path, labeled_path=config.labeled.path or
                                     f"{config.pool.path}-labeled", checkpoint_path=config.model.checkpoint,
                                     n_images=args.images, n_labeled=args.labeled, epochs=args.epochs,
                                     seed=config.run.seed)
    progress.say(f"demo: pool of {files.n_pool} images at {files.pool}; {files.n_labeled} labeled at {files.labeled}; "
                 f"detector at {files.checkpoint}, trained in {files.train_seconds:.1f}s (mAP@0.5 on the unlabeled "
                 f"images {files.seed_map50:.3f})")
    summary = run_pipeline(config, progress=progress)
    out = engine_log.console()[0]
    if args.json:
        print(summary.to_json(), file=out)
        return 0
    print_summary(summary)
    print_top_ranking(summary, config, n_rows=10)
    print(f"\nThe images to label next: {summary.tables['ranking']} (run_id={summary.run_id}); "
          f"alray report {summary.run_id} --config {args.config} draws their boxes", file=out)
    return 0
