"""Per-step training-time overhead of `GroupLasso` on a CIFAR ResNet.

Builds `resnet_cifar` twice -- plain, and through `add_group_lasso` (the
paper's groups on every prunable kernel) -- with identical weights, compiles both with SGD(momentum=0.9) and times `train_on_batch` on
one synthetic batch, alternating the two models round by round (ABBA order) so
that machine drift hits both alike. Reports each model's median step time and
their ratio.

Example (about 1-2 minutes on 2 CPU cores; from the repository root):

    python -m tools.bench_group_lasso --rounds=10 --steps=10
    python -m tools.bench_group_lasso --depth=20 --json=-
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_prunetrain  # noqa: E402
from tf_prunetrain import latency  # noqa: E402
from tf_prunetrain.models import resnet_cifar  # noqa: E402
from tools import replay  # noqa: E402
from tools import results  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line (defined here, not at import: importing this module
    beside other tools defines no flag)."""
    replay.define_resnet_flags()
    flags.DEFINE_float("epsilon", 1e-8, "GroupLasso epsilon.")
    flags.DEFINE_integer("warmup", 5, "Untimed steps per model after tracing.")
    flags.DEFINE_integer("rounds", 10, "Alternation rounds (each times both models).")
    flags.DEFINE_integer("steps", 10, "Timed steps per model per round.")
    flags.DEFINE_integer("seed", 0, "Seed for weights and synthetic data.")
    flags.DEFINE_string("json", None, "Also write results as JSON to this path ('-' = stdout).")


def _time_penalty_only(model: keras.Model, repeats: int) -> float:
    """Median seconds of forward+backward of the GroupLasso terms alone."""
    kernels = [v for v in model.trainable_variables if v.regularizer is not None]

    @tf.function
    def penalty_and_grads() -> Any:
        with tf.GradientTape() as tape:
            total = tf.add_n([v.regularizer(v) for v in kernels])
        return total, tape.gradient(total, [v.value for v in kernels])

    penalty_and_grads()
    return statistics.median(latency.time_calls(
        lambda: float(penalty_and_grads()[0]), repeats))


def run_benchmark() -> dict[str, Any]:
    widths = tuple(int(w) for w in FLAGS.widths)
    keras.utils.set_random_seed(FLAGS.seed)
    plain = resnet_cifar(
        depth=FLAGS.depth,
        num_classes=FLAGS.num_classes,
        input_shape=(FLAGS.image_size, FLAGS.image_size, 3),
        widths=widths,
        seed=FLAGS.seed,
    )
    grouped = tf_prunetrain.add_group_lasso(plain, FLAGS.strength, FLAGS.epsilon)
    n_kernels = sum(1 for w in plain.trainable_weights if len(w.shape) >= 2)
    n_groups = sum(
        sum(v.shape[a] for a in v.regularizer.axes)
        for v in grouped.trainable_variables
        if v.regularizer is not None
    )
    if len(grouped.losses) != n_kernels:
        raise RuntimeError(
            f"expected {n_kernels} GroupLasso terms, got {len(grouped.losses)}"
        )

    rng = np.random.default_rng(FLAGS.seed)
    shape = (FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3)
    x = tf.constant(rng.standard_normal(shape, dtype=np.float32))
    y = tf.constant(rng.integers(0, FLAGS.num_classes, FLAGS.batch_size), dtype=tf.int32)
    np.testing.assert_allclose(
        plain(x[:8], training=False).numpy(),
        grouped(x[:8], training=False).numpy(),
        rtol=1e-5,
        atol=1e-5,
    )

    models = {"plain": plain, "group_lasso": grouped}
    for model in models.values():
        replay.compile_sgd(model)
        replay.batch_seconds(model, x, y, 1 + FLAGS.warmup)  # trace + warm up

    samples = latency.round_robin(
        {name: (lambda m=model: replay.batch_seconds(m, x, y, FLAGS.steps))
         for name, model in models.items()}, FLAGS.rounds)
    steps = FLAGS.steps  # each round's steps, in order
    round_ratios = [
        statistics.median(samples["group_lasso"][r * steps:(r + 1) * steps])
        / statistics.median(samples["plain"][r * steps:(r + 1) * steps])
        for r in range(FLAGS.rounds)]

    medians = {name: statistics.median(t) for name, t in samples.items()}
    return {
        "model": f"resnet{FLAGS.depth}_cifar widths={list(widths)}",
        "batch_size": FLAGS.batch_size,
        "input_shape": list(shape[1:]),
        "rounds": FLAGS.rounds,
        "steps_per_round": FLAGS.steps,
        "warmup": FLAGS.warmup,
        "regularized_kernels": n_kernels,
        "groups": n_groups,
        "median_step_s": medians,
        "min_step_s": {name: min(t) for name, t in samples.items()},
        "ratio_of_medians": medians["group_lasso"] / medians["plain"],
        "median_of_round_ratios": statistics.median(round_ratios),
        "round_ratios": round_ratios,
        "penalty_fwd_bwd_only_s": _time_penalty_only(grouped, repeats=50),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_count": os.cpu_count(),
    }


def _print_table(result: dict[str, Any]) -> None:
    print(
        f"\n{result['model']}, batch {result['batch_size']}, input {result['input_shape']}, "
        f"{result['regularized_kernels']} GroupLasso kernels / {result['groups']} groups"
    )
    print(
        f"{result['rounds']} rounds x {result['steps_per_round']} steps per model "
        f"(after {result['warmup']} warm-up steps), ABBA order\n"
    )
    print(f"{'config':<14}{'median step (ms)':>18}{'min step (ms)':>16}")
    for name in ("plain", "group_lasso"):
        print(
            f"{name:<14}{1e3 * result['median_step_s'][name]:>18.2f}"
            f"{1e3 * result['min_step_s'][name]:>16.2f}"
        )
    print(f"\nratio of medians (group_lasso / plain): {result['ratio_of_medians']:.4f}")
    print(f"median of per-round ratios:             {result['median_of_round_ratios']:.4f}")
    print(
        "GroupLasso penalty + gradient alone:    "
        f"{1e3 * result['penalty_fwd_bwd_only_s']:.2f} ms"
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    result = run_benchmark()
    _print_table(result)
    results.write(result, FLAGS.json, indent=2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
