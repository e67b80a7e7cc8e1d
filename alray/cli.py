"""The ``alray`` command: run, score, select, embed, train, validate, runs, demo, simulate, report,
rounds, export, import-labels.

Exit codes: 0 ok, 2 bad config or input (one line, no traceback), 1 internal failure."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from alray import engine_log
from alray.config import Config, load_config
from alray.detection.commands import (
    DETECTION_DEMO_CONFIG,
    add_detection_demo_arguments,
    add_import_predictions,
    detection_demo,
    import_predictions_command,
)
from alray.errors import AlrayError

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2


def _add_config_arguments(parser: argparse.ArgumentParser, *, config_default: str | None = None) -> None:
    if config_default is None:
        parser.add_argument("config", help="YAML config file")
    else:
        parser.add_argument("--config", default=config_default, help=f"YAML config file (default {config_default})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set selection.n_samples=50 (repeatable)")


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true",
                        help="no progress display: only warnings, errors and the final summary")
    parser.add_argument("--verbose", action="store_true",
                        help="also show Ray's and Spark's own output (always in the run's log file)")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-id", help="run id; rerunning an id replaces that run")
    parser.add_argument("--json", action="store_true", help="print one JSON summary line at the end")
    parser.add_argument("--ray-address", help="attach to this Ray cluster (same as --set ray.address=...)")
    parser.add_argument("--spark-master", help="Spark master URL (same as --set spark.master=...)")
    _add_output_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``alray`` command."""
    parser = argparse.ArgumentParser(prog="alray", description="Distributed active-learning data selection.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "score on Ray, then select on Spark"),
                       ("score", "only the scoring stage (Ray)"),
                       ("select", "only the selection stage (Spark), on an earlier score of the same run id")):
        sub = commands.add_parser(name, help=text)
        _add_config_arguments(sub)
        _add_run_arguments(sub)
    embed = commands.add_parser("embed", help="train a self-supervised image encoder on the pool (Ray Train), "
                                "or reuse the one trained with the same pool and settings")
    _add_config_arguments(embed)
    embed.add_argument("--json", action="store_true", help="print one JSON summary line at the end")
    embed.add_argument("--ray-address", help="attach to this Ray cluster (same as --set ray.address=...)")
    _add_output_arguments(embed)
    validate = commands.add_parser("validate", help="check a config file and print it resolved")
    _add_config_arguments(validate)
    validate.add_argument("--json", action="store_true",
                          help="print one JSON line: {valid, config_hash, config}")
    demo = commands.add_parser("demo", help="build the sample pool and model, then run the job on them")
    _add_config_arguments(demo, config_default="conf/demo.yaml")
    _add_run_arguments(demo)
    add_detection_demo_arguments(demo)
    runs = commands.add_parser("runs", help="read the runs table")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True)
    for name, text in (("list", "one row per run, newest first"), ("show", "every field of one run")):
        sub = runs_commands.add_parser(name, help=text)
        if name == "show":
            sub.add_argument("run_id")
        _add_config_arguments(sub)
        sub.add_argument("--json", action="store_true",
                         help="JSON lines, one object per run" if name == "list" else "one JSON line")
    simulate = commands.add_parser("simulate", help="compare strategies in an active-learning loop on labeled data")
    _add_config_arguments(simulate)
    simulate.add_argument("--out", help="output folder (default: simulate.output of the config)")
    simulate.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    _add_output_arguments(simulate)
    train = commands.add_parser("train", help="fit a classification head on the encoder from the labeled set")
    _add_config_arguments(train)
    train.add_argument("--json", action="store_true", help="print one JSON summary line")
    report = commands.add_parser("report", help="write a self-contained HTML report of a run (with the config "
                                 "the run recorded)")
    report.add_argument("run_id")
    _add_config_arguments(report, config_default="conf/demo.yaml")
    report.add_argument("--lake", help="the lake (output.path) that holds the run, instead of --config's; "
                        "--config still gives credentials")
    report.add_argument("--out", default="reports", help="output folder (default reports/); writes RUN_ID.html")
    report.add_argument("--json", action="store_true", help="print one JSON line: {run_id, path}")
    _add_round_commands(commands)
    add_import_predictions(commands)
    return parser


