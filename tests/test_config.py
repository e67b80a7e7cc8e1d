"""Config: YAML into pydantic models; errors name the dotted key; --set overrides any key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from alray.config import apply_override, config_from_dict, load_config, parse_duration, parse_size
from alray.errors import ConfigError

MINIMAL = {
    "pool": {"path": "pool"},
    "model": {"checkpoint": "model.pt"},
    "selection": {"n_samples": 10},
    "output": {"path": "lake"},
}


def write(tmp_path, data) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_public_keys_parse_with_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.pool.path == "pool" and config.pool.format == "parquet"
    assert config.output.path == "lake"
    assert config.selection.n_samples == 10
    assert config.run.seed == 0
    assert config.spark.master == "local[2]"


def test_the_demo_config_is_valid():
    config = load_config("conf/demo.yaml")
    assert config.selection.n_samples == 100
    assert config.pool.format == "parquet"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**MINIMAL, "selection": {"n_samples": 10, "n_sample": 5}}, "selection.n_sample: unknown key"),
        ({**MINIMAL, "extra": 1}, "extra: unknown key"),
        ({**MINIMAL, "selection": {"n_samples": "many"}}, "selection.n_samples: Input should be a valid integer"),
        ({**MINIMAL, "selection": {"n_samples": 0}}, "selection.n_samples: Input should be greater than 0"),
        ({**MINIMAL, "pool": {"path": "p", "format": "xlsx"}}, "pool.format: Input should be 'parquet', 'delta'"),
        ({k: v for k, v in MINIMAL.items() if k != "output"}, "output: required key is missing"),
        ({**MINIMAL, "pool": {"format": "delta"}}, "pool.path: required key is missing"),
        ({**MINIMAL, "run": {"seed": 1.5}}, "run.seed: Input should be a valid integer"),
        ({**MINIMAL, "run": {"run_id": "../etc"}}, "run.run_id: expected letters"),
        ({**MINIMAL, "selection": {"n_samples": 1, "filters": [{"column": "a", "op": "in", "value": 3}]}},
         "selection.filters.0: op 'in' needs a non-empty list value"),
        ({**MINIMAL, "selection": {"n_samples": 1, "filters": [{"column": "a", "op": "~", "value": 3}]}},
         "selection.filters.0.op"),
        ({**MINIMAL, "selection": {"n_samples": 1, "filters": [{"column": "t", "op": "within_last", "value": "7x"}]}},
         "selection.filters.0: expected a duration"),
        ({**MINIMAL, "ray": {"object_store_memory": "2 gigs"}}, "ray.object_store_memory: expected a size"),
        ({**MINIMAL, "ray": {"object_store_memory": "10m"}}, "ray.object_store_memory: must be at least 100m"),
    ],
)
def test_errors_name_the_dotted_key(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value)
    assert str(error.value).startswith(path)
    assert "\n" not in str(error.value)


def test_set_overrides_any_key_with_yaml_values(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), [
        "selection.n_samples=50", "pool.path=other", "score.mc_samples=5", "labeled.path=lab",
        "selection.filters=[{column: sharpness, op: '>', value: 1.5}]", "spark.conf={a: b}",
    ])
    assert config.selection.n_samples == 50
    assert config.pool.path == "other"
    assert config.score.mc_samples == 5
    assert config.labeled.path == "lab"
    assert config.selection.filters[0].value == 1.5
    assert config.spark.conf == {"a": "b"}
    indexed = load_config(write(tmp_path, MINIMAL), [
        "selection.filters=[{column: a, op: '>', value: 1}]", "selection.filters.0.value=7"])
    assert indexed.selection.filters[0].value == 7


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("selection.n_samples", "expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("selection.n_samples.x=3", "selection.n_samples is a value"),
        ("selection.bogus=3", "selection.bogus: unknown key"),
        ("selection.n_samples=abc", "selection.n_samples: Input should be a valid integer"),
    ],
)
def test_bad_overrides_name_the_key(tmp_path, assignment, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(write(tmp_path, MINIMAL), [assignment])


def test_file_problems_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pool: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML at line"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listing)


def test_config_hash_ignores_run_id_but_not_settings():
    first = config_from_dict({**MINIMAL, "run": {"run_id": "a"}})
    second = config_from_dict({**MINIMAL, "run": {"run_id": "b"}})
    third = config_from_dict({**MINIMAL, "selection": {"n_samples": 11}})
    assert first.config_hash() == second.config_hash() != third.config_hash()


def test_apply_override_creates_missing_sections():
    data: dict = {}
    apply_override(data, "ray.address=auto")
    assert data == {"ray": {"address": "auto"}}


@pytest.mark.parametrize(("text", "seconds"), [("7d", 604800), ("12h", 43200), ("30m", 1800), ("1.5w", 907200)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("value", "size"), [("2g", 2 * 2**30), ("512MiB", 512 * 2**20), ("1.5G", 3 * 2**29),
                                             ("300000000", 300_000_000), (300_000_000, 300_000_000), ("64k", 65536)])
def test_sizes(value, size):
    assert parse_size(value) == size


def test_object_store_memory_reads_a_size(tmp_path):
    config = load_config(write(tmp_path, {**MINIMAL, "ray": {"object_store_memory": "1g"}}))
    assert config.ray.object_store_memory == 2**30
    assert load_config(write(tmp_path, MINIMAL)).ray.object_store_memory is None


def test_object_store_memory_sizes_the_local_ray_instance_whose_task_history_is_bounded():
    from alray.engines import TASK_EVENTS_KEPT

    code = ("import ray; from alray.config import RayConfig; from alray.engines import ensure_ray; "
            "ensure_ray(RayConfig(num_cpus=1, object_store_memory='100m')); "
            "print(int(ray.cluster_resources()['object_store_memory']), ray._config.task_events_max_num_task_in_gcs(),"
            " ray._private.worker.global_worker.node._config.get('idle_worker_killing_time_threshold_ms', 'env'));"
            " ray.shutdown()")
    env = {k: v for k, v in os.environ.items() if k != "RAY_task_events_max_num_task_in_gcs"}
    env["RAY_idle_worker_killing_time_threshold_ms"] = "2500"  # a user's setting wins
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    store, kept, idle_ms = done.stdout.strip().splitlines()[-1].split()
    assert int(store) == 100 * 2**20
    # the GCS keeps a bounded task history: its memory does not grow with the pool
    assert int(kept) == TASK_EVENTS_KEPT < 100_000
    assert idle_ms == "env"  # not overridden: Ray reads the user's RAY_idle_worker_killing_time_threshold_ms


def test_credentials_are_never_printed_recorded_or_hashed(tmp_path):
    def with_secret(secret: str):
        return config_from_dict({
            **MINIMAL,
            "pool": {"path": "s3://b/pool",
                     "storage_options": {"AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "eu-west-1"}},
            "output": {"path": "s3://b/lake", "storage_options": {"AWS_SESSION_TOKEN": secret}},
            "labeled": {"path": "s3://b/labeled", "storage_options": {"azure_storage_sas_key": secret}},
        })

    first, rotated = with_secret("hunter2-first"), with_secret("hunter2-rotated")
    assert first.pool.storage_options["AWS_SECRET_ACCESS_KEY"] == "hunter2-first"  # still what the job uses
    assert "hunter2" not in first.to_json() and '"AWS_REGION":"eu-west-1"' in first.to_json()
    assert first.config_hash() == rotated.config_hash() and first.score_hash() == rotated.score_hash()
    path = write(tmp_path, first.model_dump(mode="json"))
    done = subprocess.run([sys.executable, "-m", "alray.cli", "validate", path], capture_output=True, text=True)
    assert done.returncode == 0 and "hunter2" not in done.stdout + done.stderr and "REDACTED" in done.stdout


def test_model_format_choices_are_the_loaders_formats():
    from typing import get_args

    from alray.config import ModelConfig
    from alray.models.loading import MODEL_FORMATS

    assert set(get_args(ModelConfig.model_fields["format"].annotation)) == set(MODEL_FORMATS)
