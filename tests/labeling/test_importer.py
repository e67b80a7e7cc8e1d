"""alray import-labels from an export file: labels in once, round states moved, a re-import a no-op."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from deltalake import DeltaTable

from alray.cli import main
from alray.errors import InputError
from alray.labeling.export import export_run
from alray.labeling.importer import import_labels, read_export_file
from alray.lake import Lake
from alray.lake.labels import read_labels
from alray.lake.rounds import read_items


def _export_file(path, answers: dict[str, str], project: int = 3) -> None:
    tasks = []
    for n, (item, label) in enumerate(answers.items(), start=1):
        tasks.append({"id": n, "project": project, "data": {"alray_id": item, "alray_round": "r1"},
                      "annotations": [{"id": 100 + n, "was_cancelled": False, "updated_at": f"2026-01-0{n}T00:00:00Z",
                                       "result": [{"type": "choices", "from_name": "label", "to_name": "image",
                                                   "value": {"choices": [label]}}]}]})
    path.write_text(json.dumps(tasks))


def _versions(config) -> tuple[int, int]:
    lake = Lake.from_output(config.output)
    return DeltaTable(lake.table("labels")).version(), DeltaTable(lake.table("round_items")).version()


def test_import_moves_labeled_ids_and_a_reimport_changes_nothing(lake_run, tmp_path):
    export_run(lake_run, "r1", to="label-studio", out=tmp_path / "out")
    _export_file(tmp_path / "export.json", {"img/00.png": "one", "img/02.png": "two"})
    summary = import_labels(lake_run, read_export_file(tmp_path / "export.json"), source="export.json")
    assert (summary.n_labels, summary.n_new, summary.rounds_changed) == (2, 2, 2)
    lake = Lake.from_output(lake_run.output)
    states = {row["id"]: (row["state"], row["label"]) for row in read_items(lake).to_pylist()}
    assert states == {"img/00.png": ("labeled", "one"), "img/01.png": ("sent", None),
                      "img/02.png": ("labeled", "two"), "img/03.png": ("sent", None)}
    before = _versions(lake_run), read_labels(lake), read_items(lake)
    again = import_labels(lake_run, read_export_file(tmp_path / "export.json"), source="export.json")
    assert (again.n_new, again.n_known, again.import_id, again.rounds_changed) == (0, 2, None, 0)
    assert (_versions(lake_run), read_labels(lake), read_items(lake)) == before


def test_labels_of_ids_out_of_any_round_are_kept_and_excluded(lake_run, tmp_path):
    from alray.stages.select_local import excluded_ids

    _export_file(tmp_path / "export.json", {"img/09.png": "zero"})  # labeled in the tool by hand
    import_labels(lake_run, read_export_file(tmp_path / "export.json"), source="export.json")
    export_run(lake_run, "r1", to="coco", out=tmp_path / "coco")
    lake = Lake.from_output(lake_run.output)
    excluded = excluded_ids(lake_run.labeled, None, lake, "r2", now=dt.datetime.now(dt.timezone.utc))
    marks = dict(zip(excluded.column("id").to_pylist(), excluded.column("_excluded").to_pylist(), strict=True))
    assert marks == {"img/09.png": "labeled", **{f"img/{i:02d}.png": "selected_before" for i in range(4)}}
    off = lake_run.labeled.model_copy(update={"from_lake": False})
    assert excluded_ids(off, None, lake, "r2") is None


def test_the_cli_imports_a_file_and_says_what_it_did(lake_run, tmp_path, capsys, monkeypatch):
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps(lake_run.model_dump(mode="json")))
    _export_file(tmp_path / "export.json", {"img/01.png": "one"})
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")  # a FILE is read, whatever the server default
    assert main(["import-labels", str(config), str(tmp_path / "export.json"), "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert (line["n_new"], line["n_tasks"]) == (1, 1)
    assert main(["import-labels", str(config), str(tmp_path / "missing.json")]) == 2
    assert "missing.json: file not found" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["import-labels", str(config), str(tmp_path / "bad.json")]) == 2
    assert "bad.json: not JSON (line 1" in capsys.readouterr().err
    assert main(["import-labels", str(config)]) == 2  # no FILE: the server of LABEL_STUDIO_URL, which needs more
    assert "--url: give --project and set LABEL_STUDIO_API_KEY" in capsys.readouterr().err
    monkeypatch.delenv("LABEL_STUDIO_URL")
    assert main(["import-labels", str(config)]) == 2
    assert "give a Label Studio export FILE, or --url and --project" in capsys.readouterr().err


@pytest.mark.parametrize("url, reason", [("http://127.0.0.1:{port}", "cannot reach a Label Studio server there"),
                                         ("label-studio.example", "cannot reach a Label Studio server there")])
def test_a_bad_url_is_one_line_naming_it_with_exit_2(lake_run, tmp_path, capsys, monkeypatch, url, reason):
    from tests.labeling.conftest import free_port

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "some-token")
    config = tmp_path / "job.yaml"
    config.write_text(json.dumps(lake_run.model_dump(mode="json")))
    url = url.format(port=free_port())  # nothing listens there
    for command in (["export", "r1", "--config", str(config), "--to", "label-studio", "--out", str(tmp_path / "o")],
                    ["import-labels", str(config)]):
        assert main([*command, "--url", url, "--project", "p"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"alray: error: --url {url}: {reason} (") and err.count("\n") == 1, err
        assert "Traceback" not in err
    states = {row["state"] for row in read_items(Lake.from_output(lake_run.output)).to_pylist()}
    assert states == {"selected"}  # nothing was marked sent


def test_read_export_file_names_the_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.json: file not found"):
        read_export_file(tmp_path / "nope.json")
