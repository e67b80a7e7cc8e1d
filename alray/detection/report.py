"""The detection part of the HTML report: objects per image, the detections' scores, and selected images
with their boxes drawn. Empty for a run without detections (a classification run)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from alray.html_report import RunData, _figure, _png, _pyplot

#: Selected images shown with their boxes.
N_BOXED = 8
_COLOURS = ("#e63946", "#2a9d8f", "#f4a261", "#457b9d", "#9b5de5", "#ffb703", "#06d6a0", "#ef476f")


def has_detections(data: RunData) -> bool:
    """Whether the run's features hold detections."""
    names = data.features.schema.names
    return "detections" in names and data.features.column("detections").null_count < data.features.num_rows


def objects_figure(data: RunData) -> str | None:
    """Objects per image, every scored image and the selection (shares), as base64 PNG."""
    plt = _pyplot()
    counts = np.array([v if v is not None else -1 for v in data.features.column("n_objects").to_pylist()])
    scored = counts >= 0
    top = int(counts.max()) if scored.any() else 0
    bins = np.arange(-0.5, top + 1.5)
    figure, axes = plt.subplots(figsize=(7, 3))
    axes.hist(counts[scored], bins=bins, density=True, alpha=0.5, color="#8d99ae", label="all scored")
    if (scored & data.selected).any():
        axes.hist(counts[scored & data.selected], bins=bins, density=True, alpha=0.7, color="#d62828",
                  label="selected")
    axes.set_xlabel("objects in the image")
    axes.set_ylabel("share of images")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)


def _objects(data: RunData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every detected object's score and class, and whether its image is selected."""
    scores, labels, chosen = [], [], []
    for value, picked in zip(data.features.column("detections").to_pylist(), data.selected, strict=True):
        for item in value or []:
            scores.append(item["score"])
            labels.append(item["label"])
            chosen.append(bool(picked))
    return np.array(scores, dtype=float), np.array(labels, dtype=int), np.array(chosen, dtype=bool)


def detection_score_figure(data: RunData, class_names: list[str] | None) -> str | None:
    """Histograms of the objects' detection scores and bars of their classes: the pool and the selection."""
    scores, labels, chosen = _objects(data)
    if not len(scores):
        return None
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3))
    bins = np.linspace(0, 1, 21)
    left.hist(scores, bins=bins, density=True, alpha=0.5, color="#8d99ae", label="all objects")
    if chosen.any():
        left.hist(scores[chosen], bins=bins, density=True, alpha=0.7, color="#d62828", label="in selected images")
    left.set_xlabel("detection score")
    left.legend(fontsize=8)
    classes = np.unique(labels)
    x = np.arange(len(classes))
    right.bar(x - 0.2, [(labels == c).mean() for c in classes], width=0.4, color="#8d99ae", label="all objects")
    if chosen.any():
        right.bar(x + 0.2, [(labels[chosen] == c).mean() for c in classes], width=0.4, color="#d62828",
                  label="in selected images")
    names = [class_names[c] if class_names and 0 <= c < len(class_names) else str(c) for c in classes]
    right.set_xticks(x, names)
    right.set_ylabel("share of objects")
    right.legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)


def boxed_image(payload: bytes, objects: list[dict[str, Any]], class_names: list[str] | None) -> str | None:
    """An image with its boxes and class names drawn, as base64 PNG (None when it does not decode)."""
    try:
        with Image.open(io.BytesIO(payload)) as image:
            canvas = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    scale = max(1, 192 // max(canvas.size))  # small images are enlarged so that the boxes read
    canvas = canvas.resize((canvas.size[0] * scale, canvas.size[1] * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for item in objects:
        colour = _COLOURS[int(item["label"]) % len(_COLOURS)]
        box = [item["x0"] * scale, item["y0"] * scale, item["x1"] * scale, item["y1"] * scale]
        draw.rectangle(box, outline=colour, width=2)
        label = int(item["label"])
        name = class_names[label] if class_names and 0 <= label < len(class_names) else str(label)
        draw.text((box[0] + 2, box[1] + 1), f"{name} {item['score']:.2f}", fill=colour)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def boxed_cards(data: RunData, n: int = N_BOXED) -> str:
    """The first ``n`` selected images with their boxes, as HTML."""
    from alray.stages.pool_source import read_images

    order = np.argsort(np.where(data.selected, data.rank, np.iinfo(np.int64).max), kind="stable")
    top = [int(i) for i in order if data.selected[i]][:n]
    ids = data.features.column("id").to_pylist()
    detections = data.features.column("detections").to_pylist()
    images = read_images(data.config.pool, [ids[i] for i in top]) if top else {}
    names = data.config.detection.classes
    cards = []
    for i in top:
        payload = images.get(ids[i])
        png = boxed_image(payload, detections[i] or [], names) if payload else None
        picture = (f"<img class='boxed' alt='{html.escape(ids[i])}' src='data:image/png;base64,{png}'>" if png
                   else "<div class='muted'>(no image)</div>")
        cards.append(f"<div class='thumb boxed'>{picture}<div>#{int(data.rank[i])} {html.escape(ids[i])}</div>"
                     f"<div>{len(detections[i] or [])} objects</div></div>")
    return "".join(cards)


def detection_sections(data: RunData) -> list[str]:
    """The report's detection sections (none for a run without detections)."""
    if not has_detections(data):
        return []
    cards = boxed_cards(data)
    return [
        _figure("Objects per image: all scored images and the selection", objects_figure(data)),
        _figure("Detections: scores and classes of the objects",
                detection_score_figure(data, data.config.detection.classes)),
        "<h2>Selected images and their detections</h2><style>.thumb.boxed { width: 200px; } "
        ".thumb.boxed img { width: 192px; height: 192px; }</style>"
        + (f"<div class='thumbs'>{cards}</div>" if cards else "<p class='muted'>nothing selected</p>"),
    ]
