"""Object-class balance: image quotas that bring the selected images' object counts to a target.

An image holds objects of several classes, so a quota per class cannot be met by counting
images. Images are grouped instead, and the selection core meets image quotas per group:

- **compositions**, when the candidates hold at most :data:`MAX_COMPOSITIONS` class keys (``0:2,3:1``:
  two objects of class 0, one of class 3; :func:`alray.detection.scores.class_key`): a group is
  one key, every image of it adds the same counts, so the planned object counts are the selected
  set's, each class within one image's objects of its target when the pool allows it;
- **scarcest class**, beyond (with tens of classes almost every image is a composition of its
  own, and quotas per composition would name the picks themselves, leaving nothing for the
  diversity and the objectives to choose): an image's group is, of the classes it holds that
  the target wants, the one whose candidate objects are fewest for its share, together with how
  many other objects it holds (0, 1, 2, or :data:`MAX_OTHER_OBJECTS` and more); images holding
  none of the wanted classes form one group of their own. A group's images add its mean objects
  per image, so the selected counts follow the plan as closely as the core's picks within a
  group follow that mean (``benchmarks/balance.py`` measures how closely).

The plan, either way: starting from none, each of the ``n_select`` steps grants one more image to
the group that brings the selection's object shares closest to the target (L1 distance; ties:
the group with more objects per image, then its key), while the group has candidates left;
images without objects come last, when no other candidate is left. It costs ``n_select`` x
groups x classes, the groups being at most :data:`MAX_COMPOSITIONS` or 4 x classes + 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from alray.detection.scores import parse_class_key

#: The features column the object-class balance groups by.
OBJECT_CLASSES_COLUMN = "object_classes"
#: The most class keys planned as groups of their own (compositions); beyond, images are grouped by
#: their scarcest class.
MAX_COMPOSITIONS = 64
#: Other objects an image may hold beside its scarcest class's before it joins that class's group of
#: images with that many or more: the planner can prefer images that bring little else.
MAX_OTHER_OBJECTS = 3
#: The group of the images without objects.
NO_OBJECTS_GROUP = ""
#: The group of the images whose classes the target gives no share (scarcest-class grouping).
UNWANTED_GROUP = "other"


@dataclass(frozen=True)
class ObjectBalancePlan:
    """Each class key's group, the images to select per group, and how the groups were formed
    (``compositions`` or ``scarcest class``)."""

    group_of: dict[str, str]
    quotas: dict[str, int]
    grouping: str


@dataclass(frozen=True)
class _Keys:
    """Class keys parsed: per key its candidates, and its objects as sparse (key, class, count) entries."""

    keys: list[str]
    available: np.ndarray  # (K,)
    classes: np.ndarray  # (C,) the class ids present, ascending
    entry_key: np.ndarray  # (E,) index into keys
    entry_class: np.ndarray  # (E,) index into classes
    entry_count: np.ndarray  # (E,) objects

    def supply(self) -> np.ndarray:
        """The candidates' objects per class (C,)."""
        return np.bincount(self.entry_class, weights=self.entry_count * self.available[self.entry_key],
                           minlength=len(self.classes))


def _parse(available: Mapping[str, int]) -> _Keys:
    keys = sorted(available)
    entry_key: list[int] = []
    entry_label: list[int] = []
    entry_count: list[int] = []
    for k, key in enumerate(keys):
        if key == "None":  # a null key (never in practice): no objects known
            continue
        for label, count in parse_class_key(key).items():
            entry_key.append(k)
            entry_label.append(label)
            entry_count.append(count)
    labels = np.asarray(entry_label, dtype=np.int64)
    classes, entry_class = np.unique(labels, return_inverse=True)
    return _Keys(keys, np.array([available[k] for k in keys], dtype=np.int64), classes,
                 np.asarray(entry_key, dtype=np.int64), entry_class.astype(np.int64),
                 np.asarray(entry_count, dtype=np.float64))


def target_shares(supply: np.ndarray, classes: np.ndarray, target: str | Mapping[str, float]) -> np.ndarray:
    """The target share of each class (C,): ``uniform`` over the classes the candidates hold, ``input``
    as the candidates' objects are spread, or ``{class id: share}`` (ids as strings; absent: 0)."""
    if target == "uniform":
        shares = (supply > 0).astype(np.float64)
    elif target == "input":
        shares = supply.astype(np.float64)
    else:
        assert isinstance(target, Mapping)
        shares = np.array([float(target.get(str(c), 0.0)) for c in classes])
    total = shares.sum()
    return shares / total if total > 0 else shares


