"""alray export to files: Label Studio tasks, COCO and CVAT, and the round's ids marked sent."""

from __future__ import annotations

import base64
import datetime as dt
import json
import xml.etree.ElementTree as ET

import pytest

from alray.errors import InputError
from alray.labeling.export import export_run
from alray.lake import Lake
from alray.lake.rounds import read_items
from tests.labeling.conftest import BOXES, CLASSES, SHAPES, detection_lake, write_run


def _states(config) -> dict[str, str]:
    return {row["id"]: row["state"] for row in read_items(Lake.from_output(config.output)).to_pylist()}


def test_label_studio_tasks_with_data_uris_and_the_round_sent(lake_run, tmp_path):
    summary = export_run(lake_run, "r1", to="label-studio", out=tmp_path / "out")
    tasks = json.loads((tmp_path / "out" / "tasks.json").read_text())
    assert [t["data"]["alray_id"] for t in tasks] == [f"img/{i:02d}.png" for i in range(4)]  # rank order
    assert [t["data"]["alray_rank"] for t in tasks] == [1, 2, 3, 4]
    image = tasks[0]["data"]["image"]
    assert image.startswith("data:image/png;base64,")
    assert base64.b64decode(image.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == [CLASSES[1]]  # probs [.2, .7, .1]
    assert tasks[1]["data"]["alray_pred"] == CLASSES[0] and tasks[1]["data"]["alray_margin"] == 0.3
    assert summary.newly_sent == 4
    assert _states(lake_run) == dict.fromkeys([f"img/{i:02d}.png" for i in range(4)], "sent")
    again = export_run(lake_run, "r1", to="label-studio", out=tmp_path / "out")
    assert again.newly_sent == 0


def test_label_studio_files_mode_writes_the_images_beside_the_tasks(lake_run, tmp_path):
    export_run(lake_run, "r1", to="label-studio", out=tmp_path / "out", images="files")
    tasks = json.loads((tmp_path / "out" / "tasks.json").read_text())
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=images/img_00.png"
    assert (tmp_path / "out" / "images" / "img_00.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="holds image bytes, not URIs"):
        export_run(lake_run, "r1", to="label-studio", out=tmp_path / "out", images="uri")


def test_coco_lists_the_images_and_categories(lake_run, tmp_path):
    export_run(lake_run, "r1", to="coco", out=tmp_path / "coco")
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == CLASSES and coco["categories"][0]["id"] == 1
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in coco["images"]][:2] == [
        (1, "img_00.png", 12, 12), (2, "img_01.png", 12, 12)]
    assert coco["annotations"] == [] and coco["images"][0]["alray"]["prediction"] == CLASSES[1]
    for image in coco["images"]:
        assert (tmp_path / "coco" / "images" / image["file_name"]).is_file()


def test_cvat_xml_has_tag_labels_and_the_predictions(lake_run, tmp_path):
    export_run(lake_run, "r1", to="cvat", out=tmp_path / "cvat")
    root = ET.parse(tmp_path / "cvat" / "annotations.xml").getroot()
    assert root.findtext("version") == "1.1"
    labels = root.find("meta/task/labels")
    assert [(label.findtext("name"), label.findtext("type")) for label in labels] == [(c, "tag") for c in CLASSES]
    images = root.findall("image")
    assert [image.attrib["name"] for image in images] == [f"img_{i:02d}.png" for i in range(4)]
    assert images[0].find("tag").attrib == {"label": CLASSES[1], "source": "auto"}
    assert images[0].attrib["width"] == "12"


def test_a_pool_of_uris_is_referenced_as_given(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.labeling.conftest import _png, lake_config

    (tmp_path / "files").mkdir()
    (tmp_path / "pool").mkdir()
    uris = []
    for i in range(3):
        path = tmp_path / "files" / f"{i}.png"
        path.write_bytes(_png(i))
        uris.append(str(path))
    pq.write_table(pa.table({"id": ["u0", "u1", "u2"], "uri": uris}), tmp_path / "pool" / "p.parquet")
    config = lake_config(tmp_path, str(tmp_path / "pool"))
    write_run(config, "r1", ["u2", "u0"])
    # a Label Studio server cannot read this machine's paths: by default the images go inline
    export_run(config, "r1", to="label-studio", out=tmp_path / "out")
    tasks = json.loads((tmp_path / "out" / "tasks.json").read_text())
    assert [base64.b64decode(t["data"]["image"].split(",", 1)[1]) for t in tasks] == [_png(2), _png(0)]
    export_run(config, "r1", to="label-studio", out=tmp_path / "out", images="uri")  # as asked
    tasks = json.loads((tmp_path / "out" / "tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [uris[2], uris[0]]
    export_run(config, "r1", to="cvat", out=tmp_path / "cvat")  # files read through their URIs
    assert sorted(p.name for p in (tmp_path / "cvat" / "images").iterdir()) == ["u0.png", "u2.png"]


def test_uris_label_studio_loads_itself_are_referenced_as_given(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.labeling.conftest import lake_config

    uris = ["https://images.example.com/a.png", "s3://bucket/b.png", "gs://bucket/c.png"]
    (tmp_path / "pool").mkdir()
    pq.write_table(pa.table({"id": ["a", "b", "c"], "uri": uris}), tmp_path / "pool" / "p.parquet")
    config = lake_config(tmp_path, str(tmp_path / "pool"))
    write_run(config, "r1", ["a", "b", "c"])
    export_run(config, "r1", to="label-studio", out=tmp_path / "out")
    assert [t["data"]["image"] for t in json.loads((tmp_path / "out" / "tasks.json").read_text())] == uris


def test_only_a_succeeded_run_is_exported(lake_run, tmp_path):
    with pytest.raises(InputError, match="run 'nope': not in the runs table"):
        export_run(lake_run, "nope", to="coco", out=tmp_path / "x")
    with pytest.raises(InputError, match="--url: set LABEL_STUDIO_API_KEY"):
        export_run(lake_run, "r1", to="label-studio", out=tmp_path / "x", url="http://127.0.0.1:9")
    with pytest.raises(InputError, match="--url: only --to label-studio"):
        export_run(lake_run, "r1", to="coco", out=tmp_path / "x", url="http://127.0.0.1:9", token="t")


def test_the_cli_takes_the_server_from_label_studio_url_for_label_studio_only(lake_run, tmp_path, capsys,
                                                                             monkeypatch):
    from alray.cli import main

    config = tmp_path / "job.yaml"
    config.write_text(json.dumps(lake_run.model_dump(mode="json")))
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    assert main(["export", "r1", "--config", str(config), "--to", "coco", "--out", str(tmp_path / "coco")]) == 0
    capsys.readouterr()
    # Label Studio tasks go to that server: without a token, the server is refused before any file is written
    assert main(["export", "r1", "--config", str(config), "--to", "label-studio", "--out", str(tmp_path / "ls")]) == 2
    assert "--url: set LABEL_STUDIO_API_KEY" in capsys.readouterr().err
    monkeypatch.delenv("LABEL_STUDIO_URL")
    assert main(["export", "r1", "--config", str(config), "--to", "label-studio", "--out", str(tmp_path / "ls")]) == 0


def test_exporting_an_overdue_id_again_records_its_expiry_and_sends_it_anew(lake_run, tmp_path):
    sent = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
    export_run(lake_run, "r1", to="coco", out=tmp_path / "coco", now=sent)
    later = sent + dt.timedelta(days=20)  # past labeled.expire_after (14 days)
    again = export_run(lake_run, "r1", to="coco", out=tmp_path / "coco", now=later)
    assert again.newly_sent == 4
    rows = read_items(Lake.from_output(lake_run.output)).to_pylist()
    assert {(row["state"], row["sent_at"], row["expired_at"]) for row in rows} == {("sent", later, None)}


def test_a_glob_of_image_files_is_exported_from_the_folder_the_ids_are_relative_to(tmp_path):
    from alray.config import config_from_dict
    from tests.labeling.conftest import CLASSES, _png

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, name in enumerate(["a.png", "b.png"]):
        (folder / name).write_bytes(_png(i))
    (folder / "notes.jpg").write_bytes(b"not matched by the glob")
    config = config_from_dict({"pool": {"path": str(folder / "*.png"), "format": "images"},
                               "labeled": {"classes": CLASSES}, "selection": {"n_samples": 2},
                               "output": {"path": str(tmp_path / "lake")}})
    write_run(config, "r1", ["b.png", "a.png"])
    export_run(config, "r1", to="label-studio", out=tmp_path / "out", images="uri")
    tasks = json.loads((tmp_path / "out" / "tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [str(folder / "b.png"), str(folder / "a.png")]
    export_run(config, "r1", to="coco", out=tmp_path / "coco")
    assert (tmp_path / "coco" / "images" / "b.png").read_bytes() == _png(1)


def test_the_export_reads_the_run_s_recorded_config_as_the_report_does(lake_run, tmp_path):
    """Given only the lake (another job file, no pool, no classes), the export finds the pool and the class
    names the run recorded, with the given config's credentials, through the report's reader."""
    from alray.config import config_from_dict

    elsewhere = config_from_dict({"pool": {"path": str(tmp_path / "moved"), "storage_options": {"token": "t"}},
                                  "selection": {"n_samples": 1}, "output": lake_run.output.model_dump(mode="json")})
    export_run(elsewhere, "r1", to="label-studio", out=tmp_path / "out")
    tasks = json.loads((tmp_path / "out" / "tasks.json").read_text())
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == [CLASSES[1]]
    assert tasks[0]["data"]["image"].startswith("data:image/png;base64,")


@pytest.fixture
def detection_run(tmp_path):
    return detection_lake(tmp_path)


def test_a_detection_run_exports_its_boxes_as_rectangles(detection_run, tmp_path):
    export_run(detection_run, "d1", to="label-studio", out=tmp_path / "ls")
    first, second = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert (first["data"]["alray_width"], first["data"]["alray_height"]) == (12, 12)
    assert [(r["type"], r["value"]["rectanglelabels"], r["value"]["x"], r["value"]["width"])
            for r in first["predictions"][0]["result"]] == [("rectanglelabels", ["square"], 50.0, 50.0),
                                                            ("rectanglelabels", ["circle"], 0.0, 25.0)]
    assert "predictions" not in second  # no objects: nothing to pre-annotate

    export_run(detection_run, "d1", to="coco", out=tmp_path / "coco")
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == SHAPES
    assert [(a["image_id"], a["category_id"], a["bbox"]) for a in coco["annotations"]] == [
        (1, 2, [6.0, 3.0, 6.0, 6.0]), (1, 1, [0.0, 0.0, 3.0, 6.0])]  # clipped to the image, as in Label Studio

    export_run(detection_run, "d1", to="cvat", out=tmp_path / "cvat")
    root = ET.parse(tmp_path / "cvat" / "annotations.xml").getroot()
    assert {label.findtext("type") for label in root.find("meta/task/labels")} == {"rectangle"}
    (box, _) = root.find("image").findall("box")
    assert (box.attrib["label"], box.attrib["xtl"], box.attrib["ybr"], box.attrib["source"]) == (
        "square", "6.00", "9.00", "auto")


def test_rectangles_drawn_in_label_studio_come_back_as_the_image_s_boxes(detection_run, tmp_path):
    from alray.labeling.importer import import_labels
    from alray.lake.labels import current_labels, read_labels

    export_run(detection_run, "d1", to="label-studio", out=tmp_path / "ls")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    drawn = {"type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": 12,
             "original_height": 12, "value": {"x": 25.0, "y": 50.0, "width": 50.0, "height": 25.0, "rotation": 0,
                                              "rectanglelabels": ["circle"]}}
    for n, task in enumerate(tasks):  # the first gets a box, the second is marked as holding no object
        task.update(id=n + 1, annotations=[{"id": n + 1, "updated_at": "2026-03-01T00:00:00Z",
                                            "result": [drawn] if n == 0 else []}])
    summary = import_labels(detection_run, tasks, source="export.json")
    assert summary.n_new == 2
    labels = {row["id"]: json.loads(row["label"]) for row in current_labels(read_labels(
        Lake.from_output(detection_run.output)))}
    assert labels == {"img/00.png": [{"label": "circle", "x0": 3.0, "y0": 6.0, "x1": 9.0, "y1": 9.0}],
                      "img/01.png": []}
    assert _states(detection_run) == dict.fromkeys(BOXES, "labeled")


def test_a_crop_selection_run_names_the_objects_it_picked(tmp_path):
    import pyarrow as pa

    from alray.tables import OBJECT_RANKING_SCHEMA

    config = detection_lake(tmp_path, level="objects")
    rows = [{"run_id": "d1", "id": f"img/00.png#{k}", "image_id": "img/00.png", "rank": rank, "selected": picked,
             "score": score} for k, rank, picked, score in ((1, 1, True, 0.9), (0, 3, False, 0.2))]
    rows.append({"run_id": "d1", "id": "img/02.png#0", "image_id": "img/02.png", "rank": 2, "selected": True,
                 "score": 0.5})  # not among the picked images: not exported
    Lake.from_output(config.output).replace_run("object_ranking", pa.Table.from_pylist(rows, OBJECT_RANKING_SCHEMA),
                                                "d1")
    export_run(config, "d1", to="label-studio", out=tmp_path / "ls")
    first, second = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert first["data"]["alray_objects"] == [{"id": "img/00.png#1", "rank": 1, "score": 0.9}]
    assert "alray_objects" not in second["data"]
    export_run(config, "d1", to="coco", out=tmp_path / "coco")
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert coco["images"][0]["alray"]["objects"] == [{"id": "img/00.png#1", "rank": 1, "score": 0.9}]
