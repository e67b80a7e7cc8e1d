"""Label Studio: tasks and a labeling config for a selection, its JSON export read back as labels, and the
server's API through ``label-studio-sdk`` (the ``labelstudio`` extra).

Each task's data holds the image (or text), ``alray_id``, ``alray_round`` (the run that selected it),
its rank and score, and the model's uncertainty scores; the model's prediction goes in as a
pre-annotation. What depends on the kind of labeling task (the labeling config, the prediction,
reading a result back) is one :class:`TaskKind` in :data:`TASK_KINDS`: ``classification``
(choices: the label is the class name) and ``detection`` (rectanglelabels: the label is the JSON
list of the image's boxes, :func:`boxes_label`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

from alray.errors import InputError
from alray.labeling.selection import Item

FROM_NAME = "label"  # the control tag's name: results come back under it
ID_KEY, ROUND_KEY = "alray_id", "alray_round"


@dataclass(frozen=True)
class TaskKind:
    """What one kind of labeling task needs: its labeling config, its pre-annotation, its result read back."""

    name: str
    control: Callable[[str, list[str]], str]                        # (object tag name, classes) -> control XML
    prediction: Callable[[Item, str, list[str]], list[dict[str, Any]]]  # (item, object tag, classes) -> results
    result_type: str                                                # the result "type" it reads back
    # that type's results of one annotation and the task's data -> the label string (None: no label)
    label: Callable[[list[dict[str, Any]], dict[str, Any]], str | None]
    empty_is_label: bool = False  # an annotation with no result of the type says something (no objects)


def _choices_control(to_name: str, classes: list[str]) -> str:
    choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in classes)
    return f'<Choices name="{FROM_NAME}" toName="{to_name}" choice="single" showInline="true">{choices}</Choices>'


def _choices_prediction(item: Item, to_name: str, classes: list[str]) -> list[dict[str, Any]]:
    if item.pred is None or item.pred >= len(classes):
        return []
    return [{"from_name": FROM_NAME, "to_name": to_name, "type": "choices",
             "value": {"choices": [classes[item.pred]]}}]


def _choices_label(results: list[dict[str, Any]], data: dict[str, Any]) -> str | None:
    chosen = [c for r in results for c in r.get("value", {}).get("choices", [])]
    if not chosen:
        return None
    return chosen[0] if len(chosen) == 1 else json.dumps(sorted(chosen))


def _rectangles_control(to_name: str, classes: list[str]) -> str:
    labels = "".join(f"<Label value={quoteattr(c)}/>" for c in classes)
    return f'<RectangleLabels name="{FROM_NAME}" toName="{to_name}">{labels}</RectangleLabels>'


def _rectangles_prediction(item: Item, to_name: str, classes: list[str]) -> list[dict[str, Any]]:
    """The detector's boxes (pixels of the image) as rectanglelabels results, in percent of the image."""
    if not item.detections or not item.width or not item.height:
        return []
    width, height = item.width, item.height
    return [{"from_name": FROM_NAME, "to_name": to_name, "type": "rectanglelabels",
             "original_width": width, "original_height": height, "image_rotation": 0,
             "value": {"x": 100 * box["x0"] / width, "y": 100 * box["y0"] / height,
                       "width": 100 * (box["x1"] - box["x0"]) / width, "height": 100 * (box["y1"] - box["y0"]) / height,
                       "rotation": 0, "rectanglelabels": [box["label"]]},
             "score": _finite(box["score"])}
            for box in item.boxes(classes)]


def boxes_label(boxes: list[dict[str, Any]]) -> str:
    """A detection label: the JSON list of an image's boxes, each ``label`` (the class name) and ``x0, y0, x1,
    y1`` (pixels of the image, corners, as the detections column holds boxes), sorted; ``[]`` for none."""
    rounded = [{"label": b["label"], **{k: round(float(b[k]), 2) for k in ("x0", "y0", "x1", "y1")}} for b in boxes]
    return json.dumps(sorted(rounded, key=lambda b: (b["y0"], b["x0"], b["label"], b["x1"], b["y1"])))


def _rectangles_label(results: list[dict[str, Any]], data: dict[str, Any]) -> str | None:
    """Rectangles in percent of the image back to boxes in its pixels (the size each result gives, else the
    one alray put in the task's data); None when the size is unknown."""
    boxes = []
    for result in results:
        value = result.get("value") or {}
        width = result.get("original_width") or data.get("alray_width")
        height = result.get("original_height") or data.get("alray_height")
        names = value.get("rectanglelabels") or []
        if not width or not height or not names:
            return None
        if value.get("rotation"):
            raise InputError(f"task of {data.get(ID_KEY)!r}: a rotated rectangle ({value['rotation']} degrees); "
                             "alray's boxes are axis-aligned")
        x0, y0 = value["x"] * width / 100, value["y"] * height / 100
        boxes.append({"label": names[0], "x0": x0, "y0": y0, "x1": x0 + value["width"] * width / 100,
                      "y1": y0 + value["height"] * height / 100})
    return boxes_label(boxes)


