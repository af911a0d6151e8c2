"""Replayed training time: the train-step time of every architecture a sweep
trained, measured side by side in one process, priced over each run's
timeline.

Whole-run wall time cannot rank methods on a shared machine: the same run
moves by ±25 % between invocations (BENCHMARKS.md). So a run records what it
trained (`recipes/timeline.py`: architecture, lasso on or off, steps) and the
one-off seconds it spent reconfiguring; the replay then builds every
distinct architecture and times its train step in round-robin rounds
(`tf_prunetrain.latency.round_robin`: the order reversed every other
round), `steps` timed steps per architecture per round after `warmup`
untimed ones, the median over all rounds. Drift and
other load then hit every architecture alike, and

    replayed seconds = Σ over segments (steps × median step seconds)
                       + one-off seconds

prices a run as if its steps had all run on that same quiet clock.

`tools/retime.py` replays the sweeps of `tools.benchmark` and
`tools.pretrained` (at the end, or `--replay=results.json`);
`tools/step_time.py`'s width table is a replay of thin architectures.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import keras
import tensorflow as tf
from absl import flags

from tf_prunetrain import latency

# x86 and Arm vector extensions that decide a convolution's speed on CPU.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw",
                "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                "asimd", "sve")


def machine() -> dict[str, Any]:
    """What the timings were taken on: CPU model and vector flags, cores,
    GPUs, and the TensorFlow and Keras builds."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                name, _, value = line.partition(":")
                name = name.strip()
                if name in ("model name", "Model") and model in (
                        platform.processor(), platform.machine()):
                    model = value.strip()
                elif name in ("flags", "Features") and not flags:
                    present = set(value.split())
                    flags = [f for f in VECTOR_FLAGS if f in present]
    except OSError:  # not Linux: the platform module's name only
        pass
    build = tf.sysconfig.get_build_info()
    return {"cpu": model, "vector_flags": flags, "cores": os.cpu_count(),
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "cuda": build.get("cuda_version"),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
            "allocator": os.environ.get("LD_PRELOAD") or "malloc"}


def describe(info: Mapping[str, Any]) -> str:
    """One line naming the machine of `machine()`.

    >>> describe({"cpu": "AMD EPYC", "vector_flags": ["avx", "avx2"],
    ...           "cores": 2, "gpus": [], "tensorflow": "2.21.0"})
    'AMD EPYC (avx avx2), 2 cores, TensorFlow 2.21.0'
    """
    gpus = f", GPUs {', '.join(info['gpus'])}" if info.get("gpus") else ""
    vector = " ".join(info["vector_flags"]) or "no vector flags read"
    allocator = f", {info['allocator']}" if "allocator" in info else ""
    return (f"{info['cpu']} ({vector}), {info['cores']} cores{gpus}, "
            f"TensorFlow {info['tensorflow']}{allocator}")


def item_key(architecture: str, lasso: str, teacher: str = "") -> str:
    """The replay item a timeline segment runs on: its architecture, its
    lasso kind when on, and the architecture of the teacher that taught it
    (`experimental.Distill`), if one did (`recipes/timeline.py`).

    >>> item_key("0a1b2c3d4e5f", "proximal"), item_key("0a1b2c3d4e5f", "")
    ('0a1b2c3d4e5f:proximal', '0a1b2c3d4e5f')
    >>> item_key("0a1b2c3d4e5f", "", teacher="9f8e7d6c5b4a")
    '0a1b2c3d4e5f@9f8e7d6c5b4a'
    """
    return architecture + (f":{lasso}" if lasso else "") \
        + (f"@{teacher}" if teacher else "")


def segment_item(segment: Mapping[str, Any]) -> str:
    """`item_key` of a timeline segment."""
    return item_key(segment["architecture"], segment["lasso"],
                    segment.get("teacher", ""))


def split_item(key: str) -> tuple[str, str, str]:
    """`item_key`'s parts back: architecture, lasso, teacher.

    >>> split_item("0a1b2c3d4e5f:proximal+scales")
    ('0a1b2c3d4e5f', 'proximal+scales', '')
    >>> split_item("0a1b2c3d4e5f@9f8e7d6c5b4a")
    ('0a1b2c3d4e5f', '', '9f8e7d6c5b4a')
    """
    key, _, teacher = key.partition("@")
    architecture, _, lasso = key.partition(":")
    return architecture, lasso, teacher


def items(segments: Iterable[Mapping[str, Any]]) -> list[str]:
    """The distinct replay items of timeline segments, in order."""
    return list(dict.fromkeys(segment_item(s) for s in segments))


def replayed_seconds(segments: Iterable[Mapping[str, Any]],
                     step_seconds: Mapping[str, float],
                     one_off_seconds: float = 0.0) -> float:
    """Σ steps × the segment's step seconds, plus the one-off seconds.

    >>> replayed_seconds([{"architecture": "a", "lasso": "loss", "steps": 10},
    ...                   {"architecture": "b", "lasso": "", "steps": 5}],
    ...                  {"a:loss": 0.5, "b": 0.2}, one_off_seconds=1.5)
    7.5
    """
    return sum(s["steps"] * step_seconds[segment_item(s)]
               for s in segments) + one_off_seconds


