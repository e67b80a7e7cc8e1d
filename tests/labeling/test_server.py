"""The labeling loop against a real Label Studio server: a run's picks exported through the API, annotated
there as an annotator would, imported back; the next run excludes them."""

from __future__ import annotations

import json

import pytest
import yaml
from deltalake import DeltaTable

from alray.cli import main
from alray.errors import InputError
from alray.lake import Lake
from alray.lake.labels import current_labels, read_labels
from alray.lake.rounds import read_items
from alray.pipeline import run_pipeline
from alray.progress import Progress
from tests.conftest import demo_config

pytestmark = pytest.mark.slow

DIGITS = [str(d) for d in range(10)]


@pytest.fixture
def api(label_studio, monkeypatch):
    from label_studio_sdk import LabelStudio

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    return LabelStudio(base_url=label_studio.url, api_key=label_studio.token)


def _round(config, run_id: str):
    config = config.model_copy(deep=True)
    config.run.run_id = run_id
    return run_pipeline(config, progress=Progress(quiet=True))


def _states(lake: Lake, run_id: str) -> dict[str, str]:
    return {row["id"]: row["state"] for row in read_items(lake).to_pylist() if row["run_id"] == run_id}


def test_rounds_through_a_label_studio_server(label_studio, api, ray_session, demo_files, tmp_path, capsys,
                                              monkeypatch):
    config = demo_config(demo_files, tmp_path / "lake", n_samples=8, engine="local", filters=[])
    config.labeled.path = None  # labels come from the lake only
    config.labeled.classes = DIGITS
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    lake = Lake.from_output(config.output)

    first = _round(config, "round-1")
    picks = [row["id"] for row in sorted(lake.read_run("ranking", "round-1").to_pylist(), key=lambda r: r["rank"])
             if row["selected"]]
    assert first.counts["selected"] == 8 and set(_states(lake, "round-1").values()) == {"selected"}

    # export: the project is created on the server with a task per pick and the model's predictions
    assert main(["export", "round-1", "--config", str(path), "--to", "label-studio", "--url", label_studio.url,
                 "--project", "digits", "--out", str(tmp_path / "export"), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert (exported["tasks_created"], exported["newly_sent"]) == (8, 8)
    project = exported["project_id"]
    tasks = list(api.tasks.list(project=project, fields="all"))
    assert sorted(t.data["alray_id"] for t in tasks) == sorted(picks)
    assert all(t.data["image"].startswith("data:image/png;base64,") for t in tasks)
    assert all(t.total_predictions == 1 for t in tasks)
    assert set(_states(lake, "round-1").values()) == {"sent"}
    # exporting again (the server from LABEL_STUDIO_URL this time) adds no task and changes no state
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    assert main(["export", "round-1", "--config", str(path), "--to", "label-studio",
                 "--project", "digits", "--out", str(tmp_path / "export"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tasks_created"] == 0
    assert len(list(api.tasks.list(project=project))) == 8

    # an annotator labels five tasks and skips one (a cancelled annotation)
    answers = {}
    for n, task in enumerate(sorted(tasks, key=lambda t: t.data["alray_rank"])[:6]):
        label = DIGITS[n % 3]
        api.annotations.create(task.id, result=[{"from_name": "label", "to_name": "image", "type": "choices",
                                                  "value": {"choices": [label]}}], was_cancelled=n == 5)
        if n < 5:
            answers[task.data["alray_id"]] = label

    assert main(["import-labels", str(path), "--project", "digits", "--json"]) == 0  # --url: LABEL_STUDIO_URL
    imported = json.loads(capsys.readouterr().out)
    assert (imported["n_labels"], imported["n_new"]) == (5, 5)
    assert {row["id"]: row["label"] for row in current_labels(read_labels(lake))} == answers
    states = _states(lake, "round-1")
    assert {i for i, s in states.items() if s == "labeled"} == set(answers)
    assert sum(s == "sent" for s in states.values()) == 3

    # the same annotations from an export file (a FILE beats LABEL_STUDIO_URL): nothing changes, not even a version
    export_file = tmp_path / "export.json"
    export_file.write_bytes(b"".join(api.projects.exports.download_sync(project, export_type="JSON")))
    versions = [DeltaTable(lake.table(name)).version() for name in ("labels", "round_items")]
    assert main(["import-labels", str(path), str(export_file), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["n_labels"], again["n_new"], again["rounds_changed"]) == (5, 0, 0)
    assert [DeltaTable(lake.table(name)).version() for name in ("labels", "round_items")] == versions

    assert main(["rounds", str(path), "--json"]) == 0
    (history,) = json.loads(capsys.readouterr().out)["rounds"]
    assert {k: history[k] for k in ("selected", "sent", "waiting", "labeled", "expired")} == {
        "selected": 8, "sent": 8, "waiting": 3, "labeled": 5, "expired": 0}
    assert sum(history["labels"].values()) == 5

    # the next round keeps out the labeled ids (centres) and the ones still out for labeling
    second = _round(config, "round-2")
    assert second.filtered_by_reason == {"labeled": 5, "selected_before": 3}
    picked_again = {row["id"] for row in lake.read_run("ranking", "round-2").to_pylist() if row["selected"]}
    assert len(picked_again) == 8 and not picked_again & set(picks)
    assert set(_states(lake, "round-2").values()) == {"selected"}


def test_a_detection_round_through_a_label_studio_server(label_studio, api, tmp_path):
    """Label Studio takes the RectangleLabels project and the detector's boxes as predictions; a drawn box
    comes back as the image's label."""
    from alray.labeling.export import export_run
    from alray.labeling.importer import import_labels
    from alray.labeling.label_studio import TASK_KINDS, fetch_export, label_config
    from tests.labeling.conftest import detection_lake

    config = detection_lake(tmp_path)
    with pytest.raises(InputError, match=r"^LABEL_STUDIO_API_KEY: the Label Studio server at http://127\.0\.0\.1:\d+ "
                                         r"refused the token \(HTTP 401"):
        export_run(config, "d1", to="label-studio", out=tmp_path / "out", url=label_studio.url, token="wrong",
                   project="shapes")
    summary = export_run(config, "d1", to="label-studio", out=tmp_path / "out", url=label_studio.url,
                         token=label_studio.token, project="shapes")
    assert summary.tasks_created == 2
    tasks = {t.data["alray_id"]: t for t in api.tasks.list(project=summary.project_id, fields="all")}
    assert (tasks["img/00.png"].total_predictions, tasks["img/01.png"].total_predictions) == (1, 0)
    # a project whose labeling config went stale (a class less) gets alray's again, and no task twice
    stale = summary.project_id
    api.projects.update(stale, label_config=label_config(TASK_KINDS["detection"], "image", ["circle"]))
    again = export_run(config, "d1", to="label-studio", out=tmp_path / "out", url=label_studio.url,
                       token=label_studio.token, project=str(stale))
    assert (again.config_updated, again.tasks_created, again.tasks_existing) == (True, 0, 2)
    assert '<Label value="square"/>' in api.projects.get(stale).label_config
    api.annotations.create(tasks["img/00.png"].id, result=[{
        "from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": 12,
        "original_height": 12, "value": {"x": 50.0, "y": 25.0, "width": 25.0, "height": 50.0, "rotation": 0,
                                         "rectanglelabels": ["square"]}}])
    project_id, exported = fetch_export(api, "shapes")
    imported = import_labels(config, exported, source=f"project {project_id}")
    assert imported.n_new == 1
    labels = {row["id"]: json.loads(row["label"]) for row in current_labels(read_labels(
        Lake.from_output(config.output)))}
    assert labels == {"img/00.png": [{"label": "square", "x0": 6.0, "y0": 3.0, "x1": 9.0, "y1": 9.0}]}
