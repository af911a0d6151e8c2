"""A training run for resume_test.py: optionally SIGKILLs itself at a given
point, and resumes from its `Checkpoint` when started again.

Usage: python resume_job.py DIR KILL_AT [MODE]
KILL_AT: none | after:K (once ckpt-K is complete) | mid:E (in the 0-based
epoch E, after its second step) | reconfiguration (inside the second cut,
between the layers' and the optimizer's rebuild) | checkpoint_write (ckpt-3
written, not yet renamed into place)
MODE: dead (default: `DeadChannels(interval=1, penalty_epochs=3)`, a cut
after each of epochs 1-3, then the lasso off) | target (`FlopsBudget(0.5,
target_epoch=2, interval=1)`: the channels of each cut fade out during the
epoch before it) | mirrored (dead, under MirroredStrategy on two logical
CPUs) | schedule (dead, on a model with Dropout, with SGD on a
`CosineDecay` schedule) | levers (the experimental `EarlyBird(0.5,
deadline=2)` and `Rewarm(1.0)`, whose lift is in progress in epoch 3)

`Reconfigure` (λ calibrated at the first step), then a `RunLog` (run log in
DIR/log), then `Checkpoint(DIR/backup, trackers=[reconfigure, runlog,
...])`. Fed by `data.stream` (each epoch's order fixed by its number) with
op determinism, so an interrupted and resumed run can be compared bit for
bit with an uninterrupted one. At the end it writes DIR/result.json
(architecture, parameters, λ per epoch run in this process, the
calibrations done in this process, cost totals, reconfiguration epochs)
and DIR/weights.npz (the
model's weights, then the optimizer's variables).
"""

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import model_zoo  # noqa: E402
import pruning_testing as pt  # noqa: E402
import tf_prunetrain  # noqa: E402
from tf_prunetrain import checkpoint as checkpoint_lib  # noqa: E402
from tf_prunetrain import data as data_lib  # noqa: E402
from tf_prunetrain import inplace  # noqa: E402
from tf_prunetrain import regularizers  # noqa: E402

EPOCHS = 4
EXAMPLES, BATCH = 48, 16


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(kill_at):
    """Makes the process kill itself at the chosen point of this run (the
    in-fit points are callbacks: `_Kill`)."""
    if kill_at == "reconfiguration":  # between the layers and the optimizer
        original, calls = inplace._rebuilt_optimizer, []

        def rebuilt(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                _die()
            return original(*args, **kwargs)

        inplace._rebuilt_optimizer = rebuilt
    if kill_at == "checkpoint_write":  # model written, not yet renamed
        original_replace, calls = os.replace, []

        def replace(src, dst):
            calls.append(1)
            if len(calls) == 3:
                _die()
            return original_replace(src, dst)

        checkpoint_lib.os.replace = replace


class _Kill(keras.callbacks.Callback):
    """After the `Checkpoint`: dies once ckpt-K is complete (`after:K`) or
    after the second step of the 0-based epoch E (`mid:E`)."""

    def __init__(self, kill_at):
        super().__init__()
        kind, _, number = kill_at.partition(":")
        self.kind, self.number = kind, int(number) if number else None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.kind == "mid" and self._epoch == self.number and batch == 1:
            _die()

    def on_epoch_end(self, epoch, logs=None):
        if self.kind == "after" and epoch + 1 == self.number:
            _die()


class _ZeroMore(keras.callbacks.Callback):
    """More channels die after epoch 2 (what the lasso does over time)."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            pt.zero_random_groups(self.model, 0.3, seed=4)


class _Events(keras.callbacks.Callback):
    """After `Reconfigure`: counts its calibrations in this process and
    keeps the λ each epoch of this process logged."""

    def __init__(self):
        super().__init__()
        self.calibrations, self.lambdas = 0, {}

    def on_prunetrain_event(self, event, fields):
        self.calibrations += event == "calibration"

    def on_epoch_end(self, epoch, logs=None):
        self.lambdas[epoch + 1] = float(logs["prunetrain_lambda"])


def _schedule(mode):
    if mode == "target":
        return tf_prunetrain.FlopsBudget(0.5, target_epoch=2, interval=1)
    if mode == "levers":
        return tf_prunetrain.experimental.EarlyBird(0.5, deadline=2)
    return tf_prunetrain.DeadChannels(interval=1, penalty_epochs=3)


def _new_model(mode):
    if mode == "schedule":  # Dropout: its random state must come back too
        model = model_zoo.plain_cnn()
        rate = keras.optimizers.schedules.CosineDecay(0.02, EPOCHS * 3)
    else:
        model = model_zoo.resnet_basic()
        rate = 0.01
    model = tf_prunetrain.add_group_lasso(model_zoo.randomize_batchnorm(model))
    model.compile(keras.optimizers.SGD(rate, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pt.zero_random_groups(model, 0.4, seed=3)
    return model


def main(directory, kill_at, mode):
    if mode == "mirrored":  # two logical CPUs, before TensorFlow starts
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    # round_to=1: the model's widths (8/16/32) leave little to cut in
    # multiples of 8.
    reconfigure = tf_prunetrain.Reconfigure(_schedule(mode),
                                            penalty_ratio=0.2, round_to=1,
                                            verbose=0)
    runlog = tf_prunetrain.RunLog(log_dir=os.path.join(directory, "log"),
                                  batch_size=BATCH)
    trackers = [reconfigure, runlog]
    if mode == "levers":
        trackers.append(tf_prunetrain.experimental.Rewarm(1.0))
    backup = tf_prunetrain.Checkpoint(os.path.join(directory, "backup"),
                                      trackers=trackers)
    strategy = tf_prunetrain.distribute.make_strategy(
        "mirrored" if mode == "mirrored" else "default")
    with strategy.scope():
        restored = backup.restore()
        if restored:
            model, initial_epoch = restored
            # λ comes back calibrated in the regularizers' config.
            calibrated = [reg.calibrated for _, reg in
                          regularizers.lasso_variables(model)]
        else:
            calibrated = None
            model, initial_epoch = _new_model(mode), 0
    events = _Events()
    callbacks = [_ZeroMore(), *trackers, events, backup, _Kill(kill_at)]
    _arm(kill_at)
    x = model_zoo.random_input(model, batch_size=EXAMPLES, seed=0)
    y = np.arange(EXAMPLES) % 10
    batches, steps = data_lib.stream((x, y), BATCH, seed=0,
                                     initial_epoch=initial_epoch)
    model.fit(batches, steps_per_epoch=steps, epochs=EPOCHS,
              initial_epoch=initial_epoch, shuffle=False, verbose=0,
              callbacks=callbacks)
    result = {"channels": runlog.cost.channels(),
              "params": model.count_params(), "strength": reconfigure.strength,
              "train_flops_spent": runlog.train_flops_spent,
              "train_flops_dense": runlog.train_flops_dense,
              "steps": runlog.steps,
              "resumed_from": initial_epoch,
              "restored_calibrated": calibrated,
              "calibrations": events.calibrations,
              "lambdas": events.lambdas,
              "finished": reconfigure.finished,
              "replicas": strategy.num_replicas_in_sync,
              "reconfigured": [r.epoch for r in reconfigure.reconfigurations
                               if r.changes]}
    with open(os.path.join(directory, "result.json"), "w") as f:
        json.dump(result, f)
    np.savez(os.path.join(directory, "weights.npz"),
             *[np.asarray(v.numpy()) for v in model.weights],
             *[np.asarray(v.numpy()) for v in model.optimizer.variables])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "dead")
