"""The cluster entry points in jobs/: run ids from templates, configs from paths and object-store
URIs, the CLI's exit codes, and the example Airflow DAG's two tasks sharing one run id."""

from __future__ import annotations

import ast
import datetime as dt
import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "jobs"
sys.path.append(str(JOBS))  # after the standard library: jobs/select.py must not shadow `select`

from _common import expand_run_id, fetch_config, run_entry_point  # noqa: E402

NOW = dt.datetime(2026, 11, 27, 14, 30, tzinfo=dt.timezone.utc)


def test_run_id_templates_fill_in_the_utc_day_and_hour():
    assert expand_run_id("nightly-{date}", NOW) == "nightly-20261127"
    assert expand_run_id("hourly-{hour}", NOW) == "hourly-20261127T14"
    assert expand_run_id("plain-1", NOW) == "plain-1"
    with pytest.raises(ValueError, match=r"only \{date\} and \{hour\}"):
        expand_run_id("x-{day}", NOW)
    with pytest.raises(ValueError, match="expected letters"):
        expand_run_id("a b", NOW)


def test_config_from_a_path_or_a_file_uri(tmp_path):
    config = tmp_path / "alray.yaml"
    config.write_text("run: {seed: 1}\n")
    assert fetch_config(str(config), str(tmp_path / "x")) == str(config)
    (tmp_path / "copy").mkdir()
    local = fetch_config(f"file://{config}", str(tmp_path / "copy"))
    assert Path(local).read_text() == "run: {seed: 1}\n" and Path(local).parent == tmp_path / "copy"
    with pytest.raises(ValueError, match=r"^file:///nowhere/alray.yaml: config file not found$"):
        fetch_config("file:///nowhere/alray.yaml", str(tmp_path))


def test_config_from_an_s3_uri(tmp_path, monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(key, value)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="conf")
        s3.put_object(Bucket="conf", Key="jobs/alray.yaml", Body=b"run: {seed: 3}\n")
        local = fetch_config("s3://conf/jobs/alray.yaml", str(tmp_path))
        assert Path(local).name == "alray.yaml" and Path(local).read_text() == "run: {seed: 3}\n"
        with pytest.raises(ValueError, match=r"^s3://conf/jobs/missing.yaml: config file not found$"):
            fetch_config("s3://conf/jobs/missing.yaml", str(tmp_path))
    finally:
        server.stop()


def test_entry_point_turns_user_errors_into_exit_2_and_one_line(tmp_path, capsys):
    assert run_entry_point("score", ["--config", "file:///nowhere/alray.yaml", "--run-id", "r1"]) == 2
    assert capsys.readouterr().err == "alray: error: file:///nowhere/alray.yaml: config file not found\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("pool: {path: p}\nmodel: {checkpoint: m}\nselection: {n_samples: 5}\n"
                   "output: {path: o}\nsurprise: 1\n")
    assert run_entry_point("score", ["--config", f"file://{bad}", "--run-id", "day-{date}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("alray: error: ") and "surprise: unknown key" in err[-1]
    with pytest.raises(SystemExit) as missing:
        run_entry_point("select", ["--config", str(bad)])
    assert missing.value.code == 2  # argparse: --run-id is required to select a scored run


@pytest.mark.parametrize("job", ["score", "select", "run"])
def test_entry_points_start_as_scripts_despite_select_sharing_a_stdlib_name(job, tmp_path):
    # `python jobs/select.py` puts jobs/ first on the import path, where `select.py` would
    # shadow the standard library module that subprocess and asyncio import.
    result = subprocess.run([sys.executable, str(JOBS / f"{job}.py"), "--config", str(tmp_path / "none.yaml"),
                             "--run-id", "r-{date}"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"alray: error: {tmp_path / 'none.yaml'}: config file not found"


# --- the Airflow DAG ---------------------------------------------------------------------------

DAG_FILE = JOBS / "airflow_dag.py"


def _dag_tasks() -> tuple[dict[str, ast.Call], list[tuple[str, str]], dict[str, object]]:
    """The DAG file read without Airflow: its operator calls by task id, its `a >> b` edges, and
    the module constants (string assignments, f-strings included)."""
    tree = ast.parse(DAG_FILE.read_text())
    constants: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Constant, ast.JoinedStr)):
            name = node.targets[0].id  # type: ignore[attr-defined]
            constants[name] = eval(compile(ast.Expression(node.value), str(DAG_FILE), "eval"), {}, dict(constants))
    calls: dict[str, ast.Call] = {}
    variables: dict[str, str] = {}
    edges: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            keywords = {k.arg: k.value for k in node.value.keywords}
            if "task_id" in keywords:
                task_id = ast.literal_eval(keywords["task_id"])
                calls[task_id] = node.value
                variables[node.targets[0].id] = task_id  # type: ignore[attr-defined]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.RShift):
            edges.append((variables[node.left.id], variables[node.right.id]))  # type: ignore[attr-defined]
    return calls, edges, constants


def _command(call: ast.Call, constants: dict[str, object]) -> str:
    value = next(k.value for k in call.keywords if k.arg == "bash_command")
    return str(eval(compile(ast.Expression(value), str(DAG_FILE), "eval"), {}, dict(constants)))


def test_dag_file_runs_score_then_select_with_one_run_id_without_airflow():
    calls, edges, constants = _dag_tasks()
    assert list(calls) == ["score", "select"]
    assert edges == [("score", "select")]
    jinja2 = pytest.importorskip("jinja2")
    context = {"ds_nodash": "20261127", "ti": {"try_number": 1},
               "params": {"config": "s3://lake/alray.yaml", "ray_dashboard": "http://ray:8265",
                          "spark_master": "k8s://https://k8s", "image": "alray:1"}}
    commands = {task: jinja2.Template(_command(call, constants)).render(context).split()
                for task, call in calls.items()}
    for task, words in commands.items():
        assert words[words.index("--run-id") + 1] == "alray-20261127", task
        assert words[words.index("--config") + 1] == "s3://lake/alray.yaml", task
        script = next(w for w in words if w.endswith(f"/jobs/{task}.py"))
        assert (JOBS / Path(script).name).is_file()
    assert commands["score"][:2] == ["ray", "job"] and commands["select"][0] == "spark-submit"


def test_dag_imports_in_airflow_with_its_task_order():
    pytest.importorskip("airflow")
    spec = importlib.util.spec_from_file_location("alray_airflow_dag", DAG_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag
    assert dag.dag_id == "alray"
    assert sorted(dag.task_ids) == ["score", "select"]
    assert dag.get_task("select").upstream_task_ids == {"score"}
    assert dag.get_task("score").downstream_task_ids == {"select"}
