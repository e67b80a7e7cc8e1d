"""The detection package is pure algorithms and adapters to files: none of its modules loads Ray or Spark."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import alray.detection


def test_no_detection_module_imports_ray_or_spark():
    modules = [f"alray.detection.{m.name}" for m in pkgutil.iter_modules(alray.detection.__path__)]
    modules += ["alray.strategies.object_balance", "alray.models.detector", "alray.models.torchvision_detectors"]
    assert "alray.detection.balance" in modules and "alray.detection.scorer" in modules
    code = (f"import importlib, sys\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('ray', 'pyspark')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert loaded.stdout.strip() == "[]"