def _scarcest_class_groups(parsed: _Keys, shares: np.ndarray) -> list[str]:
    """Each key's group: ``CLASS+OTHERS``, its scarcest wanted class and its other objects (at most
    :data:`MAX_OTHER_OBJECTS`), or :data:`UNWANTED_GROUP`, or :data:`NO_OBJECTS_GROUP`."""
    with np.errstate(divide="ignore"):
        scarcity = np.where(shares > 0, parsed.supply() / np.where(shares > 0, shares, 1.0), np.inf)
    n_keys = len(parsed.keys)
    group_class = np.full(n_keys, -1, dtype=np.int64)  # -1: no wanted class (or no objects)
    own = np.zeros(n_keys)
    if len(parsed.entry_key):
        wanted = np.isfinite(scarcity[parsed.entry_class])
        order = np.lexsort((parsed.entry_class, scarcity[parsed.entry_class], parsed.entry_key))
        order = order[wanted[order]]
        if len(order):
            first = order[np.r_[True, parsed.entry_key[order][1:] != parsed.entry_key[order][:-1]]]
            group_class[parsed.entry_key[first]] = parsed.entry_class[first]
            own[parsed.entry_key[first]] = parsed.entry_count[first]
    objects = np.bincount(parsed.entry_key, weights=parsed.entry_count, minlength=n_keys)
    others = np.minimum(objects - own, MAX_OTHER_OBJECTS).astype(np.int64)
    return [f"{int(parsed.classes[g])}+{others[k]}" if g >= 0
            else (UNWANTED_GROUP if objects[k] > 0 else NO_OBJECTS_GROUP) for k, g in enumerate(group_class)]


def object_balance_plan(available: Mapping[str, int], n_select: int,
                        target: str | Mapping[str, float]) -> ObjectBalancePlan:
    """Images to select per group of class keys so that their objects follow ``target`` (see the module
    docstring).

    Parameters
    ----------
    available : candidates per class key
    n_select : images to select in total
    target : ``"uniform"``, ``"input"`` or ``{class id: share}``

    Returns
    -------
    ObjectBalancePlan: every key's group; quotas per group summing to ``min(n_select, candidates)``,
    none above the group's candidates.
    """
    parsed = _parse(available)
    n_keys, n_classes = len(parsed.keys), max(len(parsed.classes), 1)
    shares = target_shares(parsed.supply(), parsed.classes, target) if len(parsed.classes) else np.zeros(1)
    if n_keys <= MAX_COMPOSITIONS:
        grouping, key_group = "compositions", list(parsed.keys)
    else:
        grouping, key_group = "scarcest class", _scarcest_class_groups(parsed, shares)
    groups = sorted(set(key_group))
    index = {g: i for i, g in enumerate(groups)}
    member = np.array([index[g] for g in key_group], dtype=np.int64)
    room = np.bincount(member, weights=parsed.available, minlength=len(groups)).astype(np.int64)
    # every candidate's objects, summed per group and class
    cell = member[parsed.entry_key] * n_classes + parsed.entry_class
    objects = np.bincount(cell, weights=parsed.entry_count * parsed.available[parsed.entry_key],
                          minlength=len(groups) * n_classes).reshape(len(groups), n_classes)
    per_image = objects / np.maximum(room, 1)[:, None]
    quotas = _greedy_quotas(per_image, room, shares, n_select, groups)
    return ObjectBalancePlan(group_of=dict(zip(parsed.keys, key_group, strict=True)),
                             quotas={g: int(q) for g, q in zip(groups, quotas, strict=True)}, grouping=grouping)


def _greedy_quotas(per_image: np.ndarray, room: np.ndarray, shares: np.ndarray, n_select: int,
                   groups: list[str]) -> np.ndarray:
    """Images per group (G,): each step grants one image to the group whose objects per image (G, C) bring
    the selection's shares closest to ``shares``, while it has ``room``."""
    size = per_image.sum(axis=1)
    # ties: more objects first, then the group's order (np.lexsort's last key is the primary one)
    tie_order = np.lexsort((np.arange(len(groups)), -size))
    rank = np.empty(len(groups), dtype=np.int64)
    rank[tie_order] = np.arange(len(groups))
    quotas = np.zeros(len(groups), dtype=np.int64)
    selected = np.zeros(per_image.shape[1])
    for _ in range(min(n_select, int(room.sum()))):
        open_groups = np.flatnonzero(quotas < room)
        after = selected[None, :] + per_image[open_groups]
        totals = after.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            distance = np.abs(after / totals[:, None] - shares[None, :]).sum(axis=1)
        # a selection with no object yet is as far as can be from any target; an image without objects
        # comes last: it adds nothing to balance
        distance = np.where(totals > 0, distance, 2.0)
        distance = np.where(size[open_groups] > 0, distance, np.inf)
        best = open_groups[np.lexsort((rank[open_groups], np.round(distance, 12)))[0]]
        quotas[best] += 1
        selected += per_image[best]
    return quotas


def selected_object_counts(keys: list[str]) -> dict[int, int]:
    """Objects per class of images with these class keys."""
    total: dict[int, int] = {}
    for key in keys:
        for c, k in parse_class_key(key).items():
            total[c] = total.get(c, 0) + k
    return total
