"""alray: distributed active-learning data selection on Ray and Spark."""

__version__ = "0.1.0"
