"""Earlier selections: what other succeeded runs picked is excluded, a rerun's own picks are not."""

from __future__ import annotations

import pyarrow as pa

from alray.lake import Lake, previously_selected_ids


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
