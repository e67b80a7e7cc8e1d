"""Helpers of the lake tests: a run's rows, and a parquet file as a worker stages it."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq


def run_rows(run_id: str, ids: list[str], value: float) -> pa.Table:
    """Rows of one run, as a table written whole: ``run_id``, ``id`` and a ``score`` of ``value``."""
    return pa.table({"run_id": [run_id] * len(ids), "id": ids, "score": [value] * len(ids)})


def staged_file(folder, ids: list[str], value: float, **extra) -> str:
    """A parquet file as a worker writes it: table rows without the run_id partition column."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{len(list(folder.iterdir()))}.parquet"
    pq.write_table(pa.table({"id": ids, "score": [value] * len(ids), **extra}), path)
    return str(path)


def in_threads(target, arguments: list[tuple]) -> None:
    """Call ``target(*args)`` for each of ``arguments`` in its own thread, all at once; fail with their errors."""
    import threading

    errors: list[BaseException] = []

    def call(*args) -> None:
        try:
            target(*args)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=args) for args in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
