"""Pools that hold their own embeddings and predictions: scored with no model, by the same score functions."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from alray.cli import main as alray_main
from alray.lake import Lake
from alray.precomputed import score_precomputed
from alray.scoring import all_scores
from alray.tables import MC_SCORES, REJECT_REASON


def _pool(n: int = 120, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    mc = rng.dirichlet(np.ones(4) * 0.7, size=(n, 6))  # T=6 passes, C=4 classes
    table = pa.table({
        "id": [f"p{i:03d}" for i in range(n)],
        "embedding": pa.array(list(rng.normal(size=(n, 5)).astype(np.float32)), pa.list_(pa.float32())),
        "mc_probs": pa.array([row.tolist() for row in mc], pa.list_(pa.list_(pa.float64()))),
        "site": rng.choice(["a", "b"], size=n),
    })
    return table, mc


def test_mc_probs_give_every_score_of_alray_scoring():
    table, mc = _pool(30)
    features = score_precomputed(table, run_id="r", embedding_dim=5)
    expected = all_scores(mc)
    for name in MC_SCORES:
        np.testing.assert_allclose(features.column(name).to_numpy(), expected[name], rtol=1e-12)
    assert features.column("pred").to_pylist() == expected["pred"].tolist()
    assert features.column(REJECT_REASON).null_count == 30 and features.column("site").to_pylist()[:3]


def test_bad_rows_are_rejected_naming_the_column():
    table, _ = _pool(6)
    rows = table.to_pylist()
    rows[0]["embedding"] = [1.0, 2.0]
    rows[1]["embedding"] = [float("nan")] * 5
    rows[2]["mc_probs"] = [[0.5, 0.2, 0.1, 0.1]] * 6
    rows[3]["mc_probs"] = [[0.5, 0.5]] * 6
    features = score_precomputed(pa.Table.from_pylist(rows, schema=table.schema), run_id="r", embedding_dim=5)
    reasons = features.column(REJECT_REASON).to_pylist()
    assert reasons[0] == "embedding: 2 values, expected 5"
    assert reasons[1] == "embedding: non-finite values"
    assert reasons[2] == "mc_probs: probabilities sum to 0.9, not 1"
    assert reasons[3] == "mc_probs: 2 classes, expected 4"
    assert reasons[4] is None and reasons[5] is None and features.column("bald")[4].as_py() is not None


def test_probs_alone_give_the_single_pass_scores_and_logits_are_softmaxed():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(8, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    base = {"id": [f"x{i}" for i in range(8)], "embedding": pa.array(list(rng.normal(size=(8, 2))),
                                                                     pa.list_(pa.float64()))}
    from_probs = score_precomputed(pa.table({**base, "probs": [p.tolist() for p in probs]}), run_id="r",
                                   embedding_dim=2)
    from_logits = score_precomputed(pa.table({**base, "logits": [x.tolist() for x in logits]}), run_id="r",
                                    embedding_dim=2)
    expected = all_scores(probs[:, None, :])
    for features in (from_probs, from_logits):
        np.testing.assert_allclose(features.column("entropy").to_numpy(), expected["entropy"], rtol=1e-9)
        assert features.column("bald").null_count == 8  # MC scores need mc_probs


def _run(tmp_path, pool_path: str, strategies: list[dict]) -> tuple[int, str, str]:
    config = {"run": {"seed": 0}, "pool": {"path": pool_path},
              "score": {"batch_size": 32}, "selection": {"n_samples": 10, "strategies": strategies,
                                                         "n_partitions": 2},
              "output": {"path": str(tmp_path / "lake")}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = alray_main(["run", str(path), "--run-id", "pre", "--json", "--quiet"])
    return code, out.getvalue(), err.getvalue()


def test_a_precomputed_pool_runs_with_no_model_section(ray_session, spark, tmp_path):
    table, mc = _pool()
    rows = table.to_pylist()
    rows[5]["mc_probs"] = [[0.9, 0.9, 0.1, 0.1]] * 6
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), str(tmp_path / "pool.parquet"))
    code, out, err = _run(tmp_path, str(tmp_path / "pool.parquet"),
                          [{"input": "embeddings", "strategy": "diversity"}, {"input": "bald", "strategy": "weights"}])
    assert code == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["counts"]["selected"] == 10
    lake = Lake(str(tmp_path / "lake"))
    assert [(r["id"], r["reason"]) for r in lake.read_run("rejects", "pre").to_pylist()] == [
        ("p005", "mc_probs: probabilities sum to 2, not 1")]
    features = lake.read_run("features", "pre", columns=["id", "bald"]).sort_by("id")
    keep = [i for i in range(len(mc)) if i != 5]
    np.testing.assert_allclose(features.column("bald").to_numpy(), all_scores(mc[keep])["bald"], rtol=1e-12)


def test_without_a_model_the_config_may_ask_only_for_what_the_pool_gives(tmp_path):
    table, _ = _pool(20)
    pq.write_table(table.drop_columns(["mc_probs"]).append_column(
        "probs", pa.array([[0.25] * 4] * 20, pa.list_(pa.float64()))), str(tmp_path / "probs.parquet"))
    code, _, err = _run(tmp_path, str(tmp_path / "probs.parquet"),
                        [{"input": "embeddings", "strategy": "diversity"}, {"input": "bald", "strategy": "weights"}])
    assert code == 2
    assert err.strip().splitlines()[-1].endswith(
        f"selection.strategies.1: 'bald' needs a model (model.checkpoint) or mc_probs in the pool; pool "
        f"{tmp_path / 'probs.parquet'} has no model and no such column")
    pq.write_table(table.drop_columns(["embedding"]), str(tmp_path / "bare.parquet"))
    code, _, err = _run(tmp_path, str(tmp_path / "bare.parquet"), [{"input": "embeddings", "strategy": "diversity"}])
    assert code == 2 and "no model section and no 'embedding' column" in err


def test_a_flat_mc_probs_column_is_rejected_not_read_as_one_pass():
    # T=1 would make BALD, variation ratio and mean std 0 for every row: a single pass belongs in probs
    flat = pa.table({"id": ["a", "b"], "embedding": [[0.0] * 5, [1.0] * 5], "mc_probs": [[0.5, 0.5], [0.9, 0.1]]})
    reasons = score_precomputed(flat, run_id="r", embedding_dim=5).column(REJECT_REASON).to_pylist()
    assert reasons == ["mc_probs: a flat list of values; expected T lists of C probabilities "
                       "(one pass goes in probs)"] * 2
