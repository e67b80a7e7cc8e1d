"""End to end on real Ray, real Spark and real Delta tables: the demo subset, scored and selected."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from alray.config import StrategyConfig
from alray.coreset import coverage_radius
from alray.errors import ConfigError, InputError
from alray.lake import read_run
from alray.pipeline import run_pipeline
from alray.progress import Progress
from tests.conftest import demo_config


@pytest.fixture(scope="module")
def finished_run(ray_session, spark, demo_files, tmp_path_factory):
    lake = tmp_path_factory.mktemp("lake")
    config = demo_config(demo_files, lake)
    config.run.run_id = "e2e-1"
    summary = run_pipeline(config, progress=Progress(quiet=True))
    return config, summary


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    values = column.combine_chunks()
    return values.flatten().to_numpy().reshape(len(values), -1)


def test_selects_exactly_n_samples_ranked_1_to_n(finished_run):
    config, summary = finished_run
    ranking = read_run(summary.tables["ranking"], summary.run_id)
    selected = ranking.filter(pc.field("selected"))
    assert selected.num_rows == config.selection.n_samples == summary.counts["selected"]
    assert sorted(selected.column("rank").to_pylist()) == list(range(1, config.selection.n_samples + 1))
    # every candidate has a row; ranks are 1..n_candidates with no gap or repeat
    assert sorted(ranking.column("rank").to_pylist()) == list(range(1, ranking.num_rows + 1))
    assert ranking.num_rows == summary.counts["candidates"]
    assert len(set(ranking.column("id").to_pylist())) == ranking.num_rows


def test_selection_comes_from_the_pool_and_never_from_the_labeled_set(finished_run, demo_files):
    _, summary = finished_run
    ranking = read_run(summary.tables["ranking"], summary.run_id)
    pool_ids = set(pq.read_table(demo_files.pool, columns=["id"]).column("id").to_pylist())
    labeled_ids = set(pq.read_table(demo_files.labeled, columns=["id"]).column("id").to_pylist())
    chosen = set(ranking.filter(pc.field("selected")).column("id").to_pylist())
    assert chosen <= pool_ids
    assert not chosen & labeled_ids
    assert not set(ranking.column("id").to_pylist()) & labeled_ids
    # the blank and blurred images fail the sharpness filter, so none is a candidate
    assert not any(i.startswith(("blank-", "blurred-")) for i in ranking.column("id").to_pylist())


def test_every_pool_id_ends_in_exactly_one_place(finished_run, demo_files):
    _, summary = finished_run
    pool_ids = pq.read_table(demo_files.pool, columns=["id"]).column("id").to_pylist()
    ranked = set(read_run(summary.tables["ranking"], summary.run_id, columns=["id"]).column("id").to_pylist())
    rejected = read_run(summary.tables["rejects"], summary.run_id)
    rejected_ids = set(rejected.column("id").to_pylist())
    assert rejected_ids == {i for i in pool_ids if i.startswith("corrupt-")}
    assert all(rejected.column("reason").to_pylist())
    assert not ranked & rejected_ids
    counts = summary.counts
    assert counts["pool"] == len(pool_ids)
    assert counts["candidates"] + counts["rejected"] + counts["filtered"] == counts["pool"]
    assert sum(summary.filtered_by_reason.values()) == counts["filtered"]
    assert summary.filtered_by_reason["labeled"] == 50


def test_selected_set_is_more_uncertain_and_covers_better_than_random(finished_run):
    config, summary = finished_run
    features = read_run(summary.tables["features"], summary.run_id, columns=["id", "embedding", "bald"])
    ranking = read_run(summary.tables["ranking"], summary.run_id, columns=["id", "selected"])
    candidate_ids = set(ranking.column("id").to_pylist())
    chosen = set(ranking.filter(pc.field("selected")).column("id").to_pylist())
    ids = features.column("id").to_pylist()
    bald = features.column("bald").to_numpy()
    embeddings = _matrix(features.column("embedding"))
    is_candidate = np.array([i in candidate_ids for i in ids])
    is_chosen = np.array([i in chosen for i in ids])
    assert bald[is_chosen].mean() > bald[is_candidate].mean()

    labeled_ids = set(pq.read_table(config.labeled.path, columns=["id"]).column("id").to_pylist())
    labeled = embeddings[np.array([i in labeled_ids for i in ids])]
    candidates = embeddings[is_candidate]
    radius = summary.coverage_radius
    assert radius == pytest.approx(
        coverage_radius(candidates, np.vstack([labeled, embeddings[is_chosen]])), rel=1e-4)
    rng = np.random.default_rng(0)
    random_radii = [
        coverage_radius(candidates, np.vstack([labeled, candidates[rng.choice(len(candidates), len(chosen),
                                                                              replace=False)]]))
        for _ in range(20)
    ]
    # below what a random set of the same size covers, on average and in most draws
    assert radius < np.mean(random_radii)
    assert np.mean(radius < np.array(random_radii)) >= 0.75


def test_runs_table_records_the_run(finished_run):
    config, summary = finished_run
    runs = DeltaTable(summary.tables["runs"]).to_pyarrow_dataset().to_table()
    row = runs.filter(pc.equal(runs.column("run_id"), summary.run_id)).to_pylist()
    assert len(row) == 1
    assert row[0]["status"] == "succeeded"
    assert row[0]["n_selected"] == config.selection.n_samples
    assert row[0]["coverage_radius"] == pytest.approx(summary.coverage_radius)
    assert row[0]["config_hash"] == config.config_hash()
    assert row[0]["finished_at"] >= row[0]["started_at"]


def test_the_score_stage_times_the_split_apart_from_the_commit(finished_run):
    _, summary = finished_run
    phases = {k: v for k, v in summary.timings.items() if k.startswith("score.")}
    # The split runs in Ray tasks (work per row, spread over a cluster); the commit is the driver's.
    assert {"score.model_s", "score.split_s", "score.commit_s"} <= set(phases)
    assert phases["score.split_s"] > 0 and phases["score.commit_s"] > 0
    assert sum(phases.values()) <= summary.timings["score_s"]


def test_the_spark_stage_times_its_phases_within_the_stage(finished_run, capsys):
    from alray.report import print_summary

    _, summary = finished_run
    phases = {k: v for k, v in summary.timings.items() if k.startswith("select.")}
    assert {"select.read_filter_count_s", "select.duplicate_check_s", "select.partition_s", "select.local_rounds_s",
            "select.merge_round_s", "select.distances_s", "select.rank_s", "select.write_s",
            "select.commit_s"} <= set(phases)
    assert 0 < sum(phases.values()) <= summary.timings["select_s"]
    print_summary(summary)
    out = capsys.readouterr().out
    assert "    select phases: read_filter_count " in out
    assert "select.read_filter_count_s" not in out.split("select phases")[0]  # stage timings stay one line


def test_rerun_of_a_run_id_replaces_it_without_duplicates(finished_run):
    config, summary = finished_run
    before = read_run(summary.tables["ranking"], summary.run_id).sort_by("rank")
    features_before = read_run(summary.tables["features"], summary.run_id).num_rows
    again = run_pipeline(config, progress=Progress(quiet=True))
    after = read_run(again.tables["ranking"], again.run_id).sort_by("rank")
    assert after.num_rows == before.num_rows
    assert after.column("id").to_pylist() == before.column("id").to_pylist()
    assert after.column("selected").to_pylist() == before.column("selected").to_pylist()
    assert read_run(summary.tables["features"], summary.run_id).num_rows == features_before
    runs = DeltaTable(summary.tables["runs"]).to_pyarrow_dataset().to_table()
    assert runs.column("run_id").to_pylist().count(summary.run_id) == 1


def test_select_without_features_fails_and_is_recorded_without_touching_other_runs(finished_run):
    config, summary = finished_run
    other = config.model_copy(deep=True)
    other.run.run_id = "e2e-2"
    with pytest.raises(InputError, match="no rows for run e2e-2"):
        run_pipeline(other, stages=("select",), progress=Progress(quiet=True))
    runs = DeltaTable(summary.tables["runs"]).to_pyarrow_dataset().to_table()
    status = dict(zip(runs.column("run_id").to_pylist(), runs.column("status").to_pylist(), strict=True))
    assert status["e2e-2"] == "failed"
    assert status[summary.run_id] == "succeeded"
    first = read_run(summary.tables["ranking"], summary.run_id)
    assert first.filter(pc.field("selected")).num_rows == config.selection.n_samples


def test_the_local_engine_writes_the_spark_stage_ranking_and_auto_picks_it_for_small_pools(finished_run):
    config, summary = finished_run
    spark_ranking = read_run(summary.tables["ranking"], summary.run_id).sort_by("rank")
    lines: list[str] = []

    class Lines:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

    for engine in ("local", "auto"):
        lines.clear()
        again = config.model_copy(update={"selection": config.selection.model_copy(update={"engine": engine})})
        rerun = run_pipeline(again, progress=Progress(Lines()), stages=("select",))
        local = read_run(rerun.tables["ranking"], rerun.run_id).sort_by("rank")
        assert local.num_rows == spark_ranking.num_rows  # the rerun replaced the run's ranking, no duplicate
        for column in ("id", "rank", "selected", "strategy", "parts"):
            assert local.column(column).to_pylist() == spark_ranking.column(column).to_pylist(), column
        for column in ("score", "weight", "diversity"):
            np.testing.assert_allclose(local.column(column).to_numpy(zero_copy_only=False).astype(float),
                                       spark_ranking.column(column).to_numpy(zero_copy_only=False).astype(float),
                                       rtol=1e-12, err_msg=column)
        assert rerun.counts["selected"] == summary.counts["selected"]
        assert rerun.filtered_by_reason == summary.filtered_by_reason
    assert any("engine auto: local" in line for line in lines)


def test_the_default_auto_records_its_choice_and_reason_in_the_runs_table(finished_run, capsys):
    # last in this module: it replaces the run's ranking with auto's
    from alray.config import SelectionConfig

    config, summary = finished_run
    default = SelectionConfig(n_samples=config.selection.n_samples, engine="local").strategies
    assert [s.strategy for s in default] == ["auto"]
    again = config.model_copy(update={"selection": config.selection.model_copy(update={"strategies": default})})
    rerun = run_pipeline(again, progress=Progress(quiet=True), stages=("select",))
    assert rerun.strategy.startswith("auto(") and rerun.strategy_reason
    from alray.report import print_summary

    print_summary(rerun)
    assert f"auto chose {rerun.strategy}: {rerun.strategy_reason}" in capsys.readouterr().out
    runs = DeltaTable(summary.tables["runs"]).to_pyarrow_dataset().to_table()
    row = runs.filter(pc.equal(runs.column("run_id"), summary.run_id)).to_pylist()[0]
    assert (row["strategy"], row["strategy_reason"]) == (rerun.strategy, rerun.strategy_reason)
    assert json.loads(row["selection_details"]) == rerun.selection_details
    ranking = read_run(summary.tables["ranking"], summary.run_id)
    assert set(ranking.column("strategy").to_pylist()) == {rerun.strategy}


def _lake_with_features(tmp_path):
    """A lake holding run r1's scored features (12 images, entropy rising with the index) and no ranking yet;
    its selection takes the 4 most uncertain, in this process."""
    from alray.lake import Lake
    from tests.labeling.conftest import lake_config, write_pool, write_run

    config = lake_config(tmp_path, write_pool(tmp_path))
    config.selection.engine = "local"
    config.selection.strategies = [StrategyConfig(input="entropy", strategy="weights")]
    write_run(config, "r1", [], others=[f"img/{i:02d}.png" for i in range(12)])
    config.run.run_id = "r1"
    return config, Lake.from_output(config.output)


def _round(lake, run_id: str) -> dict[str, tuple[str, int | None]]:
    from alray.lake.rounds import read_items

    return {row["id"]: (row["state"], row["rank"]) for row in read_items(lake).to_pylist() if row["run_id"] == run_id}


def test_a_rerun_of_an_exported_round_keeps_its_picks_and_their_states(tmp_path):
    """The round of r1 went to a labeling tool; r1 is run again: its own sent ids are its picks, not another
    round's, so it picks them again, they stay sent, and the round does not grow."""
    from alray.lake.rounds import mark_labeled, mark_sent

    config, lake = _lake_with_features(tmp_path)
    first = run_pipeline(config, progress=Progress(quiet=True), stages=("select",))
    picks = {f"img/{i:02d}.png" for i in range(8, 12)}  # the most uncertain
    assert first.counts["selected"] == 4 and set(_round(lake, "r1")) == picks
    mark_sent(lake, "r1", sorted(picks), destination="label-studio:x", at=dt.datetime.now(dt.timezone.utc))
    mark_labeled(lake, [{"id": "img/11.png", "label": "one", "round": "r1", "labeled_at": None}])
    again = run_pipeline(config, progress=Progress(quiet=True), stages=("select",))
    assert again.filtered_by_reason == first.filtered_by_reason
    assert {i: state for i, (state, _) in _round(lake, "r1").items()} == {
        "img/08.png": "sent", "img/09.png": "sent", "img/10.png": "sent", "img/11.png": "labeled"}
    # with other settings the round takes the new picks; what the tool holds and they leave out stays, unranked
    fewer = config.model_copy(update={"selection": config.selection.model_copy(update={"n_samples": 2})})
    run_pipeline(fewer, progress=Progress(quiet=True), stages=("select",))
    assert _round(lake, "r1") == {"img/11.png": ("labeled", 1), "img/10.png": ("sent", 2),
                                  "img/09.png": ("sent", None), "img/08.png": ("sent", None)}


def test_a_failed_rerun_leaves_no_picks_in_its_round(tmp_path):
    config, lake = _lake_with_features(tmp_path)
    run_pipeline(config, progress=Progress(quiet=True), stages=("select",))
    assert len(_round(lake, "r1")) == 4
    broken = config.model_copy(update={"selection": config.selection.model_copy(
        update={"strategies": [StrategyConfig(input="bald", strategy="weights")]})})  # no bald in the features
    with pytest.raises(ConfigError, match="no column 'bald'"):
        run_pipeline(broken, progress=Progress(quiet=True), stages=("select",))
    assert lake.read_run("ranking", "r1").num_rows == 0
    assert _round(lake, "r1") == {}
