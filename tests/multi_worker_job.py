"""One worker of the multi-worker test (run by distribute_test.py).

Usage: TF_CONFIG=... python multi_worker_job.py OUT_DIR THRESHOLD [MODE]

Trains a small ResNet under MultiWorkerMirroredStrategy with `Reconfigure`
(λ calibrated at the first step, a random 40% of the channel groups zeroed
beforehand; MODE `dead`: `DeadChannels(interval=1, threshold=THRESHOLD)`,
a cut every epoch; MODE `target`: `FlopsBudget(0.5, target_epoch=2,
interval=1, threshold=THRESHOLD)`) with a `RunLog` after it, and writes
`<task>.json` (final channels, parameters, λ, the epoch pruning ended
after, what each reconfiguration changed) and `<task>.npz` (every weight)
into OUT_DIR.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402

import tf_prunetrain  # noqa: E402

strategy = tf_prunetrain.distribute.make_strategy("multi_worker")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import model_zoo  # noqa: E402
import pruning_testing as pt  # noqa: E402


def main(out_dir: str, threshold: float, mode: str) -> None:
    task = strategy.cluster_resolver.task_id
    with strategy.scope():
        model = tf_prunetrain.distribute.synchronize_batchnorm(
            model_zoo.randomize_batchnorm(model_zoo.resnet_basic()))
        model = tf_prunetrain.add_group_lasso(model)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
    pt.zero_random_groups(model, 0.4, seed=3)
    x = model_zoo.random_input(model, batch_size=32, seed=0)
    y = np.arange(32) % 10
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(
        options)
    if mode == "target":
        schedule = tf_prunetrain.FlopsBudget(0.5, target_epoch=2, interval=1,
                                             threshold=threshold)
    else:
        schedule = tf_prunetrain.DeadChannels(interval=1, threshold=threshold)
    callback = tf_prunetrain.Reconfigure(schedule, penalty_ratio=0.2,
                                         round_to=1, verbose=0)
    log = tf_prunetrain.RunLog()
    model.fit(data, epochs=3, verbose=0, callbacks=[callback, log])
    with open(os.path.join(out_dir, f"{task}.json"), "w") as f:
        json.dump({"channels": log.cost.channels(),
                   "params": model.count_params(),
                   "strength": callback.strength,
                   "finished": callback.finished,
                   "changes": [r.changes for r in callback.reconfigurations]},
                  f)
    np.savez(os.path.join(out_dir, f"{task}.npz"),
             *[np.asarray(v.numpy()) for v in model.weights])


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]),
         sys.argv[3] if len(sys.argv) > 3 else "dead")
