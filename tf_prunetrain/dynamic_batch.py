"""Memory-aware dynamic mini-batch (an idea of the PruneTrain paper that its
authors never released).

As reconfigurations shrink the model, the activation memory of one example
falls; the mini-batch can grow into the memory the initial model needed,
which means fewer steps (and fewer all-reduces) per epoch. With the batch the
learning rate scales linearly (Goyal et al.'s rule), so the per-example step
stays the same.

`model.fit` cannot change its batch size mid-call, so the recipes train one
interval per `fit` call: after each call (which ends with a reconfiguration)
they ask `dynamic_batch_size` for the next interval's batch, re-batch the
dataset, multiply the learning rate by `new / base` and call `fit` again
with `initial_epoch=` where the last one stopped (see recipes/train.py).
"""

from __future__ import annotations

import keras

from tf_prunetrain import _checks
from tf_prunetrain import cost as cost_lib


def dynamic_batch_size(initial: cost_lib.TrainingCost, model: keras.Model,
                       multiple: int = 8,
                       max_batch_size: int | None = None) -> int:
    """The largest batch whose activation memory on `model` fits the budget
    of the initial model at its batch size (`initial.batch_size`), rounded
    down to a multiple of `multiple`, never below the initial batch and at
    most `max_batch_size`.

    Example:
    >>> import keras, tf_prunetrain
    >>> def net(width):
    ...     x = keras.Input((8, 8, 3))
    ...     return keras.Model(x, keras.layers.Conv2D(width, 3)(x))
    >>> initial = tf_prunetrain.training_cost(net(64), batch_size=32)
    >>> # Per example: input 8·8·3 + output 6·6·width values.
    >>> tf_prunetrain.dynamic_batch.dynamic_batch_size(initial, net(16))  # 32·2496 // 768
    104
    """
    _checks.positive_int(multiple, "multiple", "dynamic_batch_size")
    _checks.positive_int(initial.batch_size, "initial.batch_size",
                         "dynamic_batch_size")
    if max_batch_size is not None and max_batch_size < initial.batch_size:
        raise ValueError(f"dynamic_batch_size: max_batch_size "
                         f"({max_batch_size}) is below the initial batch "
                         f"size ({initial.batch_size}).")
    budget = initial.activation_bytes * initial.batch_size
    per_example = cost_lib.training_cost(model).activation_bytes
    batch = budget // max(per_example, 1) // multiple * multiple
    batch = max(batch, initial.batch_size)
    return batch if max_batch_size is None else min(batch, max_batch_size)