TASK_KINDS: dict[str, TaskKind] = {
    "classification": TaskKind("classification", _choices_control, _choices_prediction, "choices", _choices_label),
    "detection": TaskKind("detection", _rectangles_control, _rectangles_prediction, "rectanglelabels",
                          _rectangles_label, empty_is_label=True),
}


def task_kind(name: str) -> TaskKind:
    """The task kind named ``name``; InputError listing the known ones otherwise."""
    if name not in TASK_KINDS:
        raise InputError(f"--task: expected one of {sorted(TASK_KINDS)}, got {name!r}")
    return TASK_KINDS[name]


def object_tag(payload: str) -> tuple[str, str]:
    """(data key, object tag) for a pool payload: images (bytes or URIs) or texts."""
    return ("text", "Text") if payload == "text" else ("image", "Image")


def label_config(kind: TaskKind, payload: str, classes: list[str]) -> str:
    """The project's labeling config (XML) for a payload and the class names."""
    key, tag = object_tag(payload)
    return f'<View><{tag} name="{key}" value="${key}"/>{kind.control(key, classes)}</View>'


def build_task(item: Item, reference: str, *, run_id: str, kind: TaskKind, payload: str,
               classes: list[str]) -> dict[str, Any]:
    """One Label Studio task: the data (reference, ids, rank, scores) and the model's pre-annotation."""
    key, _ = object_tag(payload)
    data: dict[str, Any] = {key: reference, ID_KEY: item.id, ROUND_KEY: run_id, "alray_rank": item.rank,
                            "alray_score": _finite(item.score),
                            **{f"alray_{k}": _finite(v) for k, v in sorted(item.scores.items())}}
    if item.pred is not None and item.pred < len(classes):
        data["alray_pred"] = classes[item.pred]
    if item.width and item.height:
        data["alray_width"], data["alray_height"] = item.width, item.height
    if item.objects:
        data["alray_objects"] = [{**o, "score": _finite(o["score"])} for o in item.objects]
    task: dict[str, Any] = {"data": data}
    result = kind.prediction(item, key, classes)
    if result:
        task["predictions"] = [{"model_version": f"alray-{run_id}", "score": _finite(item.confidence()),
                                "result": result}]
    return task


def _finite(value: float | None) -> float | None:
    # JSON has no NaN or infinity: Label Studio's API and strict readers refuse them.
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class Parsed:
    """Label rows read from an export, and the tasks skipped with their reason."""

    rows: list[dict[str, Any]]
    skipped: dict[str, int]


def parse_export(tasks: Any, *, where: str, kind: TaskKind, id_field: str = ID_KEY) -> Parsed:
    """Label rows (``id``, ``label``, ``source``, ``round``, ``labeled_at``) from Label Studio's JSON export.

    Each task gives its latest annotation that was not cancelled and holds a result of the kind's
    type; its source names the project and the annotation, so the same annotation read from a
    file or from the API is the same row.
    """
    if not isinstance(tasks, list):
        raise InputError(f"{where}: expected Label Studio's JSON export (a list of tasks), got "
                         f"{type(tasks).__name__}")
    rows: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    for index, task in enumerate(tasks):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise InputError(f"{where}: task {index}: expected an object with 'data'")
        item_id = task["data"].get(id_field)
        if item_id is None:
            skipped[f"no {id_field} in data"] = skipped.get(f"no {id_field} in data", 0) + 1
            continue
        annotation = _latest_annotation(task.get("annotations") or [], kind, where, index)
        if annotation is None:
            skipped["no annotation"] = skipped.get("no annotation", 0) + 1
            continue
        results = [r for r in annotation.get("result") or [] if r.get("type") == kind.result_type]
        label = kind.label(results, task["data"])
        if label is None:
            skipped["empty result"] = skipped.get("empty result", 0) + 1
            continue
        project = task.get("project", annotation.get("project"))
        rows.append({"id": str(item_id), "label": label,
                     "source": f"label-studio:project/{project}/annotation/{annotation.get('id')}",
                     "round": task["data"].get(ROUND_KEY),
                     "labeled_at": _timestamp(annotation.get("updated_at") or annotation.get("created_at"),
                                              where, index)})
    return Parsed(rows, skipped)


