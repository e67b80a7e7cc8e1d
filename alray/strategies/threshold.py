"""``threshold``: keep only candidates whose score or column passes a comparison."""

from __future__ import annotations

from typing import TYPE_CHECKING

from alray.strategies.base import Filter

if TYPE_CHECKING:
    from alray.config import FilterConfig, StrategyConfig

# The config's operation names as comparison operators.
THRESHOLD_OPS: dict[str, str] = {"bigger": ">", "bigger_equal": ">=", "smaller": "<", "smaller_equal": "<="}


class Threshold(Filter):
    """A hard condition: ``input operation threshold``, e.g. ``bald bigger 0.1``."""

    name = "threshold"
    inputs = "column_or_predictions"
    summary = "keep candidates whose column compares to a threshold (bigger, smaller, ...)"

    def check(self, entry: StrategyConfig) -> None:
        if entry.threshold is None or entry.operation is None:
            raise ValueError("strategy 'threshold' needs threshold and operation")

    def describe(self, entry: StrategyConfig) -> str:
        return f"threshold:{entry.input}{THRESHOLD_OPS[entry.operation or 'bigger']}{entry.threshold:g}"

    def as_filter(self, entry: StrategyConfig, column: str) -> FilterConfig:
        from alray.config import FilterConfig

        return FilterConfig(column=column, op=THRESHOLD_OPS[entry.operation or "bigger"], value=entry.threshold)
