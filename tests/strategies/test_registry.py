"""The registry is the one list of strategies: the config schema agrees with it, and a new one runs everywhere."""

from __future__ import annotations

import numpy as np
import pytest

import alray
from alray.api import selection_config
from alray.config import Config, StrategyConfig
from alray.errors import ConfigError
from alray.simulate import simulate
from alray.simulate_config import SimulateConfig
from alray.stages.select import select_dataframe
from alray.strategies import Objective, get_strategy, register, strategy_names, unregister
from tests.selection.features import clustered_features


def test_config_schema_lists_exactly_the_registry():
    schema = Config.model_json_schema()["$defs"]["StrategyConfig"]["properties"]["strategy"]
    assert schema["enum"] == list(strategy_names())
    assert set(strategy_names()) >= {"diversity", "weights", "threshold", "balance", "similarity", "typicality"}
    for name in strategy_names():
        strategy = get_strategy(name)
        assert strategy.role in ("filter", "objective", "diversity", "balance", "sampler", "selector", "auto")
        assert strategy.summary


def test_unknown_strategy_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"selection: strategies\.0\.strategy: unknown strategy 'nope'"):
        selection_config(n_samples=3, strategies=[{"input": "bald", "strategy": "nope"}])


def _far_from_origin() -> Objective:
    # Defined in a function, so Spark's workers receive the class by value (cloudpickle).
    class FarFromOrigin(Objective):
        """Toy objective: the embedding's norm (prefers the outskirts)."""

        name = "far_from_origin"
        inputs = "embeddings"
        summary = "toy: the embedding's norm"

        def evaluate(self, entry, column, state, batch):
            return np.linalg.norm(batch.embeddings, axis=1).astype(np.float64) + 1e-6

    return FarFromOrigin()


@pytest.fixture
def toy():
    strategy = register(_far_from_origin())
    yield strategy
    unregister(strategy.name)


def test_a_strategy_added_through_the_registry_runs_everywhere(spark, tmp_path, toy):
    entry = {"input": "embeddings", "strategy": "far_from_origin"}
    assert Config.model_json_schema()["$defs"]["StrategyConfig"]["properties"]["strategy"]["enum"][-1] == toy.name
    assert StrategyConfig.model_validate(entry).label() == "far_from_origin"
    features = clustered_features(400)
    norms = np.linalg.norm(np.stack(features.column("embedding").to_numpy(zero_copy_only=False)), axis=1)
    ids = features.column("id").to_pylist()

    # Python API: by weight alone, the picks are the largest norms
    ranking = alray.select(features, n_samples=15, strategies=[entry])
    assert ranking[ranking.selected].id.tolist() == [ids[i] for i in np.argsort(-norms, kind="stable")[:15]]
    assert ranking.strategy.iloc[0] == "far_from_origin^1"
    assert list(ranking.parts.iloc[0]) == [("far_from_origin", pytest.approx(norms.max() + 1e-6))]

    # Spark stage: the same picks, with diversity too
    both = dict(n_samples=15, strategies=[{"input": "embeddings", "strategy": "diversity"}, entry])
    local = alray.select(features, **both)
    with select_dataframe(spark.createDataFrame(features), selection_config(**both)) as selection:
        on_spark = selection.ranking.orderBy("rank").toArrow()
    assert on_spark.column("id").to_pylist()[:15] == local.id.tolist()[:15]

    # Simulator: a registry spelling of the toy strategy runs a round
    result = simulate(SimulateConfig(
        dataset="digits", seeds=[0], initial_labels=20, batch_size=10, rounds=1, n_pool=300,
        strategies=["diversity+far_from_origin"], mc_samples=3, full_pool_reference=False,
        model={"train_steps": 20}, output=str(tmp_path / "sim")), plot=False)
    assert [p.n_labels for p in result.points] == [20, 30]
