"""``object_balance``: quotas on a detection run's images so that the selected images' objects follow a
target distribution over the object classes (:mod:`alray.detection.balance` plans them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from alray.detection.balance import OBJECT_CLASSES_COLUMN, object_balance_plan
from alray.strategies.balance import check_target
from alray.strategies.base import Balancer, QuotaPlan

if TYPE_CHECKING:
    from alray.config import StrategyConfig


class ObjectBalance(Balancer):
    """Image quotas per group of ``object_classes`` keys, planned so that the picked objects follow the target."""

    name = "object_balance"
    inputs = "column"
    summary = ("detection: quotas on images so that their objects follow a target over the object classes "
               "(input object_classes): uniform, as in the input, or {class id: share}")

    def check(self, entry: StrategyConfig) -> None:
        if entry.input != OBJECT_CLASSES_COLUMN:
            raise ValueError(f"object_balance reads a detection run's {OBJECT_CLASSES_COLUMN!r}, got input "
                             f"{entry.input!r}; balance balances any other column")
        target = entry.target
        if isinstance(target, dict) and not all(k.lstrip("-").isdigit() for k in target):
            raise ValueError(f"object_balance target: expected class ids as keys, got {sorted(target)}")
        check_target(entry)

    def plan_quotas(self, entry: StrategyConfig, available: Mapping[str, int], n_select: int) -> QuotaPlan:
        """Picks allowed per group of class keys (:func:`~alray.detection.balance.object_balance_plan`)."""
        plan = object_balance_plan(available, n_select, entry.target)
        return QuotaPlan(plan.quotas, plan.group_of)
