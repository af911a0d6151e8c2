"""A training run for resume_test.py: optionally SIGKILLs itself at a given
point, and resumes from its `Checkpoint` when started again.

Usage: python resume_job.py DIR KILL_AT [MODE]
KILL_AT: none | mid_epoch | reconfiguration | checkpoint_write
MODE: dead (default: `DeadChannels(interval=1)`, dead channels every epoch)
| target (`FlopsBudget(0.5, target_epoch=2, interval=1)`, a cut every epoch
until the budget is met) | mirrored (dead, under MirroredStrategy on two
logical CPUs)

`Reconfigure` (λ calibrated at the first step), then a `RunLog` (run log in
DIR/log), then `Checkpoint(DIR/backup, trackers=[reconfigure, runlog])`.
Deterministic (op determinism, fixed data order), so an interrupted and
resumed run can be compared with an uninterrupted one. At the end it writes
DIR/result.json (architecture, parameters, λ per epoch run in this process,
the calibrations done in this process, cost totals, reconfiguration epochs)
and DIR/weights.npz.
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
from tf_prunetrain import inplace  # noqa: E402
from tf_prunetrain import regularizers  # noqa: E402

EPOCHS = 4


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(kill_at):
    """Makes the process kill itself at the chosen point of this run."""
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


class _KillMidEpoch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if self._epoch == 2 and batch == 1:
            _die()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


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


def main(directory, kill_at, mode):
    if mode == "mirrored":  # two logical CPUs, before TensorFlow starts
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    if mode == "target":
        schedule = tf_prunetrain.FlopsBudget(0.5, target_epoch=2, interval=1)
    else:
        schedule = tf_prunetrain.DeadChannels(interval=1)
    # round_to=1: the model's widths (8/16/32) leave little to cut in
    # multiples of 8.
    reconfigure = tf_prunetrain.Reconfigure(schedule, penalty_ratio=0.2,
                                            round_to=1, verbose=0)
    runlog = tf_prunetrain.RunLog(log_dir=os.path.join(directory, "log"),
                                  batch_size=16)
    backup = tf_prunetrain.Checkpoint(os.path.join(directory, "backup"),
                                      trackers=[reconfigure, runlog])
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
            model = tf_prunetrain.add_group_lasso(
                model_zoo.randomize_batchnorm(model_zoo.resnet_basic()))
            model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                          keras.losses.SparseCategoricalCrossentropy(
                              from_logits=True))
            pt.zero_random_groups(model, 0.4, seed=3)
            initial_epoch = 0
    events = _Events()
    callbacks = [_ZeroMore(), reconfigure, runlog, events, backup]
    if kill_at == "mid_epoch":
        callbacks.insert(0, _KillMidEpoch())
    _arm(kill_at)
    x = model_zoo.random_input(model, batch_size=48, seed=0)
    y = np.arange(48) % 10
    model.fit(x, y, batch_size=16, epochs=EPOCHS, initial_epoch=initial_epoch,
              shuffle=False, verbose=0, callbacks=callbacks)
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
             *[np.asarray(v.numpy()) for v in model.weights])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "dead")
