"""A training run for resume_test.py: optionally SIGKILLs itself at a given
point, and resumes from its `Checkpoint` when started again.

Usage: python resume_job.py DIR KILL_AT [MODE]
KILL_AT: none | mid_epoch | reconfiguration | checkpoint_write
MODE: dead (default: dead channels every epoch) | target (flops_target=0.5
by epoch 2, a cut every epoch) | mirrored (dead, under MirroredStrategy on
two logical CPUs)

Deterministic (op determinism, fixed data order), so an interrupted and
resumed run can be compared with an uninterrupted one. At the end it writes
DIR/result.json (architecture, parameters, λ, cost totals, reconfiguration
epochs) and DIR/weights.npz.
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


def main(directory, kill_at, mode):
    if mode == "mirrored":  # two logical CPUs, before TensorFlow starts
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    target = dict(flops_target=0.5, target_epoch=2) if mode == "target" else {}
    # round_to=1: the runs compared are separate processes, and "auto"
    # may measure a different multiple in each.
    reconfigure = tf_prunetrain.Reconfigure(interval=1, penalty_ratio=0.2,
                                            verbose=0, batch_size=16,
                                            round_to=1, **target)
    backup = tf_prunetrain.Checkpoint(os.path.join(directory, "backup"),
                                      tracker=reconfigure)
    strategy = tf_prunetrain.make_strategy(
        "mirrored" if mode == "mirrored" else "default")
    with strategy.scope():
        restored = backup.restore()
        if restored:
            model, initial_epoch = restored
        else:
            model = tf_prunetrain.add_group_lasso(
                model_zoo.randomize_batchnorm(model_zoo.resnet_basic()))
            model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                          keras.losses.SparseCategoricalCrossentropy(
                              from_logits=True))
            pt.zero_random_groups(model, 0.4, seed=3)
            initial_epoch = 0
    callbacks = [_ZeroMore(), reconfigure, backup]
    if kill_at == "mid_epoch":
        callbacks.insert(0, _KillMidEpoch())
    _arm(kill_at)
    x = model_zoo.random_input(model, batch_size=48, seed=0)
    y = np.arange(48) % 10
    model.fit(x, y, batch_size=16, epochs=EPOCHS, initial_epoch=initial_epoch,
              shuffle=False, verbose=0, callbacks=callbacks)
    result = {"channels": reconfigure.cost.channels(),
              "params": model.count_params(), "strength": reconfigure.strength,
              "train_flops_spent": reconfigure.train_flops_spent,
              "train_flops_dense": reconfigure.train_flops_dense,
              "steps": reconfigure.steps,
              "resumed_from": initial_epoch,
              "target_reached": reconfigure.target_reached,
              "replicas": strategy.num_replicas_in_sync,
              "reconfigured": [r.epoch for r in reconfigure.reconfigurations
                               if r.changes]}
    with open(os.path.join(directory, "result.json"), "w") as f:
        json.dump(result, f)
    np.savez(os.path.join(directory, "weights.npz"),
             *[np.asarray(v.numpy()) for v in model.weights])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "dead")
