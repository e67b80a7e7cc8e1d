"""Label Studio: tasks and a labeling config for a selection, its JSON export read back as labels, and the
server's API through ``label-studio-sdk`` (the ``labelstudio`` extra).

Each task's data holds the image (or text), ``alray_id``, ``alray_round`` (the run that selected it),
its rank and score, and the model's uncertainty scores; the model's prediction goes in as a
pre-annotation. What depends on the kind of labeling task (the labeling config, the prediction,
reading a result back) is one :class:`TaskKind` in :data:`TASK_KINDS`: ``classification``
(choices) today; object detection (``rectanglelabels``) is one more entry.
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
    label: Callable[[list[dict[str, Any]]], str | None]             # that type's results -> the label string


def _choices_control(to_name: str, classes: list[str]) -> str:
    choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in classes)
    return f'<Choices name="{FROM_NAME}" toName="{to_name}" choice="single" showInline="true">{choices}</Choices>'


def _choices_prediction(item: Item, to_name: str, classes: list[str]) -> list[dict[str, Any]]:
    if item.pred is None or item.pred >= len(classes):
        return []
    return [{"from_name": FROM_NAME, "to_name": to_name, "type": "choices",
             "value": {"choices": [classes[item.pred]]}}]


def _choices_label(results: list[dict[str, Any]]) -> str | None:
    chosen = [c for r in results for c in r.get("value", {}).get("choices", [])]
    if not chosen:
        return None
    return chosen[0] if len(chosen) == 1 else json.dumps(sorted(chosen))


# Object detection adds an entry here: a RectangleLabels control, the model's boxes as
# rectanglelabels results (x, y, width, height in percent of the image), and the boxes read back
# as the label (a JSON list).
TASK_KINDS: dict[str, TaskKind] = {
    "classification": TaskKind("classification", _choices_control, _choices_prediction, "choices", _choices_label),
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
        label = kind.label(results)
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
              and any(r.get("type") == kind.result_type for r in a.get("result") or [])]
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
    """What an export to the server did: the project and how many tasks it created or found there."""

    project_id: int
    created: int
    existing: int
    sent_ids: list[str]


def push_tasks(api: Any, title: str, config_xml: str, tasks: list[dict[str, Any]], *,
               batch: int = 500) -> Pushed:
    """Create the project (or find it by title) and import the tasks it does not hold yet (by alray_id and
    round), so a repeated export adds nothing."""
    project = find_project(api, title)
    if project is None:
        project = api.projects.create(title=title, label_config=config_xml)
    held = {(t.data.get(ID_KEY), t.data.get(ROUND_KEY)) for t in _project_tasks(api, project.id)}
    fresh = [t for t in tasks if (t["data"][ID_KEY], t["data"][ROUND_KEY]) not in held]
    for start in range(0, len(fresh), batch):
        api.projects.import_tasks(project.id, request=fresh[start:start + batch])
    return Pushed(int(project.id), len(fresh), len(tasks) - len(fresh), [t["data"][ID_KEY] for t in tasks])


def _project_tasks(api: Any, project_id: int) -> Iterable[Any]:
    return api.tasks.list(project=project_id, fields="all", page_size=500)


def fetch_export(api: Any, project: str) -> tuple[int, Any]:
    """The project's JSON export (annotated tasks) from the server: (project id, tasks)."""
    found = find_project(api, project)
    if found is None:
        raise InputError(f"--project: no Label Studio project {project!r}")
    data = b"".join(api.projects.exports.download_sync(found.id, export_type="JSON", download_all_tasks=False))
    return int(found.id), json.loads(data)
