"""Object-class balance: image quotas that bring the selected images' object counts to a target.

An image holds objects of several classes, so a quota per class cannot be met by counting
images. Images are grouped instead by what they hold, their class key (``0:2,3:1``: two objects
of class 0, one of class 3; :func:`alray.detection.scores.class_key`); every image of a group
adds the same counts. The quotas are images per group: starting from none, each of the
``n_select`` steps grants one more image to the group that brings the selection's object shares
closest to the target (L1 distance; ties: the group with more objects, then the key), while the
group has candidates left; images without objects come last, when no other candidate is left.
The selection core then meets these quotas exactly, as it meets any class quotas, so the
selected set's object counts are the ones planned here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from alray.detection.scores import parse_class_key

#: The features column the object-class balance groups by.
OBJECT_CLASSES_COLUMN = "object_classes"


def target_shares(counts: np.ndarray, available: np.ndarray, classes: list[int],
                  target: str | Mapping[str, float]) -> np.ndarray:
    """The target share of each class (C,): ``uniform`` over the classes the candidates hold, ``input``
    as the candidates' objects are spread, or ``{class id: share}`` (ids as strings; absent: 0)."""
    if target == "uniform":
        present = (counts * available[:, None]).sum(axis=0) > 0
        shares = present.astype(np.float64)
    elif target == "input":
        shares = (counts * available[:, None]).sum(axis=0).astype(np.float64)
    else:
        assert isinstance(target, Mapping)
        shares = np.array([float(target.get(str(c), 0.0)) for c in classes])
    total = shares.sum()
    return shares / total if total > 0 else shares


def object_balance_quotas(available: Mapping[str, int], n_select: int,
                          target: str | Mapping[str, float]) -> dict[str, int]:
    """Images to select per class key so that their objects follow ``target`` (see the module docstring).

    Parameters
    ----------
    available : candidates per class key
    n_select : images to select in total
    target : ``"uniform"``, ``"input"`` or ``{class id: share}``

    Returns
    -------
    dict key -> quota, summing to ``min(n_select, candidates)``, never above ``available``.
    """
    keys = sorted(available)
    parsed = [parse_class_key(k) if k not in ("None", "") else {} for k in keys]
    classes = sorted({c for p in parsed for c in p})
    index = {c: j for j, c in enumerate(classes)}
    counts = np.zeros((len(keys), max(len(classes), 1)))
    for g, p in enumerate(parsed):
        for c, k in p.items():
            counts[g, index[c]] = k
    room = np.array([available[k] for k in keys], dtype=np.int64)
    shares = target_shares(counts, room, classes, target) if classes else np.zeros(1)
    if not classes:
        shares = np.zeros(counts.shape[1])
    size = counts.sum(axis=1)
    # ties: more objects first, then the key's order (np.lexsort's last key is the primary one)
    tie_order = np.lexsort((np.arange(len(keys)), -size))
    rank = np.empty(len(keys), dtype=np.int64)
    rank[tie_order] = np.arange(len(keys))
    quotas = np.zeros(len(keys), dtype=np.int64)
    selected = np.zeros(counts.shape[1])
    for _ in range(min(n_select, int(room.sum()))):
        open_groups = np.flatnonzero(quotas < room)
        after = selected[None, :] + counts[open_groups]
        totals = after.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            distance = np.abs(after / totals[:, None] - shares[None, :]).sum(axis=1)
        # a selection with no object yet is as far as can be from any target; an image without objects
        # comes last: it adds nothing to balance
        distance = np.where(totals > 0, distance, 2.0)
        distance = np.where(size[open_groups] > 0, distance, np.inf)
        best = open_groups[np.lexsort((rank[open_groups], np.round(distance, 12)))[0]]
        quotas[best] += 1
        selected += counts[best]
    return {k: int(q) for k, q in zip(keys, quotas, strict=True)}


def selected_object_counts(keys: list[str]) -> dict[int, int]:
    """Objects per class of images with these class keys."""
    total: dict[int, int] = {}
    for key in keys:
        for c, k in parse_class_key(key).items():
            total[c] = total.get(c, 0) + k
    return total
