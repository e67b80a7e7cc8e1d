"""Selection on a Spark DataFrame the caller already holds: what ``alray select`` itself runs.

>>> with alray.spark.select_dataframe(df, alray.api.selection_config(n_samples=500)) as selection:  # doctest: +SKIP
...     selection.ranking.write.parquet("ranking/")
"""

from alray.stages.select import SparkSelection, select_dataframe

__all__ = ["SparkSelection", "select_dataframe"]
