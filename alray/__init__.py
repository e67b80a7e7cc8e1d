"""alray: distributed active-learning data selection on Ray and Spark.

``alray.select`` and ``alray.score`` (:mod:`alray.api`) work on pandas or Arrow on one machine;
:mod:`alray.spark` and :mod:`alray.ray` take a Spark DataFrame or a Ray Dataset.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "score", "select"]


def __getattr__(name: str) -> Any:
    # The API loads on first use, so `import alray` (the CLI, the jobs) stays cheap.
    if name in ("select", "score"):
        from alray import api

        return getattr(api, name)
    if name in ("api", "spark", "ray"):
        import importlib

        return importlib.import_module(f"alray.{name}")
    raise AttributeError(f"module 'alray' has no attribute {name!r}")