def _add_round_commands(commands: argparse._SubParsersAction) -> None:
    rounds = commands.add_parser("rounds", help="the rounds of a lake: selected, sent, labeled, expired, labels")
    _add_config_arguments(rounds)
    rounds.add_argument("--json", action="store_true", help="print the history as one JSON line")
    export = commands.add_parser("export", help="send a run's selection to a labeling tool (Label Studio, COCO, "
                                 "CVAT); its ids become sent")
    export.add_argument("run_id")
    _add_config_arguments(export, config_default="conf/demo.yaml")
    export.add_argument("--to", required=True, choices=["label-studio", "coco", "cvat"], help="the format")
    export.add_argument("--out", help="output folder (default exports/RUN_ID/FORMAT)")
    export.add_argument("--images", default="auto", choices=["auto", "uri", "data", "files"],
                        help="how Label Studio tasks reference images: the pool's URIs, inline data URIs, or "
                        "files under OUT/images (default: uri when every URI is http(s), s3, gs or azure-blob, "
                        "else data)")
    export.add_argument("--url", help="Label Studio server: create or update the project there (default, with "
                        "--to label-studio: LABEL_STUDIO_URL; token: LABEL_STUDIO_API_KEY)")
    export.add_argument("--project", help="Label Studio project title (default 'alray RUN_ID') or id")
    export.add_argument("--task", choices=["classification", "detection"],
                        help="labeling task kind: classification (choices) or detection (rectangles); default: "
                        "the run's task")
    export.add_argument("--json", action="store_true", help="print one JSON summary line")
    labels = commands.add_parser("import-labels", help="read Label Studio's JSON export (a file or the API) "
                                 "into the labels table")
    _add_config_arguments(labels)
    labels.add_argument("file", nargs="?", help="a Label Studio JSON export file")
    labels.add_argument("--url", help="Label Studio server to export from (default, without FILE: LABEL_STUDIO_URL; "
                        "token: LABEL_STUDIO_API_KEY)")
    labels.add_argument("--project", help="with --url: the project's title or id")
    labels.add_argument("--task", choices=["classification", "detection"],
                        help="labeling task kind: classification (choices) or detection (rectangles); default: "
                        "the config's task")
    labels.add_argument("--json", action="store_true", help="print one JSON summary line")


# Flags that stand for a config key: an error in that key names the flag.
_KEY_FLAGS = (("run_id", "run.run_id", "--run-id"), ("ray_address", "ray.address", "--ray-address"),
              ("spark_master", "spark.master", "--spark-master"))


def _config(args: argparse.Namespace) -> Config:
    overrides: list[str | tuple[str, str]] = list(args.overrides)
    for attribute, key, flag in _KEY_FLAGS:
        value = getattr(args, attribute, None)
        if value:
            overrides.append((f"{key}={json.dumps(value)}", f"{flag} {value}"))  # a string, never YAML's 2026
    return load_config(args.config, overrides)


def _out() -> TextIO:
    """Where results go: the console's stdout, also while the engines' output is captured."""
    return engine_log.console()[0]


def _err() -> TextIO:
    return engine_log.console()[1]


def _progress(args: argparse.Namespace) -> Any:
    from alray.progress import Progress

    return Progress(quiet=args.quiet)


def _run(args: argparse.Namespace, stages: tuple[str, ...]) -> int:
    from alray.pipeline import run_pipeline
    from alray.report import print_summary

    config = _config(args)
    summary = run_pipeline(config, progress=_progress(args), stages=stages)
    if args.json:
        print(summary.to_json(), file=_out())
    else:
        print_summary(summary)
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from alray.demo import build_demo
    from alray.pipeline import run_pipeline
    from alray.report import print_summary, print_top_ranking

    if args.task == "detection":
        if args.config == "conf/demo.yaml":
            args.config = DETECTION_DEMO_CONFIG
        return detection_demo(args, _config(args))
    config = _config(args)
    progress = _progress(args)
    with progress.stage("demo-build"):
        files = build_demo(pool_path=config.pool.path, labeled_path=config.labeled.path or "demo/labeled",
                           checkpoint_path=config.model.checkpoint if config.model else "demo/model.pt",
                           seed=config.run.seed)
    progress.say(f"demo: pool of {files.n_pool} images at {files.pool}; {files.n_labeled} labeled at "
                 f"{files.labeled}; seed model at {files.checkpoint} (accuracy on the pool {files.seed_accuracy:.1%})")
    summary = run_pipeline(config, progress=progress)
    if args.json:
        print(summary.to_json(), file=_out())
        return EXIT_OK
    print_summary(summary)
    print_top_ranking(summary, config, n_rows=10)
    print(f"\nThe ranking of what to label next: {summary.tables['ranking']} (Delta table, run_id={summary.run_id})"
          f"\nRerun it: alray run {args.config}; see it: alray report {summary.run_id}", file=_out())
    return EXIT_OK


