"""Runs a sweep's training runs in `jobs` worker processes, and keeps the
sweep's state.

A sweep is a list of tasks; a task may wait for another's result (a scratch
control needs its PruneTrain run's final architecture). `run_tasks` starts
every task whose inputs are ready, at most `jobs` at a time, and hands each
finished record to `done` in the parent process, which adds it to the
`Sweep` and writes the results file: that file is the sweep's state, so a
stopped sweep goes on from it (`Sweep.to_go` skips the runs it already
holds; `tools.results.resume` reads it back). `define_flags` is the command
line `tools.benchmark` and `tools.pretrained` share.

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

Workers preload the first memory allocator of `ALLOCATORS` the machine has
(`allocator()`; Debian: `apt-get install libjemalloc2`). With glibc's
malloc the same architecture steps at one of two speeds, about 0.7x apart,
decided per process (issue 40, BENCHMARKS.md): a replay's ratios then move
by up to 30 % between processes. The allocator changes no result, only
the clock.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes.util
import multiprocessing
import os
import time
from typing import Any, Callable, Hashable, Iterable, Iterator, Sequence

from absl import flags

from tools import oneoffs
from tools import replay as replay_lib
from tools import results as results_lib


# Allocators whose step times are steady across processes, in the order
# tried (`ctypes.util.find_library` names).
ALLOCATORS = ("jemalloc", "tcmalloc_minimal", "tcmalloc")


def allocator() -> str | None:
    """The library of the first of `ALLOCATORS` this machine has, as
    `LD_PRELOAD` takes it (None: only the C library's malloc)."""
    for name in ALLOCATORS:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


@contextlib.contextmanager
def preloaded(enabled: bool = True) -> Iterator[str | None]:
    """Processes started inside preload `allocator()` (unless `LD_PRELOAD`
    is set already, or not `enabled`); yields what they preload."""
    before = os.environ.get("LD_PRELOAD")
    library = before or (allocator() if enabled else None)
    if library and not before:
        os.environ["LD_PRELOAD"] = library
    try:
        yield library
    finally:
        if before is None:
            os.environ.pop("LD_PRELOAD", None)


def _init_worker(threads: int) -> None:
    import tensorflow as tf  # in the new process, before any op runs
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def run_tasks(tasks: Sequence[Hashable],
              prepare: Callable[[Hashable], tuple | None],
              work: Callable[..., dict[str, Any]],
              done: Callable[[Hashable, dict[str, Any]], None],
              jobs: int = 1, threads: int = 1, fresh: bool = False,
              preload: bool = True) -> None:
    """Runs `work(*prepare(task))` for every task in `jobs` worker processes
    of `threads` TensorFlow threads each, and calls `done(task, record)` in
    this process as each finishes.

    `prepare(task)` returns the arguments, or None while the task waits for
    another one's `done`; tasks start in their order as they get ready.
    With `fresh`, every task gets a new process (none is reused). With
    `preload`, workers preload `allocator()` (see the module doc).
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
    with preloaded(preload), concurrent.futures.ProcessPoolExecutor(
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


def covered(result: dict[str, Any], record: dict[str, Any]) -> bool:
    """Whether every replay of `result` timed every architecture (and lasso
    kind) `record` trained, and every cut it made where the replay timed
    cuts (`tools.oneoffs`): then they price it as they price the others (a
    run that changes when or how, not what, needs no new replay).

    >>> run = {"timeline": [{"architecture": "a", "lasso": "", "steps": 3}]}
    >>> covered({"replays": [{"step_seconds": {"a": 0.1}}]}, run)
    True
    >>> covered({"replays": [{"step_seconds": {"b": 0.1}}]}, run)
    False
    """
    items = replay_lib.items(record["timeline"])
    cuts = oneoffs.transitions([record])
    replays = result.get("replays") or []
    return bool(replays) and all(
        item in r["step_seconds"] for r in replays for item in items) and all(
        key in r["cuts"] for r in replays if "cuts" in r for key in cuts)


def final_model(record: dict[str, Any], architectures: dict[str, str]
                ) -> str:
    """The model JSON of the architecture a run ended with (`architectures`:
    the run's, by key).

    >>> final_model({"timeline": [{"architecture": "a"}, {"architecture":
    ...     "b"}]}, {"a": "{wide}", "b": "{thin}"})
    '{thin}'
    """
    return architectures[record["timeline"][-1]["architecture"]]


class Sweep:
    """A sweep's state: its results (`result`, with `runs` and the model
    JSON of every `architectures` key they trained), written to `path`
    after every run, and the sweep's seconds over all its sittings
    (`sweep_seconds`). `order` sorts the runs (a key function); `refresh`
    recomputes derived figures before each write.

    >>> state = Sweep({"runs": [], "architectures": {}}, None)
    >>> state.to_go([(0, "dense"), (0, "thin")], {(0, "dense")}, 1)
    1 runs to go (1 in no file already), 1 at a time
    [(0, 'thin')]
    >>> state.add({"method": "thin", "load_average": 0.0, "timeline": [
    ...     {"architecture": "t", "lasso": "", "steps": 4}],
    ...     "architectures": {"t": "{}"}})
    {'t': '{}'}
    >>> state.result["architectures"], len(state.result["runs"])
    ({'t': '{}'}, 1)
    """

    def __init__(self, result: dict[str, Any], path: str | None,
                 order: Callable[[dict[str, Any]], Any] | None = None,
                 refresh: Callable[[dict[str, Any]], None] | None = None
                 ) -> None:
        self.result, self.path = result, path
        self.order, self.refresh = order, refresh
        self._spent = result.get("sweep_seconds", 0.0)
        self._start = time.perf_counter()

    def to_go(self, tasks: Iterable[Hashable], held: set, jobs: int
              ) -> list:
        """The tasks not in `held` (the runs the file has), in order;
        says how many."""
        todo = [task for task in tasks if task not in held]
        if todo:
            print(f"{len(todo)} runs to go ({len(held)} in "
                  f"{self.path or 'no file'} already), {jobs} at a time",
                  flush=True)
        return todo

    def merge(self, record: dict[str, Any]) -> dict[str, str]:
        """Pops a finished run's `architectures` (its model JSONs) into the
        results' table, which keeps one JSON per key; returns them."""
        architectures = record.pop("architectures")
        for key, text in architectures.items():
            self.result["architectures"].setdefault(key, text)
        if record["load_average"] > (os.cpu_count() or 1) + 0.5:
            print(f"warning: load average {record['load_average']:.1f} on "
                  f"{os.cpu_count()} CPUs at the end of this run: its "
                  "one-off seconds are measured under contention (run "
                  "nothing else beside a sweep)", flush=True)
        return architectures

    def add(self, record: dict[str, Any]) -> dict[str, str]:
        """Adds a finished run (`merge`) to the runs, in order; drops the
        replays when they do not cover it (a new one is made at the end);
        saves. Returns its architectures."""
        architectures = self.merge(record)
        self.result["runs"].append(record)
        if self.order is not None:
            self.result["runs"].sort(key=self.order)
        if self.result.get("replay") and not covered(self.result, record):
            self.result.pop("replay"), self.result.pop("replays", None)
            print("the results' replays no longer cover every run: a new "
                  "one is made at the end", flush=True)
        self.save()
        return architectures

    def save(self) -> None:
        """The sweep's seconds so far, derived figures, and the file."""
        self.result["sweep_seconds"] = self._spent + time.perf_counter() \
            - self._start
        if self.refresh is not None:
            self.refresh(self.result)
        results_lib.write(self.result, self.path)


def define_flags(targets: Sequence[str]) -> None:
    """The flags of a sweep (`tools.benchmark`, `tools.pretrained`):
    `--json` (its state), `--seeds`, `--targets` (default `targets`),
    `--jobs`, `--run_threads`, and the replay's `--replay*`."""
    flags.DEFINE_string("json", None, "The sweep's state and figures: "
                        "written after every run, resumed from when it "
                        "exists.")
    flags.DEFINE_list("targets", list(targets), "PruneTrain flops_target "
                      "values.")
    flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds.")
    flags.DEFINE_integer("jobs", 1, "Training runs at a time, each in its "
                         "own worker process.")
    flags.DEFINE_integer(
        "run_threads", 1, "TensorFlow threads of every training run (part "
        "of the sweep's configuration: other counts give other floats, so "
        "other top-1).")
    flags.DEFINE_string(
        "replay", None, "Only replay the runs of this results JSON (no "
        "training); writes --json (default: this file).")
    flags.DEFINE_integer(
        "replays", 3, "Replays, one after another, each in a fresh process; "
        "the runs are priced on their median ratios (tools/replay.py).")
    flags.DEFINE_integer(
        "replay_rounds", 5, "Round-robin rounds of the replay (0: no "
        "replay; time is then wall time).")
    flags.DEFINE_integer("replay_steps", 6, "Timed steps per architecture "
                         "per round.")
    flags.DEFINE_integer("replay_warmup", 2, "Untimed steps before them in "
                         "each round.")


def replay_flags() -> tuple[int, int, int]:
    """(--replay_rounds, --replay_steps, --replay_warmup)."""
    f = flags.FLAGS
    return f.replay_rounds, f.replay_steps, f.replay_warmup
