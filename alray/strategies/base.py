"""What a selection strategy is: one class with a role, its config checks, its label and its arithmetic.

A strategy reads one entry of ``selection.strategies`` (a :class:`~alray.config.StrategyConfig`).
Its role says where the selection uses it:

- ``filter``: a condition a candidate must meet (run before anything else);
- ``objective``: a per-candidate value (N,); the objectives multiply into one weight, each
  raised to its strength;
- ``diversity``: the weighted k-center over the embeddings;
- ``balance``: quotas over the values of a column, or over groups of them (:class:`Balancer`);
- ``sampler``: draws the batch at random with probabilities from a score (``power``, ``softmax``,
  ``softrank``): each candidate gets a key, its log-probability (times the objectives' product)
  plus Gumbel noise; the picks are the largest keys and the ranking follows the keys;
- ``selector``: picks the whole batch by its own procedure (``typiclust``, ``probcover``,
  ``badge``, ``cluster_margin``), after the filters; the ranking then orders the rest by
  distance to the picks;
- ``auto``: stands for other strategies, chosen by the labeled set and the batch once the
  filters have run (:mod:`alray.strategies.auto`).

Objectives are evaluated in two steps so that every engine can run them: :meth:`Objective.prepare`
asks the engine's :class:`Candidates` for what needs the whole candidate set (a column's range,
a reference sample, centroids), then :meth:`Objective.evaluate` maps one batch of candidates to
values with NumPy. Spark evaluates batch by batch on its executors; the single-machine path
cuts its table into the same batches. Nothing here knows an engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from alray.config import FilterConfig, QueryConfig, StrategyConfig

EMBEDDINGS, PREDICTIONS = "embeddings", "predictions"
# The features column a ``predictions`` input reads.
PREDICTION_COLUMN = "pred"

# Keeps every candidate selectable: an objective scales a candidate's chances, never erases them.
OBJECTIVE_FLOOR = 1e-6
# Distances below this count as zero in the inverse-distance objectives.
DISTANCE_EPSILON = 1e-6

ROLES = ("filter", "objective", "diversity", "balance", "sampler", "selector", "auto")
# What an entry's ``input`` may name: the embeddings, a numeric column (a score or metadata),
# or a column or the model's predictions.
INPUT_KINDS = ("embeddings", "column", "column_or_predictions")


def embedding_matrix(batch: pa.RecordBatch | pa.Table, column: str = "embedding") -> np.ndarray:
    """Column ``column`` as a float32 matrix (N, D); (0, 0) for no rows.

    The column holds lists of floats, or each row's float32 values as bytes (:func:`packed_floats`:
    how the Spark stage carries embeddings, read here without a copy).
    """
    values = batch.column(column)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    n = len(values)
    if not n:
        return np.zeros((0, 0), dtype=np.float32)
    if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
        offsets = np.frombuffer(values.buffers()[1], dtype=np.int64 if pa.types.is_large_binary(values.type)
                                else np.int32, count=n + 1, offset=values.offset * (
                                    8 if pa.types.is_large_binary(values.type) else 4))
        data = np.frombuffer(values.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
        return data.view(np.float32).reshape(n, -1)
    flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(n, -1)


def packed_floats(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A list<float32> column as binary: each row's float32 values as bytes, sharing the list's buffer.

    The Spark stage carries embeddings this way: the JVM copies one byte string per row where a
    list is converted element by element at every crossing between Python and the JVM.
    A list column with nulls, or of other widths per row, keeps its lengths (4 bytes a value).
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_binary(values.type):
        return values
    if not pa.types.is_list(values.type) or values.type.value_type != pa.float32():
        values = values.cast(pa.list_(pa.float32()))
    offsets = pc.multiply(pc.subtract(values.offsets, values.offsets[0]), 4).cast(pa.int32())
    start = values.offsets[0].as_py()
    flat = values.values.slice(start, values.offsets[-1].as_py() - start)
    data = flat.buffers()[1]
    byte_start = flat.offset * 4
    return pa.Array.from_buffers(pa.binary(), len(values), [values.buffers()[0], offsets.buffers()[1],
                                                            data.slice(byte_start, len(flat) * 4)],
                                 null_count=values.null_count)


def float_lists(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A binary column of :func:`packed_floats` (or any list of floats) as list<float32>."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not (pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type)):
        return values.cast(pa.list_(pa.float32()))
    matrix = embedding_matrix(pa.table({"v": values}), "v")
    n, width = matrix.shape if len(values) else (0, 0)
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel(), pa.float32()), mask=values.is_null())


def numeric_column(table: pa.RecordBatch | pa.Table, name: str) -> np.ndarray:
    """Column ``name`` of ``table`` as float64 (N,); nulls become NaN."""
    values = pc.cast(table.column(name), pa.float64())
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def ascending_non_null(values: np.ndarray) -> np.ndarray:
    """The non-NaN ``values``, ascending."""
    return np.sort(values[~np.isnan(values)])


@dataclass
class CandidateBatch:
    """Some candidates: their ids (N,), embeddings (N, D) and every other column of the features."""

    table: pa.RecordBatch | pa.Table
    embeddings: np.ndarray

    @classmethod
    def of(cls, table: pa.RecordBatch | pa.Table) -> CandidateBatch:
        """A batch over ``table`` (it must hold ``id`` and ``embedding``)."""
        return cls(table, embedding_matrix(table))

    @property
    def ids(self) -> list[str]:
        """The candidates' ids, in batch order."""
        return [str(i) for i in self.table.column("id").to_pylist()]

    def __len__(self) -> int:
        return self.table.num_rows

    def column(self, name: str) -> np.ndarray:
        """Column ``name`` as float64 (N,); nulls become NaN."""
        return numeric_column(self.table, name)


