"""The Python API: score and select a pandas table in process, no YAML, no lake."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import alray
from alray.errors import ConfigError, InputError
from alray.models import FeatureMLP, save_checkpoint
from alray.tables import MC_SCORES


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "mlp.pt"
    save_checkpoint(FeatureMLP(n_features=6, n_classes=3, hidden_dim=16, embedding_dim=8), path)
    return str(path)


def test_score_then_select_in_process(checkpoint):
    rng = np.random.default_rng(0)
    pool = pd.DataFrame({"id": [f"r{i:03d}" for i in range(120)],
                         "features": [rng.normal(size=6).tolist() for _ in range(120)],
                         "site": rng.choice(["a", "b"], size=120)})
    pool.loc[7, "features"] = [1.0, 2.0]  # wrong length: rejected with a reason, not fatal
    features = alray.score(pool, checkpoint, mc_samples=5, seed=1)
    assert len(features) == 119 and "r007" not in set(features.id)
    assert [r["id"] for r in features.attrs["rejects"]] == ["r007"]
    assert "feature" in features.attrs["rejects"][0]["reason"]
    assert set(MC_SCORES) <= set(features.columns) and "site" in features.columns
    assert len(features.embedding.iloc[0]) == 8
    again = alray.score(pool, checkpoint, mc_samples=5, seed=1)
    np.testing.assert_array_equal(features.bald.to_numpy(), again.bald.to_numpy())  # seeded: reproducible

    ranking = alray.select(features, n_samples=10, strategies=["diversity", "weights:bald"], labeled=["r000"])
    assert list(ranking.columns) == ["run_id", "id", "rank", "selected", "score", "weight", "diversity", "parts",
                                     "strategy", "created_at"]
    assert ranking.selected.sum() == 10 and "r000" not in set(ranking.id) and len(ranking) == 118
    assert ranking.attrs["summary"]["n_labeled_in_pool"] == 1
    assert (np.diff(ranking.score.to_numpy()) <= 0).all()
    only_a = alray.select(features, n_samples=5, strategies=["weights:entropy"],
                          filters=[{"column": "site", "op": "==", "value": "a"}])
    assert set(features.set_index("id").loc[only_a.id, "site"]) == {"a"}


def test_bad_arguments_are_one_line_errors(checkpoint):
    frame = pd.DataFrame({"id": ["a"], "embedding": [[0.0, 1.0]]})
    with pytest.raises(ConfigError, match=r"selection: n_samples"):
        alray.select(frame, n_samples=-1)
    with pytest.raises(InputError, match=r"features: missing required column 'embedding'"):
        alray.select(frame.drop(columns=["embedding"]), n_samples=1)
    with pytest.raises(InputError, match=r"expected a pandas DataFrame or a pyarrow Table"):
        alray.select([1, 2], n_samples=1)
    with pytest.raises(InputError, match=r"the model takes features inputs"):
        alray.score(pd.DataFrame({"id": ["a"], "text": ["hello"]}), checkpoint)
