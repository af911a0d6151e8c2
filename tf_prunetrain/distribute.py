"""Data-parallel PruneTrain on `tf.distribute`: strategies, synchronized
BatchNorm, and one pruning decision for every replica and worker.

* `make_strategy("mirrored" | "multi_worker" | "default")` builds the
  strategy (multi-worker reads `TF_CONFIG`). Build and compile the model
  inside `strategy.scope()`; `Reconfigure` then creates the smaller variables
  and the rebuilt optimizer in that scope, as mirrored variables.
* `synchronize_batchnorm(model)`: plain `BatchNormalization` keeps per-replica
  moving statistics that drift apart (and an exported model then differs from
  what was trained); synchronized BatchNorm normalizes with the global batch
  and keeps the statistics equal everywhere.
* `check_optimizer(model)`: warns when the model's optimizer was made
  outside the strategy's scope (`Reconfigure` calls it when `fit` starts).
* `broadcast(strategy, value)`: the first replica's value everywhere, through
  an all-reduce. `Reconfigure` broadcasts λ and the pruning decision, so all
  workers shrink the same channels by construction — not by trusting that
  every worker computes the same floats.

Keras 3.15's `fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585: its first-batch build and its logs reduce nested or
scalar per-replica values in ways the collective strategy rejects).
`make_strategy("multi_worker")` therefore installs a narrow fix (see
`fix_multi_worker_fit`); it changes nothing for other strategies.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_prunetrain._keras import fix_multi_worker_fit
from tf_prunetrain import handlers
from tf_prunetrain import surgery

STRATEGIES = ("default", "mirrored", "multi_worker")
_STRATEGIES: dict[tuple, tf.distribute.Strategy] = {}


def make_strategy(name: str = "default",
                  devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy called `name`.

    The same arguments give the same strategy object within a process: two
    strategies over the same devices would reuse collective keys and their
    all-reduces could collide.

    Args:
      name: "default" (one device), "mirrored" (every local GPU, or
        `devices`) or "multi_worker" (`MultiWorkerMirroredStrategy`; each
        process reads its cluster and index from the `TF_CONFIG` variable).
      devices: for "mirrored", the devices to use, e.g. ["/gpu:0", "/gpu:1"].

    Example:
    >>> import tf_prunetrain
    >>> strategy = tf_prunetrain.distribute.make_strategy("mirrored", ["/cpu:0"])
    >>> strategy.num_replicas_in_sync
    1
    """
    if name not in STRATEGIES:
        raise ValueError(f"make_strategy: name must be one of {STRATEGIES}, "
                         f"got {name!r}.")
    if devices is not None and name != "mirrored":
        raise ValueError("make_strategy: devices= applies to 'mirrored' only.")
    if name == "default":
        return tf.distribute.get_strategy()
    key = (name, None if devices is None else tuple(devices))
    if key not in _STRATEGIES:
        if name == "mirrored":
            _STRATEGIES[key] = tf.distribute.MirroredStrategy(
                None if devices is None else list(devices))
        else:
            fix_multi_worker_fit()
            _STRATEGIES[key] = tf.distribute.MultiWorkerMirroredStrategy()
    return _STRATEGIES[key]


def synchronize_batchnorm(model: keras.Model) -> keras.Model:
    """An equivalent model whose BatchNormalization layers (every layer kind
    with `replica_sync` in the handler table) are synchronized across
    replicas (same names, weights and regularizers). Call it inside
    `strategy.scope()`, before `compile`.

    Example:
    >>> import keras, tf_prunetrain
    >>> x = keras.Input((4, 4, 3))
    >>> y = keras.layers.BatchNormalization(name="bn")(x)
    >>> model = tf_prunetrain.distribute.synchronize_batchnorm(keras.Model(x, y))
    >>> model.get_layer("bn").synchronized
    True
    """
    def config_fn(layer: Any, config: dict) -> dict:
        return {**config, **handlers.handler_for(layer).replica_sync}

    return surgery.clone(model, config_fn)


def check_optimizer(model: keras.Model) -> None:
    """Warns when `model`'s optimizer was created outside its strategy's
    scope on several replicas: its step count is then a plain variable
    that every replica increments (measured: 2 per step on 2 replicas),
    so learning-rate schedules run that much faster — until a cut, whose
    rebuilt optimizer is made in the scope and counts right.

    >>> import keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> check_optimizer(model)  # one replica: nothing to say
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or \
            model.distribute_strategy.num_replicas_in_sync == 1:
        return
    if not isinstance(optimizer.iterations.value,
                      tf.distribute.DistributedValues):
        warnings.warn(
            f"model '{model.name}': its optimizer {type(optimizer).__name__} "
            "was created outside the strategy's scope, so every replica "
            "counts each step (its learning-rate schedule runs "
            f"{model.distribute_strategy.num_replicas_in_sync}x fast) until "
            "the first cut rebuilds it in the scope. Create the optimizer "
            "inside strategy.scope(), with the model.", stacklevel=2)


def broadcast(strategy: tf.distribute.Strategy, value: Any) -> np.ndarray:
    """The first replica's `value` on every replica and worker.

    Every worker must call it at the same point (it is a collective). Values
    are sent as float64, exact for booleans, integers below 2**53 and float32.

    Example:
    >>> import numpy as np, tensorflow as tf, tf_prunetrain
    >>> tf_prunetrain.distribute.broadcast(tf.distribute.get_strategy(), np.array([1, 0]))
    array([1, 0])
    """
    value = np.asarray(value)
    if strategy.num_replicas_in_sync == 1:
        return value
    flat = value.astype(np.float64).ravel()

    def first_replica_only() -> tf.Tensor:
        context = tf.distribute.get_replica_context()
        mine = tf.constant(flat)
        return tf.where(tf.equal(context.replica_id_in_sync_group, 0), mine,
                        tf.zeros_like(mine))

    total = strategy.reduce(tf.distribute.ReduceOp.SUM,
                            strategy.run(tf.function(first_replica_only)),
                            axis=None)
    return np.asarray(total).astype(value.dtype).reshape(value.shape)
