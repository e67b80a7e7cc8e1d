"""Object-class balance at scale: the planner's time and how close the selected objects come to the target.

``python benchmarks/balance.py [--images N] [--classes C] [--picks K]`` (default 1,000,000 images, 80
classes, 10,000 picks): a detection pool's ``object_classes`` keys drawn with long-tailed classes
(class c's objects in proportion to 1 / (c + 1)) and 1 to 6 objects an image, counted per key as
the selection stage counts them; then :func:`alray.detection.balance.object_balance_plan` (what
``object_balance`` runs on the driver, the same for Spark and the local engine), timed. The core
meets the plan's image quotas per group; within a group it picks by diversity and the
objectives, which know nothing of the counts, so here a seeded random draw within each group
stands for those picks, and the selected set's objects per class are compared with the target
(uniform over the classes the pool holds): the L1 distance of the shares, and each class's gap to
its target in objects. The old planner (one group per composition) is timed on a 20,000-image pool
with 200 picks beside the new one, as the review measured it.

``--core-images N --core-picks K`` (default 100,000 and 1,000) also runs the selection core itself
(:func:`alray.selection.local.select_table`: diversity on random 8-dimensional embeddings with the
balance) on a pool of that size, and reports the same figures for its real picks.

JSON: ``benchmarks/results/balance.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from _measure import write_results

from alray.config import SelectionConfig
from alray.detection import balance
from alray.detection.balance import object_balance_plan, selected_object_counts
from alray.selection.local import select_table

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def pool_keys(n_images: int, n_classes: int, seed: int = 0) -> list[str]:
    """Each image's class key: 1 to 6 objects, class c drawn with weight 1 / (c + 1)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_classes + 1)
    sizes = rng.integers(1, 7, size=n_images)
    labels = rng.choice(n_classes, size=int(sizes.sum()), p=weights / weights.sum())
    keys = []
    start = 0
    for size in sizes.tolist():
        counts = Counter(labels[start: start + size].tolist())
        start += size
        keys.append(",".join(f"{c}:{counts[c]}" for c in sorted(counts)))
    return keys


def fidelity(picked: list[str], n_classes: int, largest_image: int) -> dict[str, float]:
    """How close the picked images' objects come to a uniform target over the classes."""
    counts = selected_object_counts(picked)
    total = sum(counts.values())
    got = np.array([counts.get(c, 0) for c in range(n_classes)], dtype=np.float64)
    gap = np.abs(got - total / n_classes)
    return {"objects": float(total), "l1_share_distance": float(np.abs(got / total - 1 / n_classes).sum()),
            "max_class_gap_objects": float(gap.max()), "median_class_gap_objects": float(np.median(gap)),
            "classes_within_one_image": int((gap <= largest_image).sum()),
            "min_class_objects": float(got.min()), "max_class_objects": float(got.max())}


def random_within_groups(keys: list[str], plan: balance.ObjectBalancePlan, seed: int = 0) -> list[str]:
    """The plan's quotas drawn at random within each group (a stand-in for the core's picks)."""
    rng = np.random.default_rng(seed)
    members: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(plan.group_of[key], []).append(i)
    picked: list[str] = []
    for group, quota in plan.quotas.items():
        if quota:
            rows = members[group]
            picked += [keys[rows[j]] for j in rng.choice(len(rows), size=quota, replace=False)]
    return picked


def plan_figures(n_images: int, n_classes: int, n_picks: int) -> dict[str, Any]:
    started = time.perf_counter()
    keys = pool_keys(n_images, n_classes)
    available = Counter(keys)
    built = time.perf_counter() - started
    started = time.perf_counter()
    plan = object_balance_plan(available, n_picks, "uniform")
    seconds = time.perf_counter() - started
    pool = selected_object_counts(keys)
    total = sum(pool.values())
    out = {"images": n_images, "classes": n_classes, "picks": n_picks, "keys": len(available),
           "pool_build_s": built, "plan_s": seconds, "grouping": plan.grouping, "groups": len(plan.quotas),
           "pool_l1_share_distance": float(sum(abs(pool.get(c, 0) / total - 1 / n_classes)
                                               for c in range(n_classes))),
           "picks_random_within_groups": fidelity(random_within_groups(keys, plan), n_classes, 6)}
    return out


def old_planner_figures(n_images: int = 20_000, n_classes: int = 80, n_picks: int = 200) -> dict[str, Any]:
    """The planner with one group per composition (the limit raised), as before this change."""
    keys = pool_keys(n_images, n_classes, seed=1)
    available = Counter(keys)
    saved = balance.MAX_COMPOSITIONS
    out: dict[str, Any] = {"images": n_images, "classes": n_classes, "picks": n_picks, "keys": len(available)}
    try:
        for name, limit in (("compositions", len(available)), ("scarcest_class", saved)):
            balance.MAX_COMPOSITIONS = limit
            started = time.perf_counter()
            plan = object_balance_plan(available, n_picks, "uniform")
            out[name] = {"plan_s": time.perf_counter() - started, "groups": len(plan.quotas),
                         "picks_random_within_groups": fidelity(random_within_groups(keys, plan), n_classes, 6)}
    finally:
        balance.MAX_COMPOSITIONS = saved
    return out


def core_figures(n_images: int, n_classes: int, n_picks: int) -> dict[str, Any]:
    """The selection core's own picks (local engine: diversity with the balance)."""
    keys = pool_keys(n_images, n_classes, seed=2)
    rng = np.random.default_rng(2)
    features = pa.table({"id": [f"img-{i:07d}" for i in range(n_images)],
                         "embedding": pa.array(list(rng.normal(size=(n_images, 8)).astype(np.float32)),
                                               pa.list_(pa.float32())),
                         "object_classes": keys})
    config = SelectionConfig(n_samples=n_picks, n_partitions=4, strategies=[
        {"input": "embeddings", "strategy": "diversity"},
        {"input": "object_classes", "strategy": "object_balance", "target": "uniform"}])
    started = time.perf_counter()
    ranking, _ = select_table(features, config, seed=0)
    seconds = time.perf_counter() - started
    key_of = dict(zip(features.column("id").to_pylist(), keys, strict=True))
    picked = [key_of[i] for i in ranking.filter(ranking.column("selected")).column("id").to_pylist()]
    plan = object_balance_plan(Counter(keys), n_picks, "uniform")
    groups = Counter(plan.group_of[k] for k in picked)
    return {"images": n_images, "classes": n_classes, "picks": n_picks, "select_s": seconds,
            "quotas_met": all(groups.get(g, 0) == q for g, q in plan.quotas.items()),
            "core_picks": fidelity(picked, n_classes, 6),
            "picks_random_within_groups": fidelity(random_within_groups(keys, plan), n_classes, 6)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print its figures and write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--picks", type=int, default=10_000)
    parser.add_argument("--core-images", type=int, default=100_000)
    parser.add_argument("--core-picks", type=int, default=1_000)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "balance.json")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"environment": {"cpu_count": os.cpu_count(),
                                               "load_average_1min_at_start": os.getloadavg()[0]}}
    results["plan"] = plan_figures(args.images, args.classes, args.picks)
    print("plan:", results["plan"])
    results["old_planner"] = old_planner_figures()
    print("old planner:", results["old_planner"])
    if args.core_images:
        results["core"] = core_figures(args.core_images, args.classes, args.core_picks)
        print("core:", results["core"])
    results["environment"]["load_average_1min_at_end"] = os.getloadavg()[0]
    write_results(args.output, results)
    return results


if __name__ == "__main__":
    main()
