"""The Kubernetes manifests and the Dockerfile, checked offline: the kustomize overlays render,
core kinds validate against the Kubernetes schemas (strict), custom resources against the schemas
in tests/data (strict too: an unknown field is an error, as the API server would prune it
silently), and the rules of the deployment hold (non-root, read-only root, requests and limits,
least rights, one run id per scheduled pair)."""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from alray.config import config_from_dict

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
SCHEMAS = Path(__file__).parents[1] / "data"
KUBERNETES_VERSION = "1.32"
OVERLAYS = ("dev", "prod")
CUSTOM_SCHEMAS = {
    ("ray.io/v1", "RayJob"): "rayjob.schema.json",
    ("ray.io/v1", "RayCronJob"): "raycronjob.schema.json",
    ("sparkoperator.k8s.io/v1beta2", "SparkApplication"): "sparkapplication.schema.json",
    ("sparkoperator.k8s.io/v1beta2", "ScheduledSparkApplication"): "scheduledsparkapplication.schema.json",
}


# --- rendering ------------------------------------------------------------------------------

def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render(folder: Path) -> list[dict[str, Any]]:
    """The documents ``kustomize build folder`` renders."""
    command = _kustomize_command()
    if command is None:
        if os.environ.get("CI"):
            pytest.fail("neither kustomize nor kubectl is on PATH; CI must render the overlays")
        pytest.skip("neither kustomize nor kubectl is on PATH")
    result = subprocess.run([*command, str(folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{folder} does not render: {result.stderr.strip()}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(K8S / "overlays" / name) for name in OVERLAYS} | {"base": render(K8S / "base")}


def _find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# --- schemas --------------------------------------------------------------------------------

def _kubernetes_definitions() -> dict[str, Any]:
    folder = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    versions = sorted((p.name for p in folder.iterdir() if p.name.endswith("-local-strict")),
                      key=lambda name: [int(x) for x in re.findall(r"\d+", name)])
    wanted = [v for v in versions if v.startswith(f"v{KUBERNETES_VERSION}.")] or versions[-1:]
    return json.loads((folder / wanted[-1] / "_definitions.json").read_text())


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The custom resource schemas, with the strict Kubernetes definitions their core types point to."""
    resources = [Resource.from_contents(_kubernetes_definitions())]
    resources += [Resource.from_contents(json.loads(p.read_text())) for p in sorted(SCHEMAS.glob("*.schema.json"))]
    return Registry().with_resources((r.id(), r) for r in resources)


def validate(doc: dict[str, Any], registry: Registry) -> None:
    """Validate one manifest: core kinds with kubernetes-validate, custom kinds with tests/data."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CUSTOM_SCHEMAS:
        schema = registry.contents(f"https://alray.test/{CUSTOM_SCHEMAS[key]}")
        jsonschema.Draft202012Validator(schema, registry=registry).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_every_rendered_manifest_validates_strictly(rendered, registry, overlay):
    docs = rendered[overlay]
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == sorted({"ConfigMap", "CronJob", "RayCronJob", "RayJob", "Role", "RoleBinding",
                            "ScheduledSparkApplication", "ServiceAccount", "SparkApplication"})
    for doc in docs:
        validate(doc, registry)


def _typo(doc: dict[str, Any], path: tuple[str | int, ...], wrong: str) -> dict[str, Any]:
    broken = copy.deepcopy(doc)
    node: Any = broken
    for part in path[:-1]:
        node = node[part]
    node[wrong] = node.pop(path[-1])
    return broken


@pytest.mark.parametrize(("kind", "path", "wrong"), [
    ("RayJob", ("spec", "shutdownAfterJobFinishes"), "shutdownAfterJobFinish"),
    ("RayJob", ("spec", "rayClusterSpec", "workerGroupSpecs", 0, "groupName"), "group"),
    ("RayJob", ("spec", "rayClusterSpec", "headGroupSpec", "template", "spec", "containers", 0, "securityContext"),
     "securityContxt"),
    ("RayCronJob", ("spec", "jobTemplate", "entrypoint"), "entryPoint"),
    ("SparkApplication", ("spec", "driver", "coreLimit"), "coreLimt"),
    ("SparkApplication", ("spec", "executor", "securityContext", "readOnlyRootFilesystem"), "readOnlyRootFileSystem"),
    ("ScheduledSparkApplication", ("spec", "concurrencyPolicy"), "concurrency"),
    ("CronJob", ("spec", "jobTemplate", "spec", "activeDeadlineSeconds"), "activeDeadline"),
    ("Role", ("rules", 0, "verbs"), "verb"),
])
def test_a_typo_in_any_manifest_is_an_error(rendered, registry, kind, path, wrong):
    broken = _typo(_find(rendered["prod"], kind), path, wrong)
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate(broken, registry)


def test_a_missing_required_field_and_a_wrong_enum_are_errors(rendered, registry):
    app = copy.deepcopy(_find(rendered["prod"], "SparkApplication"))
    del app["spec"]["mainApplicationFile"]
    with pytest.raises(jsonschema.ValidationError, match="mainApplicationFile"):
        validate(app, registry)
    job = copy.deepcopy(_find(rendered["prod"], "RayJob"))
    job["spec"]["submissionMode"] = "K8sMode"
    with pytest.raises(jsonschema.ValidationError, match="K8sMode"):
        validate(job, registry)


# --- the rules of the deployment -------------------------------------------------------------

def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod a manifest makes, Kubernetes' own or an operator's."""
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        yield "pod", spec["jobTemplate"]["spec"]["template"]["spec"]
    elif doc["kind"] in ("RayJob", "RayCronJob"):
        job = spec if doc["kind"] == "RayJob" else spec["jobTemplate"]
        yield "submitter", job["submitterPodTemplate"]["spec"]
        yield "head", job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        for group in job["rayClusterSpec"]["workerGroupSpecs"]:
            yield f"worker group {group['groupName']}", group["template"]["spec"]


def spark_specs(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"] if doc["kind"] == "SparkApplication" else doc["spec"]["template"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_non_root_read_only_with_requests_and_limits(rendered, overlay):
    checked = 0
    for doc in rendered[overlay]:
        for where, pod in pod_specs(doc):
            what = f"{doc['kind']} {doc['metadata']['name']} {where}"
            assert pod["securityContext"]["runAsNonRoot"] is True, what
            assert pod["securityContext"]["runAsUser"] != 0, what
            assert pod["serviceAccountName"] == "alray" and pod["automountServiceAccountToken"] is False, what
            for container in pod["containers"] + pod.get("initContainers", []):
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True, what
                assert context["allowPrivilegeEscalation"] is False, what
                assert context["capabilities"]["drop"] == ["ALL"], what
                for bound in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{what}: {bound}"
                # a read-only root needs somewhere to write: Ray, Spark and Python all use /tmp
                assert "/tmp" in {m["mountPath"] for m in container.get("volumeMounts", [])}, what
                checked += 1
        if doc["kind"] in ("SparkApplication", "ScheduledSparkApplication"):
            spec = spark_specs(doc)
            for role in ("driver", "executor"):
                pod = spec[role]
                what = f"{doc['kind']} {role}"
                assert pod["podSecurityContext"]["runAsNonRoot"] is True, what
                assert pod["securityContext"]["readOnlyRootFilesystem"] is True, what
                assert pod["securityContext"]["allowPrivilegeEscalation"] is False, what
                assert {"cores", "coreRequest", "coreLimit", "memory", "memoryLimit"} <= set(pod), what
                assert "/tmp" in {m["mountPath"] for m in pod["volumeMounts"]}, what
                checked += 1
    assert checked >= 10


def test_service_accounts_have_the_least_rights(rendered):
    docs = rendered["prod"]
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    assert set(accounts) == {"alray", "alray-spark-driver"}
    assert accounts["alray"]["automountServiceAccountToken"] is False
    roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
    assert [r["kind"] for r in roles] == ["Role"], "namespaced rights only"
    for rule in roles[0]["rules"]:
        assert rule["apiGroups"] == [""]
        assert set(rule["resources"]) <= {"pods", "services", "configmaps", "persistentvolumeclaims"}
        assert "*" not in rule["verbs"] and not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
    binding = _find(docs, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "alray-spark-driver", "namespace": "alray"}]
    app = _find(docs, "SparkApplication")["spec"]
    assert app["driver"]["serviceAccount"] == "alray-spark-driver"
    assert app["executor"]["serviceAccount"] == "alray"


def test_cronjob_runs_one_whole_job_at_a_time_with_deadlines_and_no_retry_of_bad_config(rendered):
    cron = _find(rendered["dev"], "CronJob")["spec"]
    assert cron["suspend"] is False
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["startingDeadlineSeconds"] > 0
    job = cron["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 1 and job["activeDeadlineSeconds"] > 0
    assert {"action": "FailJob", "onExitCodes": {"containerName": "alray", "operator": "In", "values": [2]}} in (
        job["podFailurePolicy"]["rules"])
    container = job["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "/opt/alray/jobs/run.py"]
    assert container["image"] == "registry.example.com/alray:dev"


def test_rayjob_shuts_its_cluster_down_and_has_an_optional_gpu_group(rendered):
    base, prod = _find(rendered["base"], "RayJob")["spec"], _find(rendered["prod"], "RayCronJob")["spec"]
    assert base["shutdownAfterJobFinishes"] is True and base["ttlSecondsAfterFinished"] > 0
    groups = {g["groupName"]: g for g in base["rayClusterSpec"]["workerGroupSpecs"]}
    assert groups["gpu"]["replicas"] == 0, "the GPU group is off unless an overlay turns it on"
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == "1"
    prod_groups = {g["groupName"]: g for g in prod["jobTemplate"]["rayClusterSpec"]["workerGroupSpecs"]}
    assert prod_groups["gpu"]["replicas"] == 1
    assert "--set score.gpus_per_actor=1" in prod["jobTemplate"]["entrypoint"]
    assert prod["suspend"] is False
    # the scheduled job is the one-off job on a schedule: same cluster, same entry point
    one_off = dict(base, suspend=None, entrypoint=None)
    scheduled = dict(_find(rendered["base"], "RayCronJob")["spec"]["jobTemplate"], suspend=None, entrypoint=None)
    assert scheduled == one_off


def test_base_runs_nothing_and_each_overlay_turns_on_one_way(rendered):
    def running(docs):
        return sorted(d["kind"] for d in docs if d["kind"] in ("CronJob", "RayCronJob", "ScheduledSparkApplication",
                                                                 "RayJob", "SparkApplication")
                      and d["spec"].get("suspend") is False)
    assert running(rendered["base"]) == []
    assert running(rendered["dev"]) == ["CronJob"]
    assert running(rendered["prod"]) == ["RayCronJob", "ScheduledSparkApplication"]


def _run_id(arguments: list[str]) -> str:
    return arguments[arguments.index("--run-id") + 1]


def test_scheduled_score_and_select_share_the_days_run_id_and_select_comes_later(rendered):
    docs = rendered["prod"]
    score = _find(docs, "RayCronJob")["spec"]
    select = _find(docs, "ScheduledSparkApplication")["spec"]
    assert _run_id(score["jobTemplate"]["entrypoint"].split()) == _run_id(select["template"]["arguments"])
    assert "{date}" in _run_id(select["template"]["arguments"])
    assert score["timeZone"] == select["timeZone"]
    hour = lambda schedule: int(schedule.split()[1])  # noqa: E731
    assert hour(select["schedule"]) > hour(score["schedule"])
    assert select["concurrencyPolicy"] == "Forbid"
    one_off_score = _find(docs, "RayJob")["spec"]["entrypoint"].split()
    assert _run_id(one_off_score) == _run_id(_find(docs, "SparkApplication")["spec"]["arguments"])


def test_entry_points_and_images_match_the_dockerfile_and_the_repository(rendered):
    docs = rendered["prod"]
    app = _find(docs, "SparkApplication")["spec"]
    assert app["image"] == "registry.example.com/alray:0.1.0"
    assert _find(docs, "ScheduledSparkApplication")["spec"]["template"]["image"] == app["image"]
    main = app["mainApplicationFile"].removeprefix("local:///opt/alray/")
    entry = _find(docs, "RayJob")["spec"]["entrypoint"].split()[1].removeprefix("/opt/alray/")
    run = _find(docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"][1]
    for path in (main, entry, run.removeprefix("/opt/alray/")):
        assert (ROOT / path).is_file(), path
    assert app["sparkConf"]["spark.pyspark.python"] == "/opt/alray/venv/bin/python"
    import pyspark

    assert app["sparkVersion"] == pyspark.__version__ == _dockerfile_args()["SPARK_VERSION"]


def test_the_configmap_holds_a_valid_alray_config(rendered):
    for overlay in OVERLAYS:
        config_map = _find(rendered[overlay], "ConfigMap", "alray-config")
        config = config_from_dict(yaml.safe_load(config_map["data"]["alray.yaml"]), source="k8s ConfigMap")
        assert config.output.path.startswith("s3://")
    mounts = [m for _, pod in pod_specs(_find(rendered["prod"], "CronJob")) for c in pod["containers"]
              for m in c["volumeMounts"] if m["name"] == "config"]
    assert mounts == [{"name": "config", "mountPath": "/etc/alray", "readOnly": True}]


# --- the Dockerfile ---------------------------------------------------------------------------

def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def _dockerfile_args() -> dict[str, str]:
    return dict(arg.split("=", 1) for op, arg in _dockerfile() if op == "ARG" and "=" in arg)


def test_dockerfile_runs_as_a_numeric_non_root_user():
    instructions = _dockerfile()
    users = [arg for op, arg in instructions if op == "USER"]
    final = re.sub(r"\$\{(\w+)\}", lambda m: _dockerfile_args()[m.group(1)], users[-1])
    uid = final.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert instructions[-1][0] == "USER", "nothing after the USER line may run as root"


def test_dockerfile_is_cpu_by_default_with_cuda_by_build_argument_and_the_projects_torch_pin():
    args = _dockerfile_args()
    assert args["TORCH_VARIANT"] == "cpu"
    makefile_pin = re.search(r"torch==([\w.+]+)", (ROOT / "Makefile").read_text()).group(1)
    assert args["TORCH_VERSION"] == makefile_pin
    torch_line = next(arg for op, arg in _dockerfile() if op == "RUN" and "torch==" in arg)
    assert '"torch==${TORCH_VERSION}"' in torch_line and "whl/${TORCH_VARIANT}" in torch_line
    assert args["BASE_IMAGE"] == "apache/spark:${SPARK_VERSION}-python3"
    assert not any("nvidia" in arg.lower() or "cuda" in arg.lower() for op, arg in _dockerfile() if op == "FROM")


def test_dockerfile_copies_what_the_manifests_run_and_dockerignore_keeps_the_rest_out():
    copies = [arg.split()[0] for op, arg in _dockerfile() if op == "COPY"]
    assert {"alray/", "jobs/", "conf/", "pyproject.toml"} <= set(copies)
    assert dict(_dockerfile()).get("WORKDIR") == "/opt/alray"
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "demo", "tests"} <= ignored
    assert not {"alray", "jobs", "conf"} & ignored
