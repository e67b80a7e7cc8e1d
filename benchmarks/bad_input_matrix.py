"""The bad-input matrix: every kind of bad row and bad job against one pool, and what alray did.

Run ``python benchmarks/bad_input_matrix.py``. Row-level problems must be quarantined with a
reason (and the run must go on); job-level problems must end with exit code 2 and one line
naming the culprit. It prints one line per case, checks that no pool id was lost or duplicated,
and writes ``benchmarks/results/bad_input_matrix.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

try:
    from alray.cli import main as alray_main
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from alray.cli import main as alray_main
from alray.demo import build_demo, png_bytes
from alray.image_samples import every_kind, large_jpeg, photo_crops, png_bomb
from alray.lake import Lake
from alray.models import FeatureMLP, save_checkpoint

RESULTS = Path(__file__).resolve().parent / "results" / "bad_input_matrix.json"


def run_cli(*args: str) -> tuple[int, str]:
    """Exit code and stderr of one in-process ``alray`` call (engines stay up between calls)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = alray_main(list(args))
    lines = [line for line in err.getvalue().splitlines() if line.startswith("alray: ")]
    return code, lines[-1] if lines else ""


def image_rows(root: Path) -> tuple[pa.Table, dict[str, str]]:
    """Hard image rows appended to a good pool, and what must become of each: quarantined (bad
    bytes, images beyond the pixel limit), reduced (a JPEG beyond it) or scored (every mode and
    format, real photographs of mixed sizes, some grayscale)."""
    good = png_bytes((np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8))
    cases = {
        "bad-corrupt": (good[:20] + b"\x00" * 50 + good[70:], "quarantined"),
        "bad-truncated": (good[: len(good) // 2], "quarantined"),
        "bad-empty": (b"", "quarantined"),
        "bad-not-an-image": (b"%PDF-1.4 this is a pdf, not an image", "quarantined"),
        "bomb-30000x30000.png": (png_bomb(30000, 30000), "quarantined"),
        "bomb-13000x13000.png": (png_bomb(13000, 13000), "quarantined"),
        "jpeg-9000x6000.jpg": (large_jpeg(9000, 6000), "reduced"),
    }
    cases.update({name: (data, "scored") for name, data in every_kind().items()})
    cases.update({f"photo-{i:02d}.jpg": (data, "scored") for i, data in enumerate(photo_crops(40))})
    table = pa.table({"id": list(cases), "image": pa.array([v[0] for v in cases.values()], pa.binary())})
    return table, {name: v[1] for name, v in cases.items()}


def write_config(root: Path, name: str, data: dict[str, Any]) -> str:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def main() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="alray-bad-inputs-"))
    demo = build_demo(pool_path=str(root / "demo-pool"), labeled_path=str(root / "labeled"),
                      checkpoint_path=str(root / "model.pt"), n_images=200, per_class=5, epochs=20, seed=0)
    pool = pq.read_table(demo.pool).select(["id", "image"])
    hard, expected = image_rows(root)
    pool = pa.concat_tables([pool, hard])
    (root / "pool").mkdir()
    pq.write_table(pool, root / "pool" / "part-0.parquet")
    base = {
        "pool": {"path": str(root / "pool")}, "labeled": {"path": demo.labeled},
        "model": {"checkpoint": demo.checkpoint}, "score": {"mc_samples": 5, "max_bad_fraction": 0.1},
        "selection": {"n_samples": 20}, "output": {"path": str(root / "lake")},
    }
    cases: list[dict[str, Any]] = []

    # row-level: one run, each bad row quarantined with its reason
    code, message = run_cli("run", write_config(root, "rows", base), "--run-id", "rows", "--quiet")
    lake = Lake(str(root / "lake"))
    rejects = {r["id"]: r["reason"] for r in lake.read_run("rejects", "rows").to_pylist()}
    ranking = lake.read_run("ranking", "rows", columns=["id"]).column("id").to_pylist()
    runs = lake.read_run("runs", "rows").to_pylist()[0]
    widths = dict(zip(*lake.read_run("features", "rows", columns=["id", "width"]).to_pydict().values(), strict=True))
    for name, wanted in expected.items():
        if name in rejects:
            outcome, detail = "quarantined", rejects[name]
        else:
            outcome = "reduced" if wanted == "reduced" and widths.get(name, 0) < 9000 else "scored"
            detail = f"decoded {widths.get(name):.0f} px wide"
        cases.append({"case": f"row: {name}", "outcome": outcome if outcome == wanted else f"{outcome} (WRONG)",
                      "detail": detail})
    ids = pool.column("id").to_pylist()
    accounted = len(ranking) + len(rejects) + int(runs["n_filtered"] or 0)
    invariant = {"exit_code": code, "pool": len(ids), "ranked": len(ranking), "rejected": len(rejects),
                 "filtered": runs["n_filtered"], "every_id_once": accounted == len(ids)
                 and not set(ranking) & set(rejects) and len(set(ranking)) == len(ranking)}

    # feature vectors: NaN, Inf, wrong length
    torch.manual_seed(0)
    model = FeatureMLP(n_features=4, n_classes=3)
    save_checkpoint(model, root / "mlp.pt")
    rng = np.random.default_rng(1)
    vectors = [list(rng.random(4)) for _ in range(40)] + [[0.1, float("nan"), 0.2, 0.3],
                                                          [float("inf"), 0, 0, 0], [1.0, 2.0]]
    feature_ids = [f"f{i}" for i in range(40)] + ["bad-nan", "bad-inf", "bad-length"]
    (root / "features-pool").mkdir()
    pq.write_table(pa.table({"id": feature_ids, "features": vectors}), root / "features-pool" / "part-0.parquet")
    features_config = {**base, "pool": {"path": str(root / "features-pool")}, "labeled": {"path": None},
                       "model": {"checkpoint": str(root / "mlp.pt")}, "selection": {"n_samples": 5}}
    code_f, _ = run_cli("run", write_config(root, "features", features_config), "--run-id", "vectors", "--quiet")
    vector_rejects = {r["id"]: r["reason"] for r in lake.read_run("rejects", "vectors").to_pylist()}
    for bad in ("bad-nan", "bad-inf", "bad-length"):
        cases.append({"case": f"row: {bad}", "outcome": "quarantined" if bad in vector_rejects else
                      "NOT QUARANTINED", "detail": vector_rejects.get(bad, "")})

    # job-level: each must exit 2 with one line
    torch.save({"format": "alray-checkpoint/1", "payload": object.__reduce__}, root / "pickle.pt")
    (root / "garbage.pt").write_bytes(b"not a checkpoint")
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "image": pa.array([], pa.binary())}),
                   root / "empty.parquet")
    dup = pa.concat_tables([pool.slice(0, 5), pool.slice(0, 1)])
    pq.write_table(dup, root / "dup.parquet")
    blank = pool.slice(0, 5).set_column(0, "id", pa.array(["a", "", "b", None, "c"], pa.string()))
    pq.write_table(blank, root / "blank-ids.parquet")
    jobs = {
        "n_samples <= 0": ["--set", "selection.n_samples=0"],
        "unknown strategy": ["--set", "selection.strategies=[{input: embeddings, strategy: magic}]"],
        "unknown score name": ["--set", "selection.strategies=[{input: embeddings, strategy: diversity},"
                               " {input: nonsense, strategy: weights}]"],
        "filter on a missing column": ["--set", "selection.filters=[{column: nope, op: '>', value: 1}]"],
        "filter type mismatch": ["--set", "selection.filters=[{column: sharpness, op: '>', value: high}]"],
        "missing checkpoint": ["--set", f"model.checkpoint={root / 'gone.pt'}"],
        "unreadable checkpoint": ["--set", f"model.checkpoint={root / 'garbage.pt'}"],
        "checkpoint needing pickle": ["--set", f"model.checkpoint={root / 'pickle.pt'}"],
        "empty pool": ["--set", f"pool.path={root / 'empty.parquet'}"],
        "duplicate ids": ["--set", f"pool.path={root / 'dup.parquet'}"],
        "empty ids": ["--set", f"pool.path={root / 'blank-ids.parquet'}"],
        "more rejects than max_bad_fraction": ["--set", "score.max_bad_fraction=0.001"],
        "missing pool": ["--set", f"pool.path={root / 'nowhere'}"],
    }
    config = write_config(root, "jobs", base)
    for i, (name, overrides) in enumerate(jobs.items()):
        started, run_id = time.perf_counter(), f"job-{i}"
        code_j, message = run_cli("run", config, "--run-id", run_id, "--quiet", *overrides)
        seconds = time.perf_counter() - started
        # a failed run leaves no rows of its own; its runs row says why
        left = {t: lake.read_run(t, run_id, columns=["id"]).num_rows for t in ("features", "rejects", "ranking")}
        status = lake.read_run("runs", run_id).to_pylist()
        cases.append({"case": f"job: {name}", "outcome": f"exit {code_j}", "detail": message,
                      "seconds": round(seconds, 1), "rows_left": sum(left.values()),
                      "runs_status": status[0]["status"] if status else None})
    code_all, _ = run_cli("run", config, "--run-id", "all", "--quiet", "--set", "selection.n_samples=100000")
    selected_all = lake.read_run("runs", "all").to_pylist()[0]
    cases.append({"case": "job: n_samples above the candidates", "outcome": f"exit {code_all}",
                  "detail": f"selected all {selected_all['n_selected']} of {selected_all['n_candidates']} candidates"})

    print(f"{'case':<42} {'outcome':<16} detail")
    for case in cases:
        extra = f" [{case['seconds']} s, rows left {case['rows_left']}]" if "seconds" in case else ""
        print(f"{case['case']:<42} {case['outcome']:<16} {case['detail'][:110]}{extra}")
    print(f"\ninvariant: {invariant}")
    results = {"cases": cases, "invariant": invariant, "feature_run_exit_code": code_f}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {RESULTS}")
    return results


if __name__ == "__main__":
    main()
