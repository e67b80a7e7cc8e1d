"""``balance``: class quotas, so that the picks follow a target distribution over a column's values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from alray.detection.balance import OBJECT_CLASSES_COLUMN
from alray.strategies.base import Balancer, QuotaPlan

if TYPE_CHECKING:
    from alray.config import StrategyConfig


def balance_quotas(available: Mapping[str, int], n_select: int,
                   target: str | Mapping[str, float]) -> dict[str, int]:
    """How many samples of each class to select so that the selection follows ``target``.

    Parameters
    ----------
    available : candidates per class (classes named by strings)
    n_select : samples to select in total
    target : ``"uniform"``, ``"input"`` (as in ``available``) or ``{class: share}`` (classes
        compared as strings; an absent class gets no share)

    Returns
    -------
    dict class -> quota, each within one sample of ``share x n_select`` when the classes hold
    enough candidates; a class short of candidates gives its remainder to the others in
    proportion to their shares. The quotas never exceed ``available``.
    """
    classes = sorted(available)
    if isinstance(target, str):
        shares = {c: (1.0 if target == "uniform" else float(available[c])) for c in classes}
    else:
        shares = {c: float(target.get(c, 0.0)) for c in classes}
    quotas = {c: 0 for c in classes}
    left = min(n_select, sum(available[c] for c in classes if shares[c] > 0))
    open_classes = [c for c in classes if shares[c] > 0 and available[c] > 0]
    while left > 0 and open_classes:
        total = sum(shares[c] for c in open_classes)
        ideal = {c: left * shares[c] / total for c in open_classes}
        grant = {c: math.floor(ideal[c]) for c in open_classes}
        # largest remainders first (class order breaks ties) so the total is exact
        for c in sorted(open_classes, key=lambda c: (-(ideal[c] - grant[c]), c))[: left - sum(grant.values())]:
            grant[c] += 1
        for c in open_classes:
            give = min(grant[c], available[c] - quotas[c])
            quotas[c] += give
            left -= give
        open_classes = [c for c in open_classes if quotas[c] < available[c]]
    return quotas


def local_quotas(quotas: npt.ArrayLike, k_local: int, n_select: int) -> np.ndarray:
    """Per-partition share of global quotas: enough of each class for the global round to choose from."""
    counts = np.asarray(quotas, dtype=np.int64)
    if n_select <= 0:
        return np.zeros_like(counts)
    return np.array([math.ceil(int(q) * k_local / n_select) for q in counts], dtype=np.int64)


def _java_double(value: float) -> str:
    # Java's Double.toString, which Spark's cast of a double to string follows
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0 or 1e-3 <= abs(value) < 1e7:
        return repr(float(value))
    shortest = Decimal(repr(float(value)))
    digits = "".join(str(d) for d in shortest.as_tuple().digits).rstrip("0") or "0"
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{shortest.adjusted()}"


def class_labels(values: pa.Array | pa.ChunkedArray) -> list[str]:
    """The class of each row as the string Spark's ``cast(string)`` gives (the key of a balance target).

    Booleans are ``true``/``false``, doubles follow Java (``1.0``, ``1.0E-4``), nulls are ``None``.
    """
    kind = values.type
    python = values.to_pylist()
    if pa.types.is_boolean(kind):
        return ["None" if v is None else ("true" if v else "false") for v in python]
    if pa.types.is_floating(kind):
        return ["None" if v is None else _java_double(float(v)) for v in python]
    return [str(v) for v in python]


class Balance(Balancer):
    """Quotas per value of a column (usually ``predictions``): uniform, as in the input, or given shares."""

    name = "balance"
    inputs = "column_or_predictions"
    summary = "class quotas over a column or the predictions: uniform, as in the input, or given shares"

    def check(self, entry: StrategyConfig) -> None:
        if entry.input == OBJECT_CLASSES_COLUMN:  # what balance did on it before object_balance
            raise ValueError("balance on object_classes would balance images per composition; object_balance "
                             "balances their objects over the classes: {input: object_classes, strategy: "
                             "object_balance}")
        check_target(entry)

    def plan_quotas(self, entry: StrategyConfig, available: Mapping[str, int], n_select: int) -> QuotaPlan:
        """Picks allowed per class (:func:`balance_quotas`)."""
        return QuotaPlan(balance_quotas(available, n_select, entry.target))


def check_target(entry: StrategyConfig) -> None:
    """A balance target's shares must be non-negative with a positive sum."""
    target = entry.target
    if isinstance(target, dict) and (not target or any(v < 0 for v in target.values()) or sum(target.values()) <= 0):
        raise ValueError("balance target: expected non-negative shares with a positive sum")