def combine(replays: Sequence[Mapping[str, float]], reference: str
            ) -> dict[str, float]:
    """Step seconds over several replays (separate invocations): each item's
    median ratio to the `reference` item across them, times the reference's
    median seconds. A ratio is what ranks; a replay whose machine ran
    faster or slower throughout moves no ratio, and one item's outlier in
    one replay (seen: one architecture 24 % off in one of three) is outvoted.

    >>> combine([{"dense": 0.2, "thin": 0.1}, {"dense": 0.1, "thin": 0.06},
    ...          {"dense": 0.2, "thin": 0.1}], "dense")
    {'dense': 0.2, 'thin': 0.1}
    """
    if not replays:
        raise ValueError("combine: no replay.")
    base = statistics.median(r[reference] for r in replays)
    return {item: base * statistics.median(r[item] / r[reference]
                                            for r in replays)
            for item in replays[-1]}


class StepClock(keras.callbacks.Callback):
    """The seconds between consecutive `on_train_batch_end` calls of one
    `fit`, after its first `warmup` steps: what a steady step of `fit`
    costs, data loading and callbacks included. `clock` is injectable
    (seconds, monotonic)."""

    def __init__(self, warmup: int,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__()
        if warmup < 1:
            raise ValueError(f"StepClock: warmup must be >= 1 (the first "
                             f"step has no step before it), got {warmup}.")
        self.warmup, self.clock = warmup, clock
        self.ends: list[float] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.ends = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None
                           ) -> None:
        self.ends.append(self.clock())

    @property
    def seconds(self) -> list[float]:
        ends = self.ends[self.warmup - 1:]
        return [b - a for a, b in zip(ends, ends[1:])]


def define_resnet_flags() -> None:
    """The model flags of the micro-benchmarks (`bench_group_lasso`,
    `bench_reconfigure`): a CIFAR ResNet's depth, widths and input, the
    batch and the GroupLasso strength (call from a `define_flags`)."""
    flags.DEFINE_integer("depth", 20, "ResNet depth (6n+2).")
    flags.DEFINE_integer("batch_size", 128, "Mini-batch size.")
    flags.DEFINE_integer("image_size", 32, "Input height and width.")
    flags.DEFINE_integer("num_classes", 10, "Number of classes.")
    flags.DEFINE_list("widths", ["16", "32", "64"], "Stage widths.")
    flags.DEFINE_float("strength", 1e-4,
                       "GroupLasso strength (does not affect cost).")


def compile_sgd(model: keras.Model, learning_rate: float = 0.1
                ) -> keras.Model:
    """Compiles `model` as the timing tools train it: SGD with momentum
    0.9, sparse cross-entropy on logits (the learning rate costs nothing).

    >>> model = compile_sgd(keras.Sequential([keras.Input((2,)),
    ...                                        keras.layers.Dense(3)]))
    >>> type(model.optimizer).__name__, float(model.optimizer.momentum)
    ('SGD', 0.9)
    """
    model.compile(keras.optimizers.SGD(learning_rate, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def batch_seconds(model: keras.Model, x: Any, y: Any, steps: int
                  ) -> list[float]:
    """Seconds of each of `steps` `train_on_batch(x, y)` calls (it returns
    numpy logs: each waits for its step; `latency.time_calls`).

    >>> model = compile_sgd(keras.Sequential([keras.Input((2,)),
    ...                                        keras.layers.Dense(3)]))
    >>> seconds = batch_seconds(model, tf.ones((4, 2)), tf.zeros(4), 2)
    >>> len(seconds), all(s > 0 for s in seconds)
    (2, True)
    """
    return latency.time_calls(lambda: model.train_on_batch(x, y), steps)


def time_models(models: Mapping[str, keras.Model],
                dataset: Callable[[], Any], rounds: int = 5, steps: int = 6,
                warmup: int = 2, clock: Callable[[], float] = time.perf_counter,
                progress: Callable[[str], None] | None = None
                ) -> dict[str, float]:
    """Median train-step seconds of each compiled model: `fit` on
    `dataset()` (a repeated `tf.data.Dataset`, as training feeds it) for
    `warmup + steps` steps per round, in `latency.round_robin` rounds after
    one untimed tracing pass; `progress` hears a line after each round.

    Example:
    >>> import keras, numpy as np, tensorflow as tf
    >>> def net(width):
    ...     x = keras.Input((4,))
    ...     m = keras.Model(x, keras.layers.Dense(1)(
    ...         keras.layers.Dense(width)(x)))
    ...     m.compile("sgd", "mse")
    ...     return m
    >>> data = lambda: tf.data.Dataset.from_tensor_slices(
    ...     (np.ones((8, 4), "float32"), np.ones((8, 1), "float32"))
    ...     ).batch(4).repeat()
    >>> seconds = time_models({"wide": net(64), "thin": net(2)}, data,
    ...                       rounds=2, steps=2)
    >>> sorted(seconds), all(s > 0 for s in seconds.values())
    (['thin', 'wide'], True)
    """
    for model in models.values():  # trace, untimed
        model.fit(dataset(), epochs=1, steps_per_epoch=warmup, verbose=0,
                  shuffle=False)

    def runner(model: keras.Model) -> Callable[[], list[float]]:
        def run() -> list[float]:
            timer = StepClock(warmup, clock)
            model.fit(dataset(), epochs=1, steps_per_epoch=warmup + steps,
                      verbose=0, shuffle=False, callbacks=[timer])
            return timer.seconds
        return run

    def said(r: int, seconds: float) -> None:
        if progress:
            progress(f"replay round {r}/{rounds}: {len(models)} "
                     f"architectures, {seconds:.1f} s")

    times = latency.round_robin({key: runner(m) for key, m in models.items()},
                                rounds, said)
    return {key: statistics.median(values) for key, values in times.items()}
