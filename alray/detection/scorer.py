"""Score one batch of pool images for a detection run: detections, their scores, the image embedding,
image quality and, for object-level selection, each object's crop. What a scoring actor calls on
the batches Ray tasks decoded (:func:`~alray.inference.decode_batch`); nothing here knows Ray.

The detections come from a detector (:class:`~alray.models.detector.DetectorModel`; its boxes,
in pixels of the S x S model input, are scaled to the image's pixels) or, without one, from the
pool's ``detections`` column, checked against the decoded image. The image embedding is the
detector's (its ``embedding`` output, else its ``embed``), else an encoder's (a
:class:`~alray.models.contract.TaskModel`, e.g. the self-supervised one of ``embed``), else the
image's object profile (per class: the objects and the sum of their scores). A crop is cut from
the model input and embedded by the detector's per-object ``features``, else by the detector's
``embed`` or the encoder on the crop resized to S x S, else by its 4 x 4 thumbnail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from alray.detection.boxes import Detections, scale_boxes
from alray.detection.columns import DetectionOptions, detection_columns
from alray.detection.objects import OBJECTS_COLUMN, OBJECTS_TYPE
from alray.detection.precomputed import read_detections
from alray.detection.scores import object_class_scores, object_stability
from alray.inference import (
    MIN_MODEL_ROWS,
    MODEL_INPUT,
    POOL_COPY_PREFIX,
    InputSpec,
    ScoringOptions,
    decode_batch,
    decoded_inputs,
)
from alray.models import TaskModel, id_keys, sample_seeds
from alray.models.detector import DetectorModel, DetectorOutput
from alray.quality import statistics_of
from alray.tables import IMAGE_COLUMNS, REJECT_REASON, features_rows

# The pool's image size columns (a detection pool's; decoding measures them too).
SIZE_COLUMNS = ("width", "height")
# Side of the thumbnail that embeds a crop when nothing else can.
THUMBNAIL_SIDE = 4


@dataclass
class _Found:
    """What the batch's usable images gave: their detections in image pixels and in model-input pixels,
    the sample passes, the object features and the image embeddings."""

    detections: list[Detections]
    input_boxes: list[np.ndarray]
    samples: list[list[Detections]] | None
    features: list[np.ndarray | None]
    embedding: np.ndarray | None


def _kept(detections: Detections, options: DetectionOptions) -> np.ndarray:
    """Rows of the objects scored at least the threshold, the best ``max_objects``, by descending score. A
    box without area (a detector's box beyond the input, clipped to its edge) is no object: dropped."""
    order = np.argsort(-detections.scores, kind="stable")
    boxes = detections.boxes[order]
    has_area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    order = order[(detections.scores[order] >= options.score_threshold) & has_area]
    return order[: options.max_objects]


def _padded(x: torch.Tensor) -> torch.Tensor:
    # As for classification: CPU kernels pick other code paths for a handful of rows, so every
    # call sees at least MIN_MODEL_ROWS and a sample's outputs do not depend on its batch.
    if x.shape[0] >= MIN_MODEL_ROWS:
        return x
    return torch.cat([x, torch.zeros((MIN_MODEL_ROWS - x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)])


def _detect(detector: DetectorModel, x: torch.Tensor, sizes: np.ndarray, ids: Sequence[str],
            options: ScoringOptions, detection: DetectionOptions) -> tuple[_Found, list[str | None]]:
    n = x.shape[0]
    out: DetectorOutput = detector.detect(_padded(x))
    side = float(detector.image_size)
    reasons: list[str | None] = [None] * n
    detections, input_boxes, features = [], [], []
    for i in range(n):
        found = out.detections[i]
        keep = _kept(found, detection)
        found = found.take(keep)
        feats = out.features[i]
        if not (np.isfinite(found.boxes).all() and np.isfinite(found.scores).all()) or (
                found.probs is not None and not np.isfinite(found.probs).all()):
            reasons[i] = "model: non-finite output"
        elif len(found) and (found.labels.min() < 0 or found.labels.max() >= detector.n_classes):
            reasons[i] = f"model: class id {int(found.labels.max())} outside 0..{detector.n_classes - 1}"
        detections.append(Detections(scale_boxes(found.boxes, sizes[i, 0] / side, sizes[i, 1] / side),
                                     found.labels, np.clip(found.scores, 0.0, 1.0), found.probs))
        input_boxes.append(found.boxes)
        features.append(None if feats is None else feats[keep])
    samples = None
    if detection.samples != "none":
        seeds = sample_seeds(id_keys(ids), seed=options.seed)
        # a mirrored pass is one batch pass, padded as the reference pass is; MC dropout runs each image alone
        flipped = detection.samples == "hflip"
        passes = detector.detect_passes(_padded(x) if flipped else x, seeds, options.mc_samples,
                                        detection.samples)[:n]
        samples = [[Detections(scale_boxes(p.boxes, sizes[i, 0] / side, sizes[i, 1] / side), p.labels, p.scores,
                               p.probs).take(_kept(p, detection)) for p in image_passes]
                   for i, image_passes in enumerate(passes)]
    embedding = out.embedding[:n] if out.embedding is not None else None
    return _Found(detections, input_boxes, samples, features, embedding), reasons


def _from_pool(values: list[object], sizes: np.ndarray, side: int,
               detection: DetectionOptions) -> tuple[_Found, list[str | None]]:
    reasons: list[str | None] = [None] * len(values)
    checked = read_detections(values, [(float(w), float(h)) for w, h in sizes], detection, reasons)
    detections = [d if d is not None else Detections.empty() for d in checked]
    input_boxes = [scale_boxes(d.boxes, side / sizes[i, 0], side / sizes[i, 1]) for i, d in enumerate(detections)]
    return _Found(detections, input_boxes, None, [None] * len(values), None), reasons


def profile_embedding(detections: Sequence[Detections], n_classes: int) -> np.ndarray:
    """Per image (N, 2 C): the objects of each class and the sum of their scores; a label outside
    0..C-1 (a row the scorer rejects) adds nothing."""
    out = np.zeros((len(detections), 2 * n_classes), dtype=np.float32)
    for i, d in enumerate(detections):
        inside = (d.labels >= 0) & (d.labels < n_classes)
        np.add.at(out[i], d.labels[inside], 1.0)
        np.add.at(out[i], n_classes + d.labels[inside], d.scores[inside])
    return out


def _image_embeddings(found: _Found, x: torch.Tensor, embedder: TaskModel | DetectorModel | None,
                      n_classes: int) -> np.ndarray:
    """The images' embeddings (B, D): the detector's output, else the embedder's, else the object profile
    (2 ``n_classes`` wide, the detector's classes, whatever labels the batch holds)."""
    if found.embedding is not None:
        return found.embedding
    if embedder is not None:
        return _encode(embedder, x)
    return profile_embedding(found.detections, n_classes)


def _encode(encoder: TaskModel | DetectorModel, x: torch.Tensor) -> np.ndarray:
    n = x.shape[0]
    with torch.no_grad():
        values = encoder.embed(_padded(x)) if isinstance(encoder, DetectorModel) else encoder.encode(_padded(x))[0]
    return values[:n].float().cpu().numpy()


def _crops(x: torch.Tensor, boxes: np.ndarray) -> tuple[list[np.ndarray], torch.Tensor]:
    """The crops of one input (C, S, S) at ``boxes`` (K, 4, input pixels): as 0..255 arrays (h, w[, 3])
    for the quality metrics, and resized to S x S (K, C, S, S) for an encoder."""
    side = x.shape[-1]
    pixels, resized = [], []
    for box in boxes:
        x0, y0 = int(np.clip(np.floor(box[0]), 0, side - 1)), int(np.clip(np.floor(box[1]), 0, side - 1))
        x1, y1 = int(np.clip(np.ceil(box[2]), x0 + 1, side)), int(np.clip(np.ceil(box[3]), y0 + 1, side))
        crop = x[:, y0:y1, x0:x1]
        array = (crop.permute(1, 2, 0).cpu().numpy() * 255.0)
        pixels.append(array[..., 0] if array.shape[2] == 1 else array)
        resized.append(F.interpolate(crop[None], size=(side, side), mode="bilinear", align_corners=False)[0])
    return pixels, (torch.stack(resized) if resized else torch.zeros((0, *x.shape)))


def _objects(x: torch.Tensor, found: _Found, sizes: np.ndarray, encoder: TaskModel | DetectorModel | None,
             detection: DetectionOptions) -> list[list[dict[str, object]]]:
    """Each image's object structs (:data:`~alray.detection.objects.OBJECT_STRUCT`)."""
    rows: list[list[dict[str, object]]] = []
    for i, image in enumerate(found.detections):
        pixels, resized = _crops(x[i], found.input_boxes[i])
        given = found.features[i]
        if given is not None:
            embeddings = np.asarray(given, dtype=np.float32)
        elif encoder is not None and len(image):
            embeddings = _encode(encoder, resized)
        else:
            embeddings = F.adaptive_avg_pool2d(resized, THUMBNAIL_SIDE).flatten(1).cpu().numpy()
        class_scores = object_class_scores(image.probs) if image.probs is not None else None
        stability = disagreement = None
        if found.samples is not None:
            stability, disagreement = object_stability(image, found.samples[i], detection.match_iou)
        area = float(sizes[i, 0] * sizes[i, 1])
        objects = []
        for k in range(len(image)):
            box = image.boxes[k]
            quality = statistics_of(pixels[k]).quality
            objects.append({
                "object_index": k, "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3],
                "pred": int(image.labels[k]), "confidence": float(image.scores[k]),
                "probs": None if image.probs is None else image.probs[k].tolist(),
                **{name: None if class_scores is None else float(class_scores[name][k])
                   for name in ("entropy", "margin", "least_confidence")},
                "box_instability": None if stability is None else 1.0 - float(stability[k]),
                "class_disagreement": None if disagreement is None else float(disagreement[k]),
                "embedding": embeddings[k].tolist(),
                "sharpness": quality["sharpness"], "luminance": quality["luminance"],
                "contrast": quality["contrast"], "box_width": float(box[2] - box[0]),
                "box_height": float(box[3] - box[1]),
                "area_fraction": float((box[2] - box[0]) * (box[3] - box[1])) / area if area else 0.0,
            })
        rows.append(objects)
    return rows


def score_detection_batch(batch: pa.Table, options: ScoringOptions, detection: DetectionOptions, *,
                          detector: DetectorModel | None = None, encoder: TaskModel | None = None) -> pa.Table:
    """Score a batch of pool images for a detection run: :func:`~alray.inference.decode_batch` then
    :func:`score_detection_decoded`, in this process.

    ``batch`` holds ``id``, an image payload (``image`` or ``uri``), metadata and, without a
    detector, a ``detections`` column; ``detector`` or ``encoder`` as :func:`score_detection_decoded`.
    """
    model = detector if detector is not None else encoder
    if model is None:
        raise ValueError("score_detection_batch needs a detector or an encoder")
    decoded = decode_batch(batch, InputSpec.of(model), options)  # type: ignore[arg-type]
    return score_detection_decoded(decoded, options, detection, detector=detector, encoder=encoder)


# The decoded batch's columns that are no pool metadata (the pool's own image size among them).
_DECODED = (MODEL_INPUT, REJECT_REASON, *IMAGE_COLUMNS, "channel_mean", "channel_std",
            *(POOL_COPY_PREFIX + name for name in SIZE_COLUMNS))
# How far (pixels) a pool's stated image size may be from the decoded one.
SIZE_TOLERANCE = 0.5


def check_pool_sizes(decoded: pa.Table, reasons: list[str | None]) -> None:
    """Give a reason to each decoded row whose pool ``width`` / ``height`` (what ``alray import-predictions``
    writes) differ from the decoded image's: its detections are in pixels of another image (an EXIF
    rotation, a JPEG that ``score.max_image_pixels`` reduced, a wrong size column)."""
    stated = [POOL_COPY_PREFIX + name for name in SIZE_COLUMNS]
    if not all(name in decoded.column_names for name in stated):
        return
    pool_w, pool_h = (decoded.column(name).to_pylist() for name in stated)
    image_w, image_h = (decoded.column(name).to_pylist() for name in SIZE_COLUMNS)
    for i, (pw, ph, w, h) in enumerate(zip(pool_w, pool_h, image_w, image_h, strict=True)):
        if reasons[i] is not None or pw is None or ph is None or w is None or h is None:
            continue
        try:
            differ = abs(float(pw) - w) > SIZE_TOLERANCE or abs(float(ph) - h) > SIZE_TOLERANCE
            stated_size = f"{float(pw):g} x {float(ph):g}"
        except (TypeError, ValueError, OverflowError):
            differ, stated_size = True, f"{pw!r} x {ph!r}"
        if differ:
            reasons[i] = (f"width, height: the pool says {stated_size}, the image decodes to {w:g} x {h:g}; "
                          "the detections' pixels are another image's")


def score_detection_decoded(decoded: pa.Table, options: ScoringOptions, detection: DetectionOptions, *,
                            detector: DetectorModel | None = None, encoder: TaskModel | None = None) -> pa.Table:
    """Score a batch of images that :func:`~alray.inference.decode_batch` decoded for a detection run.

    Parameters
    ----------
    decoded : the decoded rows: ``id``, the model inputs, reject reasons, image metrics, the pool's
        metadata; without a detector, its ``detections`` column
    options : the scoring options (payload, seed, MC samples, run id)
    detection : how detections are read, scored and cropped
    detector, encoder : a detector (in eval mode, on ``options.device``), or an encoder that
        embeds images while the detections come from the pool; at least one

    Returns
    -------
    pyarrow.Table with :func:`~alray.tables.features_schema` (the classification columns null),
    plus the :data:`~alray.detection.objects.OBJECTS_COLUMN` of each image's objects when
    ``detection.objects``; rows that could not be used hold nulls and a reject reason.
    """
    model = detector if detector is not None else encoder
    if model is None:
        raise ValueError("score_detection_decoded needs a detector or an encoder")
    ids = [str(i) for i in decoded.column("id").to_pylist()]
    n = len(ids)
    reasons: list[str | None] = decoded.column(REJECT_REASON).to_pylist()
    check_pool_sizes(decoded, reasons)
    ok = np.array([r is None for r in reasons], dtype=bool)
    good = np.flatnonzero(ok)
    quality = {name: decoded.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
               for name in IMAGE_COLUMNS}
    sizes = np.stack([quality["width"][good], quality["height"][good]], axis=1)
    images: list[Detections | None] = [None] * n
    samples: list[list[Detections]] | None = None
    objects: list[list[dict[str, object]] | None] = [None] * n
    embedding = np.zeros((0, 0), dtype=np.float32)
    if len(good):
        device = torch.device(options.device)
        x = torch.from_numpy(decoded_inputs(decoded, InputSpec.of(model))).to(device)  # type: ignore[arg-type]
        if detector is not None:
            found, faults = _detect(detector, x, sizes, [ids[i] for i in good], options, detection)
        else:
            column = decoded.column("detections").to_pylist()
            found, faults = _from_pool([column[i] for i in good], sizes, model.image_size, detection)
        for j, fault in enumerate(faults):
            if fault is not None:
                reasons[int(good[j])] = fault
        # what embeds images and crops when the detector's outputs do not: its embed, else the encoder
        embedder: TaskModel | DetectorModel | None = (
            detector if detector is not None and detector.can_embed else encoder)
        # no embedder: a detector without embeddings, whose class count sizes the object profile
        embedding = _image_embeddings(found, x, embedder, detector.n_classes if detector is not None else 0)
        per_image = _objects(x, found, sizes, embedder, detection) if detection.objects else None
        if found.samples is not None:
            samples = [[] for _ in range(n)]
        for j, i in enumerate(good.tolist()):
            if reasons[i] is None:
                images[i] = found.detections[j]
                if per_image is not None:
                    objects[i] = per_image[j]
                if samples is not None and found.samples is not None:
                    samples[i] = found.samples[j]
    usable = np.array([r is None for r in reasons], dtype=bool)
    rows: list[np.ndarray | None] = [None] * n
    for j, i in enumerate(good.tolist()):
        if usable[i]:
            rows[i] = embedding[j].astype(np.float32)
    columns: dict[str, pa.Array] = {"embedding": pa.array(rows, pa.list_(pa.float32())),
                                    **detection_columns(images, detection, samples)}
    for name in IMAGE_COLUMNS:
        columns[name] = pa.array(quality[name], pa.float64(), mask=~usable)
    for name in ("channel_mean", "channel_std"):
        values = decoded.column(name).to_pylist()
        columns[name] = pa.array([v if usable[i] else None for i, v in enumerate(values)], pa.list_(pa.float32()))
    table = features_rows(decoded, (*_DECODED, "detections"), columns, run_id=options.run_id, reasons=reasons)
    if detection.objects:  # staged beside the features; the commit splits them into the objects table
        table = table.add_column(table.num_columns - 1, OBJECTS_COLUMN, pa.array(
            [o if usable[i] else None for i, o in enumerate(objects)], OBJECTS_TYPE))
    return table
