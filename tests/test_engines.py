"""What the engines tell the progress display: rows from Ray workers, running tasks from Spark."""

from __future__ import annotations

import re
import threading
import time

from alray.engines import ray_row_counter, spark_task_progress


def test_the_row_counter_sums_what_ray_workers_report(ray_session):
    ray = ray_session
    seen: list[int] = []

    @ray.remote(num_cpus=0.1)
    def work(counter, rows: int) -> int:
        time.sleep(0.3)
        ray.get(counter.add.remote(rows))
        return rows

    with ray_row_counter(seen.append, interval_s=0.1) as counter:
        assert sum(ray.get([work.remote(counter, n) for n in (5, 7, 11)])) == 23
    assert seen[-1] == 23
    assert seen == sorted(seen)  # the count only grows


def test_spark_task_progress_says_the_running_tasks_and_clears_at_the_end(spark):
    said: list[str] = []

    def slow(partition):
        time.sleep(0.8)
        yield sum(1 for _ in partition)

    with spark_task_progress(said.append, interval_s=0.1):
        job = threading.Thread(target=lambda: spark.sparkContext.parallelize(range(40), 4).mapPartitions(slow)
                               .collect())
        job.start()
        job.join(timeout=120)
    tasks = [re.fullmatch(r"tasks (\d+)/(\d+)", text) for text in said if text]
    assert tasks and all(match is not None and int(match.group(2)) == 4 for match in tasks), said
    assert said[-1] == ""
