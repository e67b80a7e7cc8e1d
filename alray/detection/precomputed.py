"""Features from detections a pool already holds: no model, the scores from its ``detections`` column.

A precomputed detection pool has ``id``, ``embedding`` (D floats), ``detections`` (see
:mod:`alray.detection.boxes`) and the image size ``width`` and ``height`` in pixels (what
``alray import-predictions`` writes). A row whose embedding or detections break the contract
(a box outside the image or without area, an unknown class id, ...) is rejected with a reason naming
the field, as :mod:`alray.precomputed` rejects bad classification rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from alray.detection.boxes import DetectionError, Detections, check_detections, finite_number
from alray.detection.columns import DetectionOptions, detection_columns
from alray.precomputed import check_vectors
from alray.tables import features_rows

#: The columns a precomputed detection pool holds besides its metadata.
DETECTION_INPUT_COLUMNS = ("embedding", "detections", "width", "height")


def image_sizes(batch: pa.Table, reasons: list[str | None]) -> list[tuple[float, float] | None]:
    """Each row's (width, height) from the ``width`` and ``height`` columns; a missing, non-numeric or
    non-positive size is a reason naming the column (where the row has none yet)."""
    sizes: list[tuple[float, float] | None] = []
    widths, heights = batch.column("width").to_pylist(), batch.column("height").to_pylist()
    for i, (w, h) in enumerate(zip(widths, heights, strict=True)):
        try:
            size = (finite_number(w, "width"), finite_number(h, "height"))
            if not (size[0] > 0 and size[1] > 0):
                raise DetectionError(f"width, height: expected the image size in pixels, got {w!r} x {h!r}")
        except DetectionError as exc:
            if reasons[i] is None:
                reasons[i] = str(exc)
            sizes.append(None)
        else:
            sizes.append(size)
    return sizes


def read_detections(values: list[object], sizes: Sequence[tuple[float, float] | None], options: DetectionOptions,
                    reasons: list[str | None]) -> list[Detections | None]:
    """The checked detections of each row against its image size (None where the row has a reason, or
    gets one here: the first fault of its detections)."""
    out: list[Detections | None] = []
    for i, value in enumerate(values):
        size = sizes[i]
        if reasons[i] is not None or size is None:
            out.append(None)
            continue
        try:
            out.append(check_detections(value, width=size[0], height=size[1], known_labels=options.known_labels,
                                        n_classes=options.n_classes, class_names=options.class_names))
        except DetectionError as exc:
            reasons[i] = str(exc)
            out.append(None)
    return out


def score_precomputed_detections(batch: pa.Table, *, run_id: str, embedding_dim: int | None,
                                 options: DetectionOptions) -> pa.Table:
    """Features rows (:func:`alray.tables.features_schema`) of a batch of a precomputed detection pool."""
    n = batch.num_rows
    reasons: list[str | None] = [None] * n
    embeddings = check_vectors(batch.column("embedding").to_pylist(), "embedding", embedding_dim, reasons)
    sizes = image_sizes(batch, reasons)
    images = read_detections(batch.column("detections").to_pylist(), sizes, options, reasons)
    ok = np.array([r is None for r in reasons], dtype=bool)
    images = [d if ok[i] else None for i, d in enumerate(images)]
    columns: dict[str, pa.Array] = {
        "embedding": pa.array([embeddings[i].astype(np.float32) if ok[i] else None for i in range(n)],
                              pa.list_(pa.float32())),
        **detection_columns(images, options)}
    for name, axis in (("width", 0), ("height", 1)):
        columns[name] = pa.array([size[axis] if ok[i] and size is not None else None for i, size in enumerate(sizes)],
                                 pa.float64())
    return features_rows(batch, DETECTION_INPUT_COLUMNS, columns, run_id=run_id, reasons=reasons)
