"""Committing what the scoring workers staged: good rows to the features table, bad rows to rejects.

Kept apart from the scoring stage so that the Ray tasks that split staged files import pyarrow
and the lake code only, not torch and the models.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from alray.detection.objects import OBJECTS_COLUMN, explode_staged_file
from alray.lake import Lake, filesystem_for, list_parquet, reshape_parquet
from alray.tables import OBJECTS_SCHEMA, REJECTS_SCHEMA, without_run_id


@dataclass(frozen=True)
class ScoreResult:
    """Counts of the scoring stage: ``n_scored`` rows in features, ``n_rejected`` in rejects, of which
    ``n_reused`` (features and rejects) were carried over from run ``reused_from`` rather than scored."""

    n_pool: int
    n_scored: int
    n_rejected: int
    n_objects: int | None = None  # a detection run's objects, when it wrote the objects table
    n_reused: int = 0
    reused_from: str | None = None
    score_key: str | None = None


@dataclass(frozen=True)
class SplitFiles:
    """The files :func:`split_staged` made, shaped like the tables; ``objects`` None when no detection
    run staged objects."""

    features: list[str]
    rejects: list[str]
    objects: list[str] | None = None


def split_staged(staging: str, run_id: str, lake: Lake, *, reject_column: str) -> SplitFiles:
    """Split every scored file of a staging folder where it lies (one Ray task per file when Ray is
    up) into a features file and a rejects file shaped like the tables (and an objects file, when a
    detection run staged its objects). Work per row, spread over the cluster, apart from the
    commit (:func:`commit_split`), which is the driver's alone."""
    files = list_parquet(staging, storage_options=lake.storage_options)
    if not files:
        return SplitFiles([], [])
    keep_run_id = lake.keeps_run_id_in_files()
    filesystem, first = filesystem_for(files[0], lake.storage_options)
    names = pq.read_schema(first, filesystem=filesystem).names
    feature_columns = [n for n in names if n not in (reject_column, OBJECTS_COLUMN) and (keep_run_id or n != "run_id")]
    objects = OBJECTS_COLUMN in names
    parts = (lake.staging(run_id, "features-commit"), lake.staging(run_id, "rejects-commit"),
             lake.staging(run_id, "objects-commit") if objects else None)
    options = dict(lake.storage_options) if lake.storage_options else None
    outputs: list[tuple[str | None, str | None, str | None]]
    if ray_is_up():
        import ray

        remote = ray.remote(_split_scored_file)
        outputs = ray.get([remote.remote(f, parts, feature_columns, reject_column, keep_run_id, options)
                           for f in files])
    else:
        outputs = [_split_scored_file(f, parts, feature_columns, reject_column, keep_run_id, options)
                   for f in files]
    return SplitFiles(features=[o[0] for o in outputs if o[0]], rejects=[o[1] for o in outputs if o[1]],
                      objects=[o[2] for o in outputs if o[2]] if objects else None)


def commit_split(split: SplitFiles, run_id: str, lake: Lake,
                 carried: tuple[list[str], list[str]] = ([], [])) -> ScoreResult:
    """Commit the split files to each table in one transaction, reading only their footers: good rows
    to features, bad rows to rejects. ``carried`` holds files already shaped as the features and the
    rejects tables (rows an incremental run carries over), committed in the same transactions."""
    keep_run_id = lake.keeps_run_id_in_files()
    features = split.features + list(carried[0])
    rejects = split.rejects + list(carried[1])
    if not features and not rejects:
        return ScoreResult(n_pool=0, n_scored=0, n_rejected=0)
    n_scored = lake.commit_files("features", features, run_id) if features else _empty_run(lake, "features", run_id)
    reject_schema = without_run_id(REJECTS_SCHEMA, keep_run_id)
    n_rejected = lake.commit_files("rejects", rejects, run_id, schema=reject_schema)
    n_objects = None
    if split.objects is not None:
        n_objects = lake.commit_files("objects", split.objects, run_id,
                                      schema=without_run_id(OBJECTS_SCHEMA, keep_run_id))
    return ScoreResult(n_pool=n_scored + n_rejected, n_scored=n_scored, n_rejected=n_rejected, n_objects=n_objects)


def _empty_run(lake: Lake, name: str, run_id: str) -> int:
    """No row of ``run_id`` in table ``name`` (every row rejected): whatever an earlier attempt left goes."""
    lake.delete_run(name, run_id)
    return 0


def ray_is_up() -> bool:
    """Whether this process is attached to Ray (commit work then runs as Ray tasks, next to the files)."""
    import ray

    return bool(ray.is_initialized())


def _split_scored_file(source: str, folders: tuple[str, str, str | None], feature_columns: list[str],
                       reject_column: str, keep_run_id: bool, storage_options: dict[str, str] | None,
                       ) -> tuple[str | None, str | None, str | None]:
    """One staged file -> (its features file, its rejects file, its objects file); None for one without rows."""
    rejected = pads.field(reject_column).is_valid()
    features = reshape_parquet(source, folders[0], columns={c: c for c in feature_columns}, filter=~rejected,
                               storage_options=storage_options)
    columns: dict[str, str | pa.Scalar] = {"run_id": "run_id"} if keep_run_id else {}
    columns.update({"id": "id", "stage": pa.scalar("score", pa.string()), "reason": reject_column})
    rejects = reshape_parquet(source, folders[1], columns=columns, filter=rejected, storage_options=storage_options)
    objects = None
    if folders[2] is not None:
        objects = explode_staged_file(source, folders[2], keep_run_id=keep_run_id, storage_options=storage_options)
    return features, rejects, objects
