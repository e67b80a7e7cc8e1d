"""The public Python API: selection and scoring on a pandas DataFrame or an Arrow table, no YAML, no lake.

>>> import alray
>>> ranking = alray.select(features, n_samples=500, strategies=["diversity", "weights:bald"])  # doctest: +SKIP
>>> picks = ranking[ranking.selected].id  # doctest: +SKIP

:func:`select` runs the selection core on this machine with the Spark stage's partition hash,
so it picks what ``alray select`` would pick from the same features table. For data that
already lives on an engine, :func:`alray.spark.select_dataframe` and
:func:`alray.ray.score_dataset` are the variants the CLI stages run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pydantic import ValidationError

from alray.config import SelectionConfig, StrategyConfig, _format_validation_error
from alray.errors import ConfigError, InputError
from alray.selection.local import select_table
from alray.selection.result import LABELED_REASON
from alray.strategies.base import EMBEDDINGS
from alray.tables import REJECT_REASON

if TYPE_CHECKING:
    import pandas as pd

    from alray.models import TaskModel


def _arrow(table: Any, name: str) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(table, pd.DataFrame):
        return pa.Table.from_pandas(table, preserve_index=False)
    raise InputError(f"{name}: expected a pandas DataFrame or a pyarrow Table, got {type(table).__name__}")


def _short_form(spec: str) -> dict[str, str]:
    """``"weights:bald"`` as an entry mapping; a bare ``"diversity"`` reads the embeddings."""
    strategy, _, column = spec.partition(":")
    return {"strategy": strategy, "input": column or EMBEDDINGS}


def selection_config(*, n_samples: int | None = None,
                     strategies: Sequence[str | dict[str, Any] | StrategyConfig] | None = None,
                     **selection: Any) -> SelectionConfig:
    """A ``selection`` section from keyword arguments; ConfigError names the key at fault."""
    try:
        data: dict[str, Any] = {"n_samples": n_samples, **selection}
        if strategies is not None:
            data["strategies"] = [_short_form(s) if isinstance(s, str) else s for s in strategies]
        return SelectionConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, "selection")) from None


def select(features: pd.DataFrame | pa.Table, *, n_samples: int | None = None,
           strategies: Sequence[str | dict[str, Any] | StrategyConfig] | None = None,
           labeled: Iterable[str] | None = None, seed: int = 0, run_id: str | None = None,
           **selection: Any) -> pd.DataFrame:
    """Rank the rows of a features table for labeling.

    Parameters
    ----------
    features : pandas DataFrame or Arrow table with ``id`` (unique strings), ``embedding`` (a list
        of floats per row) and the score or metadata columns the strategies read (``bald``,
        ``entropy``, ``pred``, ...: the features table of ``alray score`` or :func:`score`)
    n_samples : how many to select (or give ``proportion_samples``, or a diversity ``min_distance``)
    strategies : entries of ``selection.strategies``: mappings as in the YAML config,
        :class:`~alray.config.StrategyConfig` objects, or short forms such as ``"diversity"`` and
        ``"weights:bald"``. Default: ``auto``, the budget-aware choice.
    labeled : ids already labeled: never selected; their embeddings (when in ``features``) count
        as existing centres
    seed : the run seed (partition hash, reference samples)
    run_id : written into the ranking's ``run_id`` column (None when absent)
    **selection : any other key of the ``selection`` section: ``filters``, ``mode``, ``top_m``,
        ``near_duplicate_distance``, ``n_partitions``, ``oversample``, ``proportion_samples``

    Returns
    -------
    pandas DataFrame with the ranking table's columns (run_id, id, rank, selected, score,
    weight, diversity, parts, strategy, created_at), one row per candidate in rank order. Its
    ``attrs["summary"]`` holds the counts and the coverage radius.
    """
    config = selection_config(n_samples=n_samples, strategies=strategies, **selection)
    table = _arrow(features, "features")
    for column in ("id", "embedding"):
        if column not in table.column_names:
            raise InputError(f"features: missing required column {column!r} (found {table.column_names})")
    excluded = {str(i): LABELED_REASON for i in labeled} if labeled is not None else None
    ranking, result = select_table(table, config, seed=seed, excluded=excluded, run_id=run_id,
                                   run_time=dt.datetime.now(dt.timezone.utc))
    frame = ranking.to_pandas()
    frame.attrs["summary"] = dict(result.__dict__)
    return frame


def score(table: pd.DataFrame | pa.Table, model: str | TaskModel, *, mc_samples: int = 20, seed: int = 0,
          batch_size: int = 256, run_id: str | None = None, max_tokens: int | None = None,
          **options: Any) -> pd.DataFrame:
    """Score pool rows with a model on this machine (no Ray): the features table's rows.

    Parameters
    ----------
    table : pool rows: ``id`` and one payload column (``image`` bytes, ``uri``, ``features`` or
        ``text``), any other column is metadata
    model : a checkpoint path (as ``model.checkpoint``) or a loaded model
    mc_samples : MC-dropout samples T
    seed : seed of the dropout masks (with the ids, they fix every score)
    batch_size : rows per model batch
    run_id : written into the ``run_id`` column
    max_tokens : tokens a Hugging Face text model's inputs are cut or padded to (``model.max_tokens``)
    **options : ``max_image_pixels``, ``head_only`` (see :class:`alray.inference.ScoringOptions`)

    Returns
    -------
    pandas DataFrame of the scored rows (embedding, probs, pred, every score, quality, metadata).
    Rows that could not be scored are left out; ``attrs["rejects"]`` lists them as
    ``{"id": ..., "reason": ...}`` mappings.
    """
    from alray.inference import ScoringOptions, check_payload_fits, score_batch, text_encoder_for
    from alray.lake import check_pool_schema
    from alray.models import load_model
    from alray.payloads import PayloadError

    pool = _arrow(table, "table")
    payload = check_pool_schema(pool.schema, "table")
    task_model = load_model(model, max_tokens=max_tokens) if isinstance(model, str) else model
    try:
        check_payload_fits(payload, task_model.input_kind)
    except PayloadError as exc:
        raise InputError(f"table: {exc}") from None
    encoder = text_encoder_for(task_model)
    scoring = ScoringOptions(payload=payload, mc_samples=mc_samples, seed=seed, run_id=run_id or "", **options)
    parts = [score_batch(task_model, batch, scoring, text_encoder=encoder)
             for batch in (pool.slice(start, batch_size) for start in range(0, max(pool.num_rows, 1), batch_size))]
    scored = pa.concat_tables(parts).to_pandas()
    rejected = scored[REJECT_REASON].notna()
    rejects = scored.loc[rejected, ["id", REJECT_REASON]].rename(columns={REJECT_REASON: "reason"})
    features = scored.loc[~rejected].drop(columns=[REJECT_REASON]).reset_index(drop=True)
    if run_id is None:
        features = features.drop(columns=["run_id"])
    features.attrs["rejects"] = rejects.to_dict("records")
    return features
