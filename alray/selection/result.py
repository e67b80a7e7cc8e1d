"""What a selection did: the counts and figures of one run of the selection, on any engine."""

from __future__ import annotations

from dataclasses import dataclass, field

LABELED_REASON = "labeled"
PREVIOUS_REASON = "selected_before"


@dataclass
class SelectResult:
    """Counts and figures of the selection."""

    n_features: int
    n_candidates: int
    n_selected: int
    n_filtered: int
    filtered_by_reason: dict[str, int] = field(default_factory=dict)
    n_labeled_in_pool: int = 0
    coverage_radius: float | None = None
    strategy: str = ""
    stop_reason: str = ""
    details: dict[str, float] = field(default_factory=dict)  # a selector's figures (probcover's delta, ...)
    strategy_reason: str | None = None  # why ``auto`` chose the strategy
