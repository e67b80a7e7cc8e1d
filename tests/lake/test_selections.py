"""Earlier selections: what other succeeded runs picked is excluded, a rerun's own picks are not."""

from __future__ import annotations

import pyarrow as pa

from alray.lake import Lake, previously_selected_ids
from alray.lake.selections import run_picks


def test_previously_selected_ids_come_from_other_succeeded_runs(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    assert previously_selected_ids(lake, "r3").to_pylist() == []
    for run_id, ids, status in (("r1", ["a", "b"], "succeeded"), ("r2", ["b", "c"], "succeeded"),
                                ("r0", ["z"], "failed"), ("r3", ["d"], "running")):
        ranking = pa.table({"run_id": [run_id] * (len(ids) + 1), "id": [*ids, f"not-picked-{run_id}"],
                            "selected": [True] * len(ids) + [False]})
        lake.replace_run("ranking", ranking, run_id)
        lake.replace_run("runs", pa.table({"run_id": [run_id], "status": [status]}), run_id, partition=False)
    assert sorted(previously_selected_ids(lake, "r3").to_pylist()) == ["a", "b", "c"]
    # a rerun of r2 does not exclude its own earlier picks
    assert sorted(previously_selected_ids(lake, "r2").to_pylist()) == ["a", "b"]


def test_run_picks_are_the_selected_rows_of_one_run_in_rank_order(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    assert run_picks(lake, "ranking", "r1", ["id"]) == []
    ranking = pa.table({"run_id": ["r1"] * 5, "id": ["a", "b", "c", "d", "e"], "rank": [4, 2, 5, 1, 3],
                        "selected": [True, True, False, False, True], "score": [0.1, 0.2, 0.3, 0.4, 0.5]})
    lake.replace_run("ranking", ranking, "r1")
    other = pa.table({"run_id": ["r2"], "id": ["x"], "rank": [1], "selected": [True], "score": [1.0]})
    lake.replace_run("ranking", other, "r2")
    assert run_picks(lake, "ranking", "r1", ["id", "score"]) == [
        {"id": "b", "score": 0.2}, {"id": "e", "score": 0.5}, {"id": "a", "score": 0.1}]
