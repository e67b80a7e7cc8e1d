"""alray rounds: the history of a lake's rounds, per round its counts and the labels that came back."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from alray.cli import main
from alray.labeling.export import export_run
from alray.labeling.importer import import_labels, read_export_file
from tests.labeling.conftest import lake_with_run, write_run
from tests.labeling.test_importer import _export_file


@pytest.fixture
def lake_run(tmp_path):
    return lake_with_run(tmp_path)


def test_rounds_shows_each_round_with_its_counts_and_labels(lake_run, tmp_path, capsys):
    export_run(lake_run, "r1", to="cvat", out=tmp_path / "cvat", now=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc))
    _export_file(tmp_path / "export.json", {"img/00.png": "one", "img/01.png": "one", "img/02.png": "two"})
    import_labels(lake_run, read_export_file(tmp_path / "export.json"), source="export.json")
    write_run(lake_run, "r2", ["img/05.png", "img/06.png"],
              started=dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc))
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps(lake_run.model_dump(mode="json")))
    assert main(["rounds", str(config), "--json"]) == 0
    rounds = json.loads(capsys.readouterr().out)["rounds"]
    assert [r["run_id"] for r in rounds] == ["r1", "r2"]
    # img/03.png was sent on Jan 2 and not labeled in 14 days: expired
    assert {k: rounds[0][k] for k in ("selected", "sent", "waiting", "labeled", "expired", "labels")} == {
        "selected": 4, "sent": 4, "waiting": 0, "labeled": 3, "expired": 1, "labels": {"one": 2, "two": 1}}
    assert (rounds[1]["selected"], rounds[1]["sent"]) == (2, 0)
    assert main(["rounds", str(config)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["round", "started", "selected", "sent", "waiting", "labeled", "expired", "labels"]
    assert table[1].split()[:8] == ["r1", "2026-01-01", "00:00", "4", "4", "0", "3", "1"]