class Candidates(Protocol):
    """What an engine answers about the whole candidate set (after filters)."""

    seed: int
    n_partitions: int  # the hash partitions of the first coreset round (``selection.n_partitions``)
    oversample: float  # ``selection.oversample``

    @property
    def columns(self) -> list[str]:
        """The candidates' columns."""
        ...

    def column_range(self, column: str) -> tuple[float | None, float | None]:
        """Smallest and largest non-null value of a numeric column (None, None without one)."""
        ...

    def reference(self, size: int, seed: int) -> CandidateBatch:
        """The first ``size`` candidates in the order of Spark's ``xxhash64(id, seed)``, then id."""
        ...

    def query_embeddings(self, query: QueryConfig) -> np.ndarray:
        """The embeddings (Q, D) a similarity query names: a table's, or those of ids of the features."""
        ...

    def kmeans_centroids(self, n_clusters: int, seed: int) -> np.ndarray:
        """Centroids (K, D) of a k-means clustering of the candidates' embeddings."""
        ...

    def batch_sum(self, fn: Callable[[CandidateBatch], np.ndarray]) -> np.ndarray:
        """The sum over all candidate batches of ``fn(batch)`` (arrays of one shape)."""
        ...

    def sorted_values(self, column: str) -> np.ndarray:
        """Every candidate's non-null value of a numeric column (float64), ascending."""
        ...

    def partition_map(self, fn: Callable[[pa.Table], pa.Table], schema: pa.Schema) -> pa.Table:
        """``fn`` run on every hash partition (all its candidates, in id order), the results concatenated.

        ``fn`` returns a table of ``schema``; an empty partition is skipped.
        """
        ...


class Strategy:
    """Base of every strategy: a name, a role, the inputs it takes, its checks and its label."""

    name: ClassVar[str]
    role: ClassVar[str]
    inputs: ClassVar[str]
    summary: ClassVar[str]

    def check(self, entry: StrategyConfig) -> None:
        """Raise ValueError when the entry's fields do not fit this strategy (its input is checked already)."""

    def label(self, entry: StrategyConfig) -> str:
        """Short name used in the ranking's parts, e.g. ``weights:bald``."""
        return f"{self.name}:{entry.input}" if entry.input != EMBEDDINGS else self.name

    def describe(self, entry: StrategyConfig) -> str:
        """The entry in the ranking's strategy label, e.g. ``weights:bald^1``."""
        return f"{self.label(entry)}^{entry.strength:g}"

    def reads(self, entry: StrategyConfig) -> tuple[str, ...]:
        """Features columns the strategy reads besides ``id``, ``embedding`` and its input column."""
        return ()


class Objective(Strategy):
    """A strategy that gives every candidate a value; the values of all objectives multiply."""

    role = "objective"

    def prepare(self, entry: StrategyConfig, column: str | None, candidates: Candidates) -> Any:
        """What :meth:`evaluate` needs of the whole candidate set (default: nothing)."""
        return None

    def evaluate(self, entry: StrategyConfig, column: str | None, state: Any, batch: CandidateBatch) -> np.ndarray:
        """The objective's value for each candidate of ``batch``, shape (N,), >= 0."""
        raise NotImplementedError


class Filter(Strategy):
    """A strategy that removes candidates: a condition on a column."""

    role = "filter"

    def as_filter(self, entry: StrategyConfig, column: str) -> FilterConfig:
        """The condition as a metadata filter on ``column``."""
        raise NotImplementedError


@dataclass(frozen=True)
class QuotaPlan:
    """What a balance strategy asks of the selection core: the picks allowed per group, and each class
    value's group (None: every value is a group of its own)."""

    quotas: dict[str, int]
    group_of: dict[str, str] | None = None


class Balancer(Strategy):
    """A strategy that caps the picks per group of a column's values; the core meets the quotas."""

    role = "balance"

    def plan_quotas(self, entry: StrategyConfig, available: Mapping[str, int], n_select: int) -> QuotaPlan:
        """The quotas for ``n_select`` picks, given the candidates per value of the input column (as
        :func:`alray.strategies.balance.class_labels` writes the values)."""
        raise NotImplementedError


class Sampler(Strategy):
    """A strategy that draws the batch: a random key per candidate, the largest keys picked."""

    role = "sampler"

    def prepare(self, entry: StrategyConfig, column: str, candidates: Candidates) -> Any:
        """What :meth:`keys` needs of the whole candidate set (default: the seed)."""
        return candidates.seed

    def keys(self, entry: StrategyConfig, column: str, state: Any, batch: CandidateBatch) -> np.ndarray:
        """Each candidate's key (N,): its log-probability plus its Gumbel noise."""
        raise NotImplementedError


@dataclass
class Picks:
    """What a selector chose: ids (K,) in pick order, their embeddings (K, D), and figures for the summary."""

    ids: list[str]
    embeddings: np.ndarray
    details: dict[str, float]


class Selector(Strategy):
    """A strategy that picks the batch itself, from the candidates the filters leave."""

    role = "selector"

    def select(self, entry: StrategyConfig, candidates: Candidates, n_select: int,
               labeled: np.ndarray | None) -> Picks:
        """Up to ``n_select`` picks among ``candidates``; ``labeled`` (L, D) are the existing centres."""
        raise NotImplementedError


def combine(objectives: Sequence[tuple[np.ndarray, float]], n_rows: int) -> np.ndarray:
    """Product of each objective (N,) raised to its strength; ones when there is none."""
    combined = np.ones(n_rows)
    for values, strength in objectives:
        combined *= np.power(np.maximum(np.asarray(values, dtype=np.float64), 0.0), strength)
    return combined
