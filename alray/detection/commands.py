"""The detection commands of the ``alray`` CLI: ``import-predictions`` and the detection demo, kept here so
that :mod:`alray.cli` only wires them."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from alray.config import load_config

DETECTION_DEMO_CONFIG = "conf/demo-detection.yaml"


def add_import_predictions(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``alray import-predictions CONFIG PREDICTIONS --format coco|yolo --out PATH``."""
    parser = commands.add_parser(
        "import-predictions", help="turn COCO results JSON or YOLO txt predictions into the pool's detections column")
    parser.add_argument("config", help="YAML config file (its pool is read)")
    parser.add_argument("predictions", help="a COCO results JSON file, or a folder of YOLO .txt files")
    parser.add_argument("--format", required=True, choices=("coco", "yolo"), help="the predictions' format")
    parser.add_argument("--out", required=True, help="the new pool: a .parquet file, or a folder for one")
    parser.add_argument("--coco-images", help="COCO: a dataset JSON whose images' file_name are the pool ids")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary line")


def import_predictions_command(args: argparse.Namespace) -> int:
    """Run ``alray import-predictions``; exit code 0 (InputError goes to the CLI's one-line exit 2)."""
    from alray.detection.importers import import_predictions, read_coco, read_yolo

    config = load_config(args.config, args.overrides)
    predictions = (read_coco(args.predictions, images_file=args.coco_images) if args.format == "coco"
                   else read_yolo(args.predictions))
    result = import_predictions(predictions, pool_path=config.pool.path, pool_format=config.pool.format,
                                out=args.out, storage_options=config.pool.storage_options or None)
    if args.json:
        print(json.dumps(asdict(result), sort_keys=True))
    else:
        print(f"import-predictions: {result.n_objects} objects on {result.n_with_objects} of {result.n_images} images "
              f"-> {result.path} (score it with task: detection, pool.path: {result.path})")
    return 0
