"""``alray export``: a run's picks to a labeling tool (Label Studio tasks, COCO, CVAT), then marked sent.

Every step can be repeated: the files are rewritten, a Label Studio project gets only the tasks
it lacks, and ids already sent stay as they were; so an export killed half-way and run again
ends where one undisturbed export ends.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from alray.config import Config
from alray.errors import InputError
from alray.faults import fail_once
from alray.labeling.coco_cvat import ExportedImage, write_coco, write_cvat
from alray.labeling.images import FileNames, ImageInfo, data_uri, image_info, write_image
from alray.labeling.label_studio import (
    TaskKind,
    build_task,
    client,
    label_config,
    push_tasks,
    server_errors,
    task_kind,
)
from alray.labeling.selection import Item, Selection, load_selection
from alray.lake import Lake
from alray.lake.rounds import expire_items, mark_sent, record_selection

Target = Literal["label-studio", "coco", "cvat"]
ImageMode = Literal["auto", "uri", "data", "files"]
# Label Studio serves files under LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT at this path.
LOCAL_FILES_URL = "/data/local-files/?d="
# URIs a Label Studio server loads itself: over HTTP, or from a cloud storage connected to the project.
SERVED_SCHEMES = ("http://", "https://", "s3://", "gs://", "azure-blob://")


@dataclass
class ExportSummary:
    """What an export wrote and where the ids went."""

    run_id: str
    to: str
    n_items: int
    files: list[str]
    destination: str
    newly_sent: int
    project_id: int | None = None
    tasks_created: int | None = None
    tasks_existing: int | None = None
    config_updated: bool | None = None  # whether an existing project's labeling config was replaced

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(asdict(self), sort_keys=True)


def export_run(config: Config, run_id: str, *, to: Target, out: Path, images: ImageMode = "auto",
               url: str | None = None, token: str | None = None, project: str | None = None,
               task: str | None = None, now: dt.datetime | None = None) -> ExportSummary:
    """Export the picks of ``run_id`` (a succeeded run of ``config``'s lake) and mark them sent.

    ``to`` label-studio writes ``OUT/tasks.json`` and, with ``url`` and ``token``, creates or
    updates the project ``project`` on that server; coco and cvat write ``OUT/annotations.json`` or
    ``OUT/annotations.xml`` with the images under ``OUT/images/``. ``task`` (classification or
    detection) defaults to the run's own.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    if task is not None:
        task_kind(task)  # an unknown kind is refused before anything is read
    if url and to != "label-studio":
        raise InputError(f"--url: only --to label-studio talks to a server, not {to}")
    if url and not token:
        raise InputError("--url: set LABEL_STUDIO_API_KEY to the API token of the Label Studio user")
    lake = Lake.from_output(config.output)
    selection = load_selection(lake, run_id, config)
    kind = task_kind(task or selection.config.task)
    # ids sent long ago and not labeled are expired first, so exporting them again sends them anew
    expire_items(lake, now=now, after=config.labeled.expiry())
    record_selection(lake, run_id, at=now)  # a run recorded before rounds existed becomes one now
    out.mkdir(parents=True, exist_ok=True)
    storage = selection.pool.storage_options or None
    summary = ExportSummary(run_id, to, len(selection.items), [], "", 0)
    if to == "label-studio":
        mode = images if images != "auto" else auto_image_mode(selection)
        tasks = _label_studio_tasks(selection, mode, out, storage, kind)
        path = out / "tasks.json"
        path.write_text(json.dumps(tasks, indent=1))
        summary.files.append(str(path))
        summary.destination = f"label-studio:file:{path.resolve()}"
        if url:
            assert token is not None
            title = project or f"alray {run_id}"
            with server_errors(url, title):
                pushed = push_tasks(client(url, token), title,
                                    label_config(kind, selection.payload, selection.classes), tasks)
            summary.project_id, summary.tasks_created, summary.tasks_existing, summary.config_updated = (
                pushed.project_id, pushed.created, pushed.existing, pushed.config_updated)
            summary.destination = f"label-studio:{url.rstrip('/')}/projects/{pushed.project_id}"
    else:
        exported = _write_images(selection, out, storage)
        path = out / ("annotations.json" if to == "coco" else "annotations.xml")
        (write_coco if to == "coco" else write_cvat)(path, exported, selection.classes, run_id=run_id,
                                                     boxes=kind.name == "detection")
        summary.files += [str(path), str(out / "images")]
        summary.destination = f"{to}:{path.resolve()}"
    fail_once("export.before_sent", kill=True)
    summary.newly_sent = mark_sent(lake, run_id, [item.id for item in selection.items],
                                   destination=summary.destination, at=now)
    return summary


def auto_image_mode(selection: Selection) -> str:
    """``uri`` when every pick's URI is one Label Studio can load itself (http(s), or an object store
    through a cloud storage connected to the project), else ``data``: a local path or a file listing
    names files that a Label Studio server elsewhere cannot read."""
    served = selection.payload == "uri" and all(
        (item.uri or "").lower().startswith(SERVED_SCHEMES) for item in selection.items)
    return "uri" if served else "data"


def _label_studio_tasks(selection: Selection, mode: str, out: Path, storage: dict[str, str] | None,
                        kind: TaskKind) -> list[dict[str, Any]]:
    names = FileNames()
    tasks = []
    for item in selection.items:
        if selection.payload == "text":
            reference = item.text or ""
        elif mode == "uri":
            if item.uri is None:
                raise InputError(f"--images uri: the pool {selection.pool.path} holds image bytes, not URIs; "
                                 "use --images data or --images files")
            reference = item.uri
            if kind.name == "detection":  # boxes go to Label Studio in percent of the image's size
                _sized(item, item.image_bytes(storage))
        else:
            data = item.image_bytes(storage)
            info = _sized(item, data)
            if mode == "data":
                reference = data_uri(data, info)
            else:
                name = names.name(item.id, info.extension)
                write_image(out / "images", name, data)
                reference = f"{LOCAL_FILES_URL}images/{name}"
        tasks.append(build_task(item, reference, run_id=selection.run_id, kind=kind,
                                payload=selection.payload, classes=selection.classes))
    return tasks


def _sized(item: Item, data: bytes) -> ImageInfo:
    info = image_info(data, item.id)
    item.width, item.height = info.width, info.height
    return info


def _write_images(selection: Selection, out: Path, storage: dict[str, str] | None) -> list[ExportedImage]:
    if selection.payload == "text":
        raise InputError(f"pool {selection.pool.path}: COCO and CVAT take images; this pool holds texts")
    names = FileNames()
    exported = []
    for item in selection.items:
        data = item.image_bytes(storage)
        info = _sized(item, data)
        name = names.name(item.id, info.extension)
        write_image(out / "images", name, data)
        prediction = selection.classes[item.pred] if item.pred is not None and item.pred < len(selection.classes) \
            else None
        exported.append(ExportedImage(item.id, name, info, item.rank, item.score, prediction, item.confidence(),
                                      item.boxes(selection.classes), item.objects))
    return exported
