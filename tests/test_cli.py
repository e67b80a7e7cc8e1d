"""The alray command: exit codes and one-line errors, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import yaml


def alray(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alray.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def write_config(tmp_path, **changes) -> str:
    data = {
        "pool": {"path": str(tmp_path / "no-pool")},
        "model": {"checkpoint": str(tmp_path / "model.pt")},
        "selection": {"n_samples": 5},
        "output": {"path": str(tmp_path / "lake")},
        **changes,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_validate_prints_the_resolved_config(tmp_path):
    result = alray("validate", write_config(tmp_path), "--set", "selection.n_samples=7")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["selection"]["n_samples"] == 7
    assert re.fullmatch(r".*job\.yaml: valid \(config hash [0-9a-f]{16}\)\n", result.stderr), result.stderr


def test_bad_config_exits_2_with_one_line_naming_the_key(tmp_path):
    result = alray("validate", write_config(tmp_path, selection={"n_samples": 5, "strategy": "x"}))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "selection.strategy: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_override_exits_2(tmp_path):
    result = alray("run", write_config(tmp_path), "--set", "selection.n_samples=-1")
    assert result.returncode == 2
    assert "selection.n_samples" in result.stderr and "Traceback" not in result.stderr


def test_missing_pool_exits_2_naming_the_table(tmp_path):
    result = alray("run", write_config(tmp_path), "--quiet", "--run-id", "r1")
    assert result.returncode == 2
    assert f"{tmp_path / 'no-pool'}: table not found" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_missing_config_file_exits_2(tmp_path):
    result = alray("run", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "config file not found" in result.stderr


def test_bad_run_id_exits_2(tmp_path):
    result = alray("run", write_config(tmp_path), "--run-id", "a/b")
    assert result.returncode == 2
    assert "run.run_id" in result.stderr


def test_embed_without_an_embed_section_exits_2(tmp_path):
    result = alray("embed", write_config(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "embed: " in result.stderr and "no embed section" in result.stderr
    result = alray("embed", write_config(tmp_path, embed={"epochs": 0}))
    assert result.returncode == 2 and "embed.epochs" in result.stderr


def test_embed_trains_prints_each_epoch_then_reuses(tmp_path):
    import pyarrow.parquet as pq
    import pytest

    from alray.demo import build_pool

    pytest.importorskip("ray.train")
    pool, _images, _labels = build_pool(n_images=24, n_blank=0, n_blurred=0, n_corrupt=0, seed=0)
    (tmp_path / "pool").mkdir()
    pq.write_table(pool, str(tmp_path / "pool" / "part-00000.parquet"))
    config = write_config(tmp_path, pool={"path": str(tmp_path / "pool")}, model=None, embed={
        "epochs": 2, "batch_size": 8, "image_size": 16, "channels": 1, "width": 4, "num_workers": 1})
    result = subprocess.run([sys.executable, "-m", "alray.cli", "embed", config], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    epochs = re.findall(r"\[alray\] embed: epoch (\d)/2: loss [0-9.]+, [0-9.]+ images/s", result.stderr)
    assert epochs == ["1", "2"], result.stderr[-2000:]
    assert re.search(r"encoder trained: .*/lake/encoders/[0-9a-f]{16}/encoder\.pt\n  key [0-9a-f]{16}, 2 epochs, "
                     r"final loss [0-9.]+, wall [0-9.]+s", result.stdout), result.stdout
    again = alray("embed", config, "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["reused"] is True and summary["epochs"] == 2 and "reused encoder" in again.stderr
