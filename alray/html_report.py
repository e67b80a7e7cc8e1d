"""The HTML report of a run: what was selected and why, in one self-contained file with PNG figures.

Everything comes from the lake (the runs row, the run's features and ranking), the labeled set
and the pool's images; figures are drawn with matplotlib and embedded as base64 PNGs, so the
file can be mailed or attached to a ticket and opens offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from alray.config import Config
from alray.errors import InputError
from alray.lake import Lake, read_ids
from alray.run_records import recorded_config, run_row
from alray.tables import DRAWN_SCORES

FUNNEL = ("pool", "rejected", "filtered", "candidates", "selected")
N_THUMBNAILS = 24
N_REJECT_REASONS = 20  # rows of the reject reasons table; the rest are counted in one line


@dataclass
class RunData:
    """What the report draws: the runs row, the config the run recorded, features joined to the ranking,
    labeled ids, the rejected rows."""

    run: dict[str, Any]
    config: Config  # the run's own (see recorded_config)
    features: pa.Table
    selected: np.ndarray  # bool (N,) per features row
    rank: np.ndarray  # int (N,), 0 where not ranked
    score: np.ndarray  # float (N,), NaN where not ranked
    labeled: np.ndarray  # bool (N,)
    strategy: str
    rejects: pa.Table  # id, stage, reason
    config_note: str = ""  # why the recorded config was not used, when it was not


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    values = column.combine_chunks()
    if len(values) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return values.flatten().to_numpy(zero_copy_only=False).reshape(len(values), -1).astype(np.float32)


def load_run(config: Config, run_id: str) -> RunData:
    """Read one run's row, features, ranking and rejects; InputError names the run or table that is missing.

    ``config`` says where the lake is (and gives credentials); everything else comes from the
    config the run recorded (:func:`recorded_config`).
    """
    lake = Lake.from_output(config.output)
    run = run_row(lake, run_id)
    config, note = recorded_config(run, config)
    features = lake.read_run("features", run_id)
    if features.num_rows == 0:
        raise InputError(f"run {run_id!r}: no rows in the features table (was it scored?)")
    ranking = lake.read_run("ranking", run_id, columns=["id", "rank", "selected", "score", "strategy"])
    ids = features.column("id").to_pylist()
    position = {identifier: i for i, identifier in enumerate(ids)}
    n = len(ids)
    selected, rank, score = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64), np.full(n, np.nan)
    for row in ranking.to_pylist():
        i = position.get(row["id"])
        if i is not None:
            selected[i], rank[i] = bool(row["selected"]), int(row["rank"])
            score[i] = np.nan if row["score"] is None else float(row["score"])
    labeled = np.zeros(n, dtype=bool)
    if config.labeled.path:
        labeled_ids = set(read_ids(config.labeled.path, config.labeled.format, name="labeled.path",
                                   storage_options=config.labeled_storage_options()).to_pylist())
        labeled = np.array([i in labeled_ids for i in ids], dtype=bool)
    strategies = ranking.column("strategy").unique().to_pylist() if ranking.num_rows else []
    rejects = lake.read_run("rejects", run_id, columns=["id", "stage", "reason"])
    return RunData(run, config, features, selected, rank, score, labeled, ", ".join(str(s) for s in strategies),
                   rejects, note)


def _png(figure: Any) -> str | None:
    """A matplotlib figure as a base64 PNG (None for None); the figure is closed."""
    if figure is None:
        return None
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def funnel_figure(run: dict[str, Any]) -> Any:
    """Horizontal bars of the funnel counts (a matplotlib figure)."""
    plt = _pyplot()
    counts = [int(run.get(f"n_{name}") or 0) for name in FUNNEL]
    figure, axes = plt.subplots(figsize=(7, 2.8))
    bars = axes.barh(list(FUNNEL)[::-1], counts[::-1], color=["#2a9d8f", "#e9c46a", "#f4a261", "#e76f51", "#264653"])
    axes.bar_label(bars, padding=3)
    axes.set_xlabel("rows")
    axes.set_ylabel("step")
    axes.set_xlim(0, max([*counts, 1]) * 1.15)
    figure.tight_layout()
    return figure


def score_histograms(data: RunData) -> Any | None:
    """One histogram per score: every scored row, with the selected overlaid (densities); the legend of each
    counts the rows with a value of that score."""
    plt = _pyplot()
    columns = [c for c in DRAWN_SCORES if c in data.features.schema.names
               and data.features.column(c).null_count < data.features.num_rows]
    if not columns:
        return None
    n_cols = 3
    n_rows = -(-len(columns) // n_cols)
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(11, 2.8 * n_rows), squeeze=False)
    for ax, column in zip(axes.ravel(), columns, strict=False):
        values = pc.cast(data.features.column(column), pa.float64()).to_numpy(zero_copy_only=False)
        finite = np.isfinite(values)
        bins = np.histogram_bin_edges(values[finite], bins=30) if finite.any() else 10
        ax.hist(values[finite], bins=bins, density=True, alpha=0.5, color="#8d99ae",
                label=f"all scored ({int(finite.sum())})")
        chosen = values[finite & data.selected]
        if len(chosen):
            ax.hist(chosen, bins=bins, density=True, alpha=0.7, color="#d62828", histtype="stepfilled",
                    label=f"selected ({len(chosen)})")
        ax.set_xlabel(column, fontsize=9)
        ax.set_ylabel("density", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(columns):]:
        ax.set_visible(False)
    figure.tight_layout()
    return figure


def pca_2d(embeddings: np.ndarray) -> np.ndarray:
    """The first two principal components (N, 2) of embeddings (N, D), by SVD of the centred rows."""
    centred = embeddings - embeddings.mean(axis=0, keepdims=True)
    if len(centred) < 2 or centred.shape[1] < 2:
        return np.zeros((len(centred), 2))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def projection_figure(data: RunData) -> Any | None:
    """PCA of the embeddings: every scored row, the labeled set and the selection marked."""
    plt = _pyplot()
    embeddings = _matrix(data.features.column("embedding"))
    if embeddings.size == 0:
        return None
    points = pca_2d(embeddings)
    rest = ~data.selected & ~data.labeled
    figure, axes = plt.subplots(figsize=(7, 6))
    # Each row is drawn once and counted in one entry: the entries add up to the scored rows.
    axes.scatter(points[rest, 0], points[rest, 1], s=6, c="#adb5bd", label=f"other scored rows ({int(rest.sum())})")
    axes.scatter(points[data.labeled, 0], points[data.labeled, 1], s=22, marker="s", c="#1d3557",
                 label=f"labeled, in the pool ({int(data.labeled.sum())})")
    axes.scatter(points[data.selected, 0], points[data.selected, 1], s=50, marker="*", c="#d62828",
                 label=f"selected ({int(data.selected.sum())})")
    axes.set_xlabel("PC 1")
    axes.set_ylabel("PC 2")
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    return figure


def class_figure(data: RunData) -> Any | None:
    """Share of each predicted class in the pool and in the selection."""
    names = data.features.schema.names
    if "pred" not in names or data.features.column("pred").null_count == data.features.num_rows:
        return None  # no class predictions: an embedding-only model, a detection run
    plt = _pyplot()
    pred = data.features.column("pred").to_numpy(zero_copy_only=False)
    classes = np.unique(pred)
    pool = np.array([(pred == c).mean() for c in classes])
    chosen = pred[data.selected]
    selection = np.array([(chosen == c).mean() if len(chosen) else 0.0 for c in classes])
    figure, axes = plt.subplots(figsize=(8, 3.2))
    x = np.arange(len(classes))
    axes.bar(x - 0.2, pool, width=0.4, color="#8d99ae", label=f"all scored ({len(pred)})")
    axes.bar(x + 0.2, selection, width=0.4, color="#d62828", label=f"selected ({len(chosen)})")
    axes.set_xticks(x, [str(c) for c in classes])
    axes.set_xlabel("predicted class")
    axes.set_ylabel("share of the rows")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _thumbnail(payload: bytes, side: int = 96) -> str | None:
    """A PNG of at most ``side`` pixels a side (base64), or None when the bytes are no image PIL reads."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(payload)) as image:
            image.draft("RGB", (side, side))  # a JPEG decodes at a fraction of its size
            thumb = image.convert("RGB") if image.mode not in ("L", "RGB") else image.copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    if max(thumb.size) > side:
        thumb.thumbnail((side, side))
    else:  # small images are scaled up (nearest) so a 32-px digit is readable in the page
        scale = max(1, side // max(thumb.size))
        thumb = thumb.resize((thumb.size[0] * scale, thumb.size[1] * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    thumb.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnails(data: RunData, n: int = N_THUMBNAILS) -> list[dict[str, Any]]:
    """The top ``n`` selected rows by rank with their image, whatever the pool's format (image bytes, or
    files that a listing or a folder names); a row whose image cannot be read has none."""
    from alray.stages.pool_source import read_images

    order = [i for i in np.argsort(np.where(data.selected, data.rank, np.iinfo(np.int64).max)) if data.selected[i]]
    top = order[:n]
    ids = data.features.column("id").to_pylist()
    images = read_images(data.config.pool, [ids[i] for i in top]) if top else {}
    cards = []
    for i in top:
        payload = images.get(ids[i])
        cards.append({"id": ids[i], "rank": int(data.rank[i]), "score": float(data.score[i]),
                      "png": _thumbnail(payload) if payload else None})
    return cards


def reject_reasons(rejects: pa.Table, n: int = N_REJECT_REASONS) -> tuple[list[dict[str, Any]], int]:
    """The ``n`` most frequent reasons rows were rejected (stage, reason, count, up to three ids), and how
    many other reasons there are."""
    if rejects.num_rows == 0:
        return [], 0
    grouped = rejects.group_by(["stage", "reason"]).aggregate([("id", "count"), ("id", "list")])
    rows = sorted(grouped.to_pylist(), key=lambda r: (-r["id_count"], str(r["stage"]), str(r["reason"])))
    shown = [{"stage": r["stage"], "reason": r["reason"], "count": r["id_count"], "ids": sorted(r["id_list"])[:3]}
             for r in rows[:n]]
    return shown, max(0, len(rows) - n)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1150px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table.kv td { padding: 2px 12px 2px 0; } .muted { color: #777; }
img.figure { max-width: 100%; border: 1px solid #eee; }
.thumbs { display: flex; flex-wrap: wrap; gap: 10px; }
.thumb { width: 120px; font-size: 11px; text-align: center; }
.thumb img { width: 96px; height: 96px; image-rendering: pixelated; border: 1px solid #ccc; }
table.grid { border-collapse: collapse; font-size: 13px; }
table.grid th, table.grid td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
table.grid td.num { text-align: right; }
"""


def _figure(title: str, png: str | None, note: str = "") -> str:
    if png is None:
        return f"<h2>{html.escape(title)}</h2><p class='muted'>not available for this run</p>"
    return (f"<h2>{html.escape(title)}</h2>{note}<img class='figure' alt='{html.escape(title)}' "
            f"src='data:image/png;base64,{png}'>")


def _rejects_section(rejects: pa.Table) -> str:
    reasons, more = reject_reasons(rejects)
    if not reasons:
        return "<h2>Rejected rows</h2><p class='muted'>no row was rejected</p>"
    rows = "".join(f"<tr><td>{html.escape(str(r['stage']))}</td><td>{html.escape(str(r['reason']))}</td>"
                   f"<td class='num'>{r['count']}</td><td>{html.escape(', '.join(r['ids']))}</td></tr>"
                   for r in reasons)
    tail = f"<p class='muted'>{more} more reason(s) in the rejects table</p>" if more else ""
    return ("<h2>Rejected rows</h2><table class='grid'><thead><tr><th>stage</th><th>reason</th><th>rows</th>"
            f"<th>for example</th></tr></thead><tbody>{rows}</tbody></table>{tail}")


def render(data: RunData) -> str:
    """The report page as one HTML string (figures inline)."""
    run, config = data.run, data.config
    radius = run.get("coverage_radius")
    reasons = json.loads(run["filtered_by_reason"]) if run.get("filtered_by_reason") else {}
    facts = [("run", run["run_id"]), ("status", run["status"]), ("started", run["started_at"]),
             ("finished", run["finished_at"]), ("pool", f"{config.pool.path} ({config.pool.format})"),
             ("model", config.model.checkpoint if config.model else "-"),
             ("labeled", config.labeled.path or "-"), ("strategy", data.strategy or "-"),
             ("coverage radius", "-" if radius is None else f"{radius:.4f}"),
             ("config hash", run.get("config_hash"))]
    if run.get("error"):
        facts.append(("error", run["error"]))
    facts += [(name, run.get(f"n_{name}")) for name in FUNNEL]
    facts += [(f"filtered by {reason}", n) for reason, n in sorted(reasons.items())]
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td><b>{html.escape(str(v))}</b></td></tr>" for k, v in facts)
    cards = "".join(
        "<div class='thumb'>"
        + (f"<img alt='{html.escape(c['id'])}' src='data:image/png;base64,{c['png']}'>" if c["png"]
           else "<div class='muted'>(no image)</div>")
        + f"<div>#{c['rank']} {html.escape(c['id'])}</div><div>score {c['score']:.4f}</div></div>"
        for c in thumbnails(data))
    radius_note = ("" if radius is None else
                   f"<p>Coverage radius: every candidate lies within <b>{radius:.4f}</b> of a selected or labeled "
                   "sample in embedding space.</p>")
    body = [
        f"<h1>alray run {html.escape(str(run['run_id']))}</h1>",
        f"<p class='muted'>{html.escape(data.config_note)}</p>" if data.config_note else "",
        f"<table class='kv'>{rows}</table>",
        _figure("Funnel", _png(funnel_figure(run))),
        _figure("Scores: all scored rows and the selection", _png(score_histograms(data))),
        _figure("Embeddings (PCA): pool, labeled set, selection", _png(projection_figure(data)), radius_note),
        _figure("Predicted classes: selection vs pool", _png(class_figure(data))),
        "<h2>Top selected</h2>" + (f"<div class='thumbs'>{cards}</div>" if cards else
                                   "<p class='muted'>nothing selected</p>"),
        _rejects_section(data.rejects),
    ]
    from alray.detection.report import detection_sections  # nothing for a classification run

    body += detection_sections(data)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>alray run {html.escape(str(run['run_id']))}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def write_report(config: Config, run_id: str, out_dir: str | Path) -> Path:
    """Write ``OUT_DIR/RUN_ID.html`` for a run found in ``config``'s lake and return its path.

    The page shows the run as its recorded config describes it; ``config`` only says where the lake
    is and gives credentials (:func:`recorded_config`)."""
    data = load_run(config, run_id)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.html"
    path.write_text(render(data))
    return path