def _embed(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from alray.errors import ConfigError
    from alray.stages.embed import train_or_reuse

    config = _config(args)
    if config.embed is None:
        raise ConfigError(f"embed: {args.config} has no embed section (e.g. embed: {{epochs: 20, image_size: 32}})")
    progress = _progress(args)
    _log_command_to(config.output.path, "embed", progress, config.output.storage_options)
    result = train_or_reuse(config.pool, config.embed, config.output, config.ray, progress=progress)
    if args.json:
        print(json.dumps(asdict(result), sort_keys=True), file=_out())
        return EXIT_OK
    final = f"{result.loss_curve[-1]:.4f}" if result.loss_curve else "n/a"
    how = "reused (no training)" if result.reused else "trained"
    print(f"encoder {how}: {result.path}\n  key {result.key}, {result.epochs} epochs, final loss {final}, "
          f"wall {result.wall_s:.1f}s" + (f", resumed at epoch(s) {result.resumed_at}" if result.resumed_at else ""),
          file=_out())
    return EXIT_OK


def _log_command_to(root: str, command: str, progress: Any, storage_options: Any = None) -> None:
    """Name the engine log of a command that is no run (``ROOT/logs/COMMAND-TIME.log``) and say where it is."""
    from alray.pipeline import run_log_path

    name = f"{command}-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
    path = engine_log.log_run_to(run_log_path(root, name), dict(storage_options or {}) or None)
    if path:
        progress.say(f"{command}: engine logs in {path}")


def _validate(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.json:
        print(json.dumps({"valid": True, "config_hash": config.config_hash(), "config": config.public_dump()},
                         sort_keys=True))
        return EXIT_OK
    print(json.dumps(config.public_dump(), indent=2, sort_keys=True))
    print(f"{args.config}: valid (config hash {config.config_hash()})", file=sys.stderr)
    return EXIT_OK


def _runs(args: argparse.Namespace) -> int:
    from alray.lake import Lake
    from alray.report import print_run, print_runs

    lake = Lake.from_output(_config(args).output)
    if args.runs_command == "list":
        print_runs(lake, as_json=args.json)
    else:
        print_run(lake, args.run_id, as_json=args.json)
    return EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    from alray.simulate import CurvePoint, format_table, simulate
    from alray.simulate_config import load_simulate_config

    config = load_simulate_config(args.config, args.overrides)
    progress = _progress(args)
    _log_command_to(args.out or config.output, "simulate", progress)

    def say(point: CurvePoint) -> None:
        engine_log.write_line(_err(), f"  {point.strategy:<22} seed {point.seed} round {point.round:>3}: "
                              f"{point.n_labels:>5} labels, accuracy {point.accuracy:.3f}")

    result = simulate(config, output=args.out, on_round=None if args.json or args.quiet else say)
    if args.json:
        print(json.dumps(result.summary, sort_keys=True), file=_out())
        return EXIT_OK
    print(format_table(result.summary), file=_out())
    print(f"\nwhole pool labeled: accuracy {result.summary['full_pool_accuracy']['mean']}; "
          f"{result.summary['elapsed_s']}s; " + ", ".join(result.files.values()), file=_out())
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    from alray.heads import summary_json, train

    summary = train(_config(args))
    if args.json:
        print(summary_json(summary))
        return EXIT_OK
    print(f"train: head on {summary.encoder} from {summary.n_used} of {summary.n_labeled} labeled samples "
          f"(features of run {summary.features_run}), classes {summary.classes}, train accuracy "
          f"{summary.train_accuracy:.1%}, {summary.seconds:.1f}s")
    print(f"checkpoint: {summary.checkpoint}  (next round: --set model.checkpoint={summary.checkpoint})")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from alray.html_report import write_report

    config = _config(args)
    if args.lake:
        config = config.model_copy(update={"output": config.output.model_copy(update={"path": args.lake})})
    path = write_report(config, args.run_id, args.out)
    print(json.dumps({"run_id": args.run_id, "path": str(path)}) if args.json else path)
    return EXIT_OK


def _rounds(args: argparse.Namespace) -> int:
    import datetime as dt

    from alray.lake import Lake
    from alray.round_history import format_history, history_json, round_history

    config = _config(args)
    history = round_history(Lake.from_output(config.output), now=dt.datetime.now(dt.timezone.utc),
                            after=config.labeled.expiry())
    print(history_json(history) if args.json else format_history(history))
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from alray.labeling.export import export_run

    url = args.url or (os.environ.get("LABEL_STUDIO_URL") if args.to == "label-studio" else None)
    summary = export_run(_config(args), args.run_id, to=args.to,
                         out=Path(args.out or os.path.join("exports", args.run_id, args.to)), images=args.images,
                         url=url, token=os.environ.get("LABEL_STUDIO_API_KEY"), project=args.project,
                         task=args.task)
    if args.json:
        print(summary.to_json())
        return EXIT_OK
    tasks = "" if summary.project_id is None else (
        f"; project {summary.project_id}: {summary.tasks_created} tasks created, {summary.tasks_existing} there")
    print(f"export {summary.run_id} -> {summary.to}: {summary.n_items} items, {summary.newly_sent} newly sent{tasks}")
    print(f"  destination {summary.destination}")
    for path in summary.files:
        print(f"  {path}")
    return EXIT_OK


def _import_labels(args: argparse.Namespace) -> int:
    from pathlib import Path

    from alray.errors import InputError
    from alray.labeling.importer import import_labels, read_export_file
    from alray.labeling.label_studio import client, fetch_export, server_errors

    config = _config(args)
    url = args.url or (None if args.file else os.environ.get("LABEL_STUDIO_URL"))
    if url:
        token = os.environ.get("LABEL_STUDIO_API_KEY")
        if not token or not args.project:
            raise InputError("--url: give --project and set LABEL_STUDIO_API_KEY to the user's API token")
        with server_errors(url, args.project):
            project_id, tasks = fetch_export(client(url, token), args.project)
        source = f"{url.rstrip('/')}/projects/{project_id}"
    elif args.file:
        tasks, source = read_export_file(Path(args.file)), args.file
    else:
        raise InputError("import-labels: give a Label Studio export FILE, or --url and --project")
    summary = import_labels(config, tasks, source=source, task=args.task)
    if args.json:
        print(summary.to_json())
        return EXIT_OK
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(summary.skipped.items())) or "none"
    print(f"import-labels {source}: {summary.n_tasks} tasks, {summary.n_labels} labels ({summary.n_new} new, "
          f"{summary.n_known} already imported); round items changed {summary.rounds_changed}, expired "
          f"{summary.expired}; skipped {skipped}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names (the process's arguments when None); return the exit code."""
    return _dispatch(build_parser().parse_args(argv))


# Commands that may start Ray or Spark: their output goes to the run's log file (--verbose shows it).
ENGINE_COMMANDS = frozenset({"run", "score", "select", "embed", "demo", "simulate"})


def _dispatch(args: argparse.Namespace) -> int:
    handlers = {
        "run": lambda: _run(args, ("score", "select")),
        "score": lambda: _run(args, ("score",)),
        "select": lambda: _run(args, ("select",)),
        "embed": lambda: _embed(args),
        "validate": lambda: _validate(args),
        "demo": lambda: _demo(args),
        "runs": lambda: _runs(args),
        "simulate": lambda: _simulate(args),
        "report": lambda: _report(args),
        "train": lambda: _train(args),
        "rounds": lambda: _rounds(args),
        "export": lambda: _export(args),
        "import-labels": lambda: _import_labels(args),
        "import-predictions": lambda: import_predictions_command(args),
    }
    if args.command not in ENGINE_COMMANDS:
        return _handle(handlers[args.command])
    with engine_log.capture(verbose=args.verbose):
        return _handle(handlers[args.command])


# Commands that start neither Ray nor Spark.
ENGINELESS_COMMANDS = frozenset({"runs", "validate", "train", "rounds", "export", "import-labels",
                                 "import-predictions"})


def entry() -> None:
    """The console script: run a command and exit with its code."""
    args = build_parser().parse_args()
    code = _dispatch(args)
    if args.command in ENGINELESS_COMMANDS:
        # Nothing needs a clean interpreter shutdown here; and at shutdown a native library's
        # thread (seen about one run in two on this machine) can abort the process after its
        # answer is printed, turning exit 2 into a SIGABRT.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _handle(handler: Callable[[], int]) -> int:
    try:
        return handler()
    except AlrayError as exc:
        print(f"alray: error: {exc}", file=_err())
        return EXIT_USER
    except KeyboardInterrupt:
        print("alray: interrupted", file=_err())
        return 130
    except BrokenPipeError:  # `alray runs list | head`: the reader has all it wanted, as with SIGPIPE
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
    except Exception:  # an internal failure: keep the traceback for the bug report
        traceback.print_exc(file=_err())
        capture = engine_log.active()
        logs = f"; the engines' log: {capture.log_path}" if capture is not None and capture.log_path else ""
        print(f"alray: internal error (exit 1); the traceback above is for a bug report{logs}", file=_err())
        return EXIT_INTERNAL


if __name__ == "__main__":
    entry()
