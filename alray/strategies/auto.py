"""``auto``: the budget-aware default, a choice among the strategies by the labeled set and the batch.

Which strategy wins depends on the budget (Hacohen et al., ICML 2022: typical samples at low
budgets, uncertainty at high ones) and on the batch size (large batches need their uncertainty
spread: Ash et al. 2020, Citovsky et al. 2021, Kirsch et al. 2023). ``auto`` reads the run's
figures once the filters have run and chooses, in this order:

1. ``typiclust`` (cold start) when the features hold no model output (no ``probs`` and no
   uncertainty score), or when a labeled set is given and fewer than ``COLD_START_PER_CLASS``
   of its samples per class are in the pool (classes: the width of ``probs``; labeled: the ids
   of ``labeled.path`` found in the features). Without a labeled set the budget is unknown and
   the model's scores are taken as informed (a model trained elsewhere);
2. ``cluster_margin`` on ``margin`` when the batch holds ``LARGE_BATCH_ROWS`` picks or more: the
   k-center and BADGE rounds cost picks x candidates, Cluster-Margin one pass;
3. ``badge`` when the batch is ``LARGE_BATCH_SHARE`` of the candidates or more and ``probs`` is
   there (uncertainty-weighted diversity, ``diversity`` x ``weights`` on ``bald``, without it);
4. otherwise the top of one uncertainty score, the first of ``margin``, ``entropy`` and ``bald``
   the features hold: with small batches the most uncertain samples are not redundant yet, and
   on the simulator top-k margin needed fewer labels than every diversified strategy.

The thresholds come from the simulator's figures (``benchmarks/RESULTS.md``, "Choosing by the
budget"); the choice and its reason are printed and recorded in the runs table (the strategy
label ``auto(...)`` and ``strategy_reason``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alray.strategies.base import EMBEDDINGS, Strategy

if TYPE_CHECKING:
    from alray.config import StrategyConfig

COLD_START_PER_CLASS = 5.0
LARGE_BATCH_ROWS = 10_000
LARGE_BATCH_SHARE = 0.05
UNCERTAINTY_ORDER = ("bald", "margin", "entropy")
SMALL_BATCH_ORDER = ("margin", "entropy", "bald")
# The columns whose presence the choice reads; a column of nulls only counts as absent.
MODEL_COLUMNS = ("probs", *UNCERTAINTY_ORDER)


@dataclass(frozen=True)
class Budget:
    """What the choice reads: labeled samples in the pool (None: no labeled set given), classes (0: unknown),
    candidates, batch, and the :data:`MODEL_COLUMNS` that hold values."""

    n_labeled: int | None
    n_classes: int
    n_candidates: int
    n_select: int
    columns: Sequence[str]


def choose(budget: Budget) -> tuple[list[dict[str, object]], str]:
    """The strategies ``auto`` stands for (``selection.strategies`` entries as dicts) and why."""
    uncertainty = next((c for c in UNCERTAINTY_ORDER if c in budget.columns), None)
    if uncertainty is None and "probs" not in budget.columns:
        return [{"input": EMBEDDINGS, "strategy": "typiclust"}], "no model scores in the features: cold start"
    if budget.n_labeled is None:
        per_class, budget_said = None, "no labeled set"
    else:
        per_class = budget.n_labeled / budget.n_classes if budget.n_classes else float(budget.n_labeled)
        budget_said = f"{per_class:.3g} labeled per class"
        if per_class < COLD_START_PER_CLASS:
            return ([{"input": EMBEDDINGS, "strategy": "typiclust"}],
                    f"{budget_said} (< {COLD_START_PER_CLASS:g}): cold start")
    if budget.n_select >= LARGE_BATCH_ROWS and "margin" in budget.columns:
        return ([{"input": "margin", "strategy": "cluster_margin"}],
                f"{budget_said}, batch of {budget.n_select:,} (>= {LARGE_BATCH_ROWS:,}): large batch at scale")
    share = budget.n_select / max(budget.n_candidates, 1)
    if share >= LARGE_BATCH_SHARE:
        large = f"{budget_said}, batch of {share:.1%} of the candidates (>= {LARGE_BATCH_SHARE:.0%}): large batch"
        if "probs" in budget.columns:
            return [{"input": EMBEDDINGS, "strategy": "badge"}], large
        if uncertainty is not None:
            return ([{"input": EMBEDDINGS, "strategy": "diversity"}, {"input": uncertainty, "strategy": "weights"}],
                    large)
    small = next((c for c in SMALL_BATCH_ORDER if c in budget.columns), None)
    if small is None:
        return [{"input": EMBEDDINGS, "strategy": "diversity"}], "no uncertainty score: diversity"
    return ([{"input": small, "strategy": "weights"}],
            f"{budget_said}, batch of {share:.1%} (< {LARGE_BATCH_SHARE:.0%}): the most uncertain by {small}")


class Auto(Strategy):
    """The budget-aware default (module docstring): resolved by the selection before it plans."""

    name = "auto"
    role = "auto"
    inputs = "embeddings"
    summary = "budget-aware default: typiclust, top-k margin, badge or cluster_margin by the labeled set and batch"

    def resolve(self, entry: StrategyConfig, budget: Budget) -> tuple[list[StrategyConfig], str]:
        """The entries ``entry`` stands for under ``budget``, and the reason."""
        from alray.config import StrategyConfig

        chosen, reason = choose(budget)
        return [StrategyConfig.model_validate(c) for c in chosen], reason
