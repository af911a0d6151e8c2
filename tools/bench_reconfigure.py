"""Cost of one in-place PruneTrain reconfiguration on a CIFAR ResNet.

For each repeat, on a fresh `resnet_cifar` wrapped by `add_group_lasso` and
compiled with SGD(momentum=0.9):

1. traces, warms up and times `train_on_batch` steps of the dense model;
2. zeroes a random `--fraction` of the prunable channel groups on all their
   coupled sides (what group lasso does over an interval);
3. times ONE reconfiguration end to end, as `Reconfigure` makes it after an
   epoch, with the callback's model set: its `DeadChannels` schedule's
   decision (analysis and plan) and `reconfigure(epoch, plan)` (surgery,
   optimizer rebuild and re-creation of the train/test/predict functions);
   then, separately, the
   first train step after it (the re-tracing happens there), and the
   Python part of that re-trace alone (tracing the train step into a graph
   without running it);
4. warms up and times steps of the pruned model.

Reports median step times before/after and their ratio, parameters
before/after, the reconfiguration's seconds (with a breakdown by phase), the
first step after it, and the overhead of one reconfiguration plus the first
step's extra over a steady step, as a share of one CIFAR-scale interval
(`--interval_epochs` x `--steps_per_epoch` dense steps). Reconfiguration
figures (and parameters after) are medians over `--repeats` fresh models, each
with its own random choice of zeroed groups; step times are medians over all
repeats' timed steps. The first repeat's reconfiguration also pays one-time
Python/TensorFlow warm-up, as the first reconfiguration of a real run does:
see `reconfigure_s_all`.

Example (about 2-3 minutes on 2 CPU cores; from the repository root):

    python -m tools.bench_reconfigure --repeats=3 --steps=10
    python -m tools.bench_reconfigure --fraction=0.3 --json=-
    python -m tools.bench_reconfigure --nograppler  # re-trace without graph optimizations
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import time
from typing import Any, Callable, Iterator

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_prunetrain  # noqa: E402
from tf_prunetrain import coupling, inplace, planning  # noqa: E402
from tf_prunetrain.models import resnet_cifar  # noqa: E402
from tools import replay  # noqa: E402
from tools import results  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line (defined here, not at import: importing this module
    beside other tools defines no flag)."""
    replay.define_resnet_flags()
    flags.DEFINE_float("fraction", 0.5, "Fraction of prunable channel groups zeroed.")
    flags.DEFINE_float("threshold", 1e-4, "Reconfigure deadness threshold.")
    flags.DEFINE_integer("round_to", 1, "Reconfigure round_to.")
    flags.DEFINE_integer("min_channels", 1, "Reconfigure min_channels.")
    flags.DEFINE_integer("warmup", 3, "Untimed steps after tracing (dense and pruned).")
    flags.DEFINE_integer("steps", 10, "Timed steps per model per repeat.")
    flags.DEFINE_integer("repeats", 3, "Fresh models; reconfiguration figures are medians.")
    flags.DEFINE_integer("interval_epochs", 10, "Epochs per reconfiguration interval.")
    flags.DEFINE_integer("steps_per_epoch", 390, "Steps per epoch (CIFAR, batch 128).")
    flags.DEFINE_integer("seed", 0, "Seed for weights, data and the zeroed groups.")
    flags.DEFINE_boolean("grappler", True, "TensorFlow's graph optimizations "
                         "(--nograppler: how much of a re-trace they take).")
    flags.DEFINE_string("json", None, "Also write results as JSON to this path ('-' = stdout).")

# Library functions timed inside one reconfiguration: (module, attribute).
# The schedule and `Reconfigure.reconfigure` call them through their
# modules, so wrapping the module attributes for the duration of the call
# times them without changing what runs.
_PHASES = (
    ("channel_groups", coupling, "channel_groups"),
    ("plan_pruning", planning, "plan_pruning"),
    ("reconfigure_in_place", inplace, "reconfigure_in_place"),
    ("reconfigure_in_place/layer_changes", inplace, "_layer_changes"),
    ("reconfigure_in_place/apply_layers", inplace, "_apply"),
    ("reconfigure_in_place/rebuild_optimizer", inplace, "_rebuilt_optimizer"),
    ("reconfigure_in_place/retrace", inplace, "_retrace"),
)


