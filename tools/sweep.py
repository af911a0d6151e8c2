"""Runs a sweep's training runs in `jobs` worker processes.

A sweep is a list of tasks; a task may wait for another's result (a scratch
control needs its PruneTrain run's final architecture). `run_tasks` starts
every task whose inputs are ready, at most `jobs` at a time, and hands each
finished record to `done` in the parent process, which writes the results
file: that file is the sweep's state, so a stopped sweep goes on from it
(`tools/benchmark.py` skips the runs it already holds).

Several processes are legitimate because a run's time is priced by the
replay (`tools/replay.py`), not by its own wall clock: the runs may slow
each other down without changing what is reported, except the wall-time
column. Every run, `jobs=1` included, trains in a worker process started
with `spawn` (TensorFlow does not survive `fork`) with `threads` TensorFlow
threads: TensorFlow's CPU kernels split their sums by thread count, so the
same run with 1 and with 2 threads ends a few ulps apart and, after
thousands of steps, with a different top-1 (measured: a scratch run of the
tiny test sweep, 0.0625 with 2 threads, 0.125 with 1). A fixed thread count
per run makes `jobs` change nothing but the wall time.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from typing import Any, Callable, Hashable, Sequence


def _init_worker(threads: int) -> None:
    import tensorflow as tf  # in the new process, before any op runs
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def run_tasks(tasks: Sequence[Hashable],
              prepare: Callable[[Hashable], tuple | None],
              work: Callable[..., dict[str, Any]],
              done: Callable[[Hashable, dict[str, Any]], None],
              jobs: int = 1, threads: int = 1, fresh: bool = False) -> None:
    """Runs `work(*prepare(task))` for every task in `jobs` worker processes
    of `threads` TensorFlow threads each, and calls `done(task, record)` in
    this process as each finishes.

    `prepare(task)` returns the arguments, or None while the task waits for
    another one's `done`; tasks start in their order as they get ready.
    With `fresh`, every task gets a new process (none is reused).
    `work` must be a module-level function (it is pickled to the workers),
    and the program that calls this needs the `if __name__ == "__main__":`
    guard (`spawn` imports it again in every worker).

    Raises:
      ValueError: `jobs` or `threads` < 1, or tasks left waiting with nothing
        running (a dependency that is not in the sweep). The error of a
        failed run is raised here once the runs in flight are cancelled;
        the records already done stay done.
    """
    for name, value in (("jobs", jobs), ("threads", threads)):
        if value < 1:
            raise ValueError(f"run_tasks: {name} must be >= 1, got {value}.")
    waiting = list(tasks)
    if not waiting:
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_init_worker,
            initargs=(threads,),
            max_tasks_per_child=1 if fresh else None) as pool:
        running: dict[concurrent.futures.Future, Hashable] = {}
        try:
            while waiting or running:
                for task in list(waiting):
                    if len(running) >= jobs:
                        break
                    args = prepare(task)
                    if args is not None:
                        waiting.remove(task)
                        running[pool.submit(work, *args)] = task
                if not running:
                    raise ValueError(f"run_tasks: {waiting} wait for tasks "
                                     "that are not in the sweep.")
                finished, _ = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    done(running.pop(future), future.result())
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
