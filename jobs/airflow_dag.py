"""Example Airflow DAG: score on a Ray cluster, then select on Spark, as two tasks of one run id.

The run id is the DAG run's logical date (``alray-YYYYMMDD``): a retry or a backfill of a day
reruns that day's run and replaces its rows. Copy this file into the DAGs folder and set the
params (or trigger with other values); the Airflow workers need the `ray` and `spark-submit`
commands and network access to both clusters.
"""

from __future__ import annotations

import datetime as dt

from airflow import DAG

try:  # Airflow 3 keeps the bash operator in the standard provider
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

RUN_ID = "alray-{{ ds_nodash }}"
JOB_ARGS = f"--config {{{{ params.config }}}} --run-id {RUN_ID} --json"

with DAG(
    dag_id="alray",
    description="Active-learning selection: score on Ray, then select on Spark",
    schedule="0 1 * * *",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=10)},
    params={
        "config": "s3://example-lake/alray/alray.yaml",
        "ray_dashboard": "http://ray-head.alray.svc:8265",
        "spark_master": "k8s://https://kubernetes.default.svc",
        "image": "registry.example.com/alray:0.1.0",
    },
    tags=["alray"],
) as dag:
    # `ray job submit` waits for the job and fails the task when the job fails.
    score = BashOperator(
        task_id="score",
        bash_command=(
            "ray job submit --address {{ params.ray_dashboard }} "
            "--submission-id alray-score-{{ ds_nodash }}-{{ ti.try_number }} -- "
            f"python /opt/alray/jobs/score.py {JOB_ARGS} --ray-address auto"
        ),
        execution_timeout=dt.timedelta(hours=6),
    )
    select = BashOperator(
        task_id="select",
        bash_command=(
            "spark-submit --master {{ params.spark_master }} --deploy-mode cluster "
            "--conf spark.kubernetes.container.image={{ params.image }} "
            "--conf spark.kubernetes.authenticate.driver.serviceAccountName=alray-spark-driver "
            f"local:///opt/alray/jobs/select.py {JOB_ARGS}"
        ),
        execution_timeout=dt.timedelta(hours=2),
    )
    score >> select