@contextlib.contextmanager
def _timed_phases(totals: dict[str, float]) -> Iterator[None]:
    """Accumulates the seconds spent in each `_PHASES` function into `totals`."""

    def wrap(name: str, fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
        return timed

    saved = []
    for name, module, attr in _PHASES:
        fn = getattr(module, attr)
        saved.append((module, attr, fn))
        setattr(module, attr, wrap(name, fn))
    try:
        yield
    finally:
        for module, attr, fn in saved:
            setattr(module, attr, fn)


def _zero_random_groups(model: keras.Model, fraction: float, seed: int) -> tuple[int, int]:
    """Zeroes every coupled kernel slice of a random `fraction` of the
    prunable channel groups (as tests/pruning_testing.zero_random_groups)."""
    graph = tf_prunetrain.channel_groups(model)
    roots = graph.prunable()
    rng = np.random.default_rng(seed)
    dead = rng.choice(roots, int(len(roots) * fraction), replace=False)
    tf_prunetrain.coupling.zero_groups(graph, dead)
    return len(dead), len(roots)


def _one_repeat(seed: int, x: tf.Tensor, y: tf.Tensor) -> dict[str, Any]:
    widths = tuple(int(w) for w in FLAGS.widths)
    keras.backend.clear_session()  # drop the previous repeat's model and graphs
    gc.collect()
    keras.utils.set_random_seed(seed)
    model = tf_prunetrain.add_group_lasso(
        resnet_cifar(
            depth=FLAGS.depth,
            num_classes=FLAGS.num_classes,
            input_shape=(FLAGS.image_size, FLAGS.image_size, 3),
            widths=widths,
            seed=seed,
        ),
        FLAGS.strength,
    )
    replay.compile_sgd(model)
    first_dense = replay.batch_seconds(model, x, y, 1)[0]  # includes tracing
    replay.batch_seconds(model, x, y, FLAGS.warmup)
    dense = replay.batch_seconds(model, x, y, FLAGS.steps)

    zeroed, groups = _zero_random_groups(model, FLAGS.fraction, seed)

    cb = tf_prunetrain.Reconfigure(
        tf_prunetrain.DeadChannels(interval=FLAGS.interval_epochs,
                                   threshold=FLAGS.threshold),
        penalty_ratio=None,
        round_to=FLAGS.round_to,
        min_channels=FLAGS.min_channels,
        verbose=0,
    )
    cb.set_model(model)
    gc.collect()  # no collection of earlier garbage inside the timed call
    phases: dict[str, float] = {}
    with _timed_phases(phases):
        start = time.perf_counter()
        # What Reconfigure does after epoch `interval_epochs` of a fit.
        decision = cb.schedule.decide(FLAGS.interval_epochs, cb.context())
        done = cb.reconfigure(FLAGS.interval_epochs, decision.plan)
        reconfigure_s = time.perf_counter() - start
    first_pruned = replay.batch_seconds(model, x, y, 1)[0]  # re-tracing shows up here
    replay.batch_seconds(model, x, y, FLAGS.warmup)
    pruned = replay.batch_seconds(model, x, y, FLAGS.steps)
    trace_s = _python_trace_seconds(model, x, y)
    if not done.changes or done.params_after >= done.params_before:
        raise RuntimeError(f"reconfiguration removed nothing: {done}")
    return {
        "zeroed_groups": zeroed,
        "prunable_groups": groups,
        "params_before": done.params_before,
        "params_after": done.params_after,
        "layers_narrowed": len(done.changes),
        "reconfigure_s": reconfigure_s,
        "reconfigure_reported_s": done.seconds,
        "phases_s": phases,
        "first_step_dense_s": first_dense,
        "first_step_after_s": first_pruned,
        "dense_steps_s": dense,
        "pruned_steps_s": pruned,
        "python_trace_s": trace_s,
    }


def _python_trace_seconds(model: keras.Model, x: tf.Tensor, y: tf.Tensor) -> float:
    """Seconds to trace the model's train step into a graph, without running
    it: the Python part of a re-trace (the rest of the first step's extra is
    graph optimization and first-run kernel set-up for the new shapes)."""
    spec = (tf.TensorSpec(x.shape, x.dtype), tf.TensorSpec(y.shape, y.dtype))
    start = time.perf_counter()
    tf.function(model.train_step).get_concrete_function(spec)
    return time.perf_counter() - start


def run_benchmark() -> dict[str, Any]:
    rng = np.random.default_rng(FLAGS.seed)
    shape = (FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3)
    x = tf.constant(rng.standard_normal(shape, dtype=np.float32))
    y = tf.constant(rng.integers(0, FLAGS.num_classes, FLAGS.batch_size), dtype=tf.int32)

    runs = [_one_repeat(FLAGS.seed + r, x, y) for r in range(FLAGS.repeats)]

    def med(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    dense_step = statistics.median(t for run in runs for t in run["dense_steps_s"])
    pruned_step = statistics.median(t for run in runs for t in run["pruned_steps_s"])
    reconfigure_s = med("reconfigure_s")
    first_after = med("first_step_after_s")
    retrace_extra = statistics.median(
        run["first_step_after_s"] - statistics.median(run["pruned_steps_s"]) for run in runs
    )
    interval_steps = FLAGS.interval_epochs * FLAGS.steps_per_epoch
    interval_s = interval_steps * dense_step
    overhead_s = reconfigure_s + retrace_extra
    return {
        "model": f"resnet{FLAGS.depth}_cifar widths={[int(w) for w in FLAGS.widths]}",
        "batch_size": FLAGS.batch_size,
        "input_shape": list(shape[1:]),
        "optimizer": "SGD(momentum=0.9)",
        "fraction_zeroed": FLAGS.fraction,
        "repeats": FLAGS.repeats,
        "steps_per_repeat": FLAGS.steps,
        "warmup": FLAGS.warmup,
        "zeroed_groups": runs[0]["zeroed_groups"],
        "prunable_groups": runs[0]["prunable_groups"],
        "params_before": runs[0]["params_before"],
        "params_after": int(med("params_after")),
        "params_after_all": [run["params_after"] for run in runs],
        "layers_narrowed": int(med("layers_narrowed")),
        "median_step_s": {"dense": dense_step, "pruned": pruned_step},
        "step_ratio_pruned_over_dense": pruned_step / dense_step,
        "first_step_dense_s": med("first_step_dense_s"),
        "reconfigure_s": reconfigure_s,
        "reconfigure_s_all": [run["reconfigure_s"] for run in runs],
        "reconfigure_phases_s": {
            name: statistics.median(run["phases_s"].get(name, 0.0) for run in runs)
            for name, _, _ in _PHASES
        },
        "first_step_after_s": first_after,
        "first_step_after_s_all": [run["first_step_after_s"] for run in runs],
        "retrace_extra_s": retrace_extra,
        "python_trace_s": med("python_trace_s"),
        "interval_steps": interval_steps,
        "interval_dense_s": interval_s,
        "overhead_s": overhead_s,
        "overhead_pct_of_interval": 100.0 * overhead_s / interval_s,
        "breakeven_steps": overhead_s / max(dense_step - pruned_step, 1e-12),
        "grappler": FLAGS.grappler,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_count": os.cpu_count(),
    }


def _print_table(result: dict[str, Any]) -> None:
    ms = 1e3
    print(
        f"\n{result['model']}, batch {result['batch_size']}, input "
        f"{result['input_shape']}, {result['optimizer']} + GroupLasso"
    )
    print(
        f"{result['zeroed_groups']} of {result['prunable_groups']} channel groups zeroed "
        f"({result['fraction_zeroed']:g}); {result['repeats']} fresh models x "
        f"{result['steps_per_repeat']} timed steps per phase (after "
        f"{result['warmup']} warm-up steps)\n"
    )
    print(f"{'':<34}{'dense':>12}{'pruned':>12}{'ratio':>9}")
    print(
        f"{'parameters (median)':<34}{result['params_before']:>12,}{result['params_after']:>12,}"
        f"{result['params_after'] / result['params_before']:>9.3f}"
    )
    step = result["median_step_s"]
    print(
        f"{'median train step (ms)':<34}{ms * step['dense']:>12.1f}{ms * step['pruned']:>12.1f}"
        f"{result['step_ratio_pruned_over_dense']:>9.3f}"
    )
    print(
        f"{'first step, incl. tracing (ms)':<34}{ms * result['first_step_dense_s']:>12.1f}"
        f"{ms * result['first_step_after_s']:>12.1f}"
    )
    print(f"\none reconfiguration, {result['layers_narrowed']} layer outputs narrowed "
          f"(median of {result['repeats']}):")
    print(f"  {'decide + reconfigure() total':<32}{ms * result['reconfigure_s']:>10.1f} ms")
    for name, seconds in result["reconfigure_phases_s"].items():
        label = "  " * name.count("/") + name.rsplit("/", 1)[-1]
        print(f"    {label:<30}{ms * seconds:>10.1f} ms")
    print(f"  {'first step after: retrace extra':<32}{ms * result['retrace_extra_s']:>10.1f} ms")
    print(f"    {'of which tracing (Python)':<30}{ms * result['python_trace_s']:>10.1f} ms")
    print(f"  {'overhead (sum)':<32}{ms * result['overhead_s']:>10.1f} ms")
    for key, label in (("reconfigure_s_all", "reconfigure, per repeat (ms):"),
                       ("first_step_after_s_all", "first step after, per repeat (ms):")):
        print(f"  {label:<36}" + " ".join(f"{ms * t:.0f}" for t in result[key]))
    print(
        f"\ninterval = {result['interval_steps']} dense steps = "
        f"{result['interval_dense_s']:.1f} s; overhead = "
        f"{result['overhead_pct_of_interval']:.3f}% of it; "
        f"repaid after {result['breakeven_steps']:.0f} pruned steps"
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.grappler:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    result = run_benchmark()
    _print_table(result)
    results.write(result, FLAGS.json, indent=2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