def _latest_annotation(annotations: list[Any], kind: TaskKind, where: str, index: int) -> dict[str, Any] | None:
    usable = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")
              and (kind.empty_is_label or any(r.get("type") == kind.result_type for r in a.get("result") or []))]
    if not usable:
        return None
    return max(usable, key=lambda a: (_timestamp(a.get("updated_at") or a.get("created_at"), where, index),
                                      a.get("id") or 0))


def _timestamp(text: Any, where: str, index: int) -> dt.datetime:
    if not text:
        return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    try:
        stamp = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{where}: task {index}: annotation time {text!r} is not an ISO time") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)


# The server's API, through label-studio-sdk.

def client(url: str, token: str) -> Any:
    """A label-studio-sdk client; a legacy token or a personal access token (the SDK tells them apart)."""
    try:
        from label_studio_sdk import LabelStudio
    except ImportError:
        raise InputError("--url: the Label Studio API needs label-studio-sdk: pip install 'alray[labelstudio]'") \
            from None
    with server_errors(url):
        return LabelStudio(base_url=url.rstrip("/"), api_key=token)


@contextmanager
def server_errors(url: str, project: str | None = None) -> Iterator[None]:
    """Turn what the server answers (or the way to it fails with) into an InputError naming ``--url``,
    ``--project`` or ``LABEL_STUDIO_API_KEY``; other errors go through."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        yield
    except ApiError as exc:
        raise InputError(_refusal(exc.status_code, exc.body, url, project)) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--url {url}: cannot reach a Label Studio server there ({reason})") from None


def _refusal(status: int | None, body: Any, url: str, project: str | None) -> str:
    detail = body.get("detail") or body.get("validation_errors") if isinstance(body, dict) else body
    text = " ".join(str(detail or "").split())[:200]
    if status in (401, 403):
        return (f"LABEL_STUDIO_API_KEY: the Label Studio server at {url} refused the token (HTTP {status}"
                f"{': ' + text if text else ''}); set it to the API token of a user of that server")
    if status == 404 and project:
        return f"--project {project}: not found on the Label Studio server at {url} (HTTP 404)"
    flag = f"--project {project}" if project else f"--url {url}"
    return f"{flag}: the Label Studio server at {url} answered HTTP {status}{': ' + text if text else ''}"


def find_project(api: Any, project: str) -> Any | None:
    """The project whose id (digits) or title is ``project``; None when there is none."""
    if project.isdigit():
        from label_studio_sdk.core.api_error import ApiError

        try:
            return api.projects.get(int(project))
        except ApiError as exc:
            if exc.status_code == 404:
                return None
            raise
    for found in api.projects.list(title=project):
        if found.title == project:
            return found
    return None


@dataclass(frozen=True)
class Pushed:
    """What an export to the server did: the project, whether its labeling config was replaced, and how many
    tasks it created or found there."""

    project_id: int
    created: int
    existing: int
    sent_ids: list[str]
    config_updated: bool = False


def push_tasks(api: Any, title: str, config_xml: str, tasks: list[dict[str, Any]], *,
               batch: int = 500) -> Pushed:
    """Create the project (or find it by title or id), give it ``config_xml`` when its labeling config differs
    (Label Studio refuses one its annotations do not fit), and import the tasks it does not hold yet (by
    alray_id and round), so a repeated export adds nothing.

    Two exports to one project at the same moment are not coordinated: both may import a task
    the project lacked, and two exports naming a new title may each create a project.
    """
    project = find_project(api, title)
    updated = False
    if project is None:
        project = api.projects.create(title=title, label_config=config_xml)
    elif _same_xml(project.label_config) != _same_xml(config_xml):
        project = api.projects.update(project.id, label_config=config_xml)
        updated = True
    held = {(t.data.get(ID_KEY), t.data.get(ROUND_KEY)) for t in _project_tasks(api, project.id)}
    fresh = [t for t in tasks if (t["data"][ID_KEY], t["data"][ROUND_KEY]) not in held]
    for start in range(0, len(fresh), batch):
        api.projects.import_tasks(project.id, request=fresh[start:start + batch])
    return Pushed(int(project.id), len(fresh), len(tasks) - len(fresh), [t["data"][ID_KEY] for t in tasks], updated)


def _same_xml(text: str | None) -> str:
    # Label Studio may store the config with other white space between tags
    return "".join((text or "").split())


def _project_tasks(api: Any, project_id: int) -> Iterable[Any]:
    return api.tasks.list(project=project_id, fields="all", page_size=500)


def fetch_export(api: Any, project: str) -> tuple[int, Any]:
    """The project's JSON export (annotated tasks) from the server: (project id, tasks)."""
    found = find_project(api, project)
    if found is None:
        raise InputError(f"--project: no Label Studio project {project!r}")
    data = b"".join(api.projects.exports.download_sync(found.id, export_type="JSON", download_all_tasks=False))
    return int(found.id), json.loads(data)
