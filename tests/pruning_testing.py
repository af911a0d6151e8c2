"""Test helpers: kill channel groups and compare model outputs."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants
from tensorflow.python.profiler import model_analyzer, option_builder

import model_zoo
import tf_prunetrain


def zero_groups(model: keras.Model, roots) -> None:
    """Zeroes every kernel slice (all coupled sides) of the given groups."""
    tf_prunetrain.channel_groups(model).zero(roots)


def zero_random_groups(model: keras.Model, fraction: float, seed: int = 0
                       ) -> tuple[int, int]:
    """Zeroes a random `fraction` of the prunable groups; returns
    (number zeroed, number prunable)."""
    graph = tf_prunetrain.channel_groups(model)
    roots = graph.prunable()
    rng = np.random.default_rng(seed)
    dead = rng.choice(roots, int(len(roots) * fraction), replace=False)
    graph.zero(dead.tolist())
    return len(dead), len(roots)


def relative_error(a, b) -> float:
    """max |a - b| relative to the output scale (max |a|)."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12))


def output_channels(model: keras.Model, name: str) -> int:
    return int(model.get_layer(name).output.shape[-1])


def forward_flops(model: keras.Model) -> int:
    """Forward float operations of one example, counted by TensorFlow's own
    profiler on the model's frozen inference graph (an independent count)."""
    specs = [tf.TensorSpec([1, *t.shape[1:]], t.dtype) for t in model.inputs]
    fn = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0],
                                       training=False))
    graph = convert_to_constants.convert_variables_to_constants_v2(
        fn.get_concrete_function(*specs)).graph
    builder = option_builder.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    return model_analyzer.profile(graph, options=options).total_float_ops


def pruned_in_fit(build) -> tuple[keras.Model, tf_prunetrain.Reconfigure,
                                  np.ndarray]:
    """A model_zoo model with GroupLasso, half its channel groups zeroed and
    removed in place by `Reconfigure` during one epoch of `fit`; returns the
    model, the callback and the 16 inputs it was fitted on."""
    model = tf_prunetrain.add_group_lasso(
        model_zoo.randomize_batchnorm(build()), 1e-3)
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    zero_random_groups(model, 0.5, seed=1)
    x = model_zoo.random_input(model, batch_size=16)
    callback = tf_prunetrain.Reconfigure(interval=1, penalty_ratio=None,
                                         verbose=0)
    model.fit(x, np.arange(16) % 10, epochs=1, verbose=0, callbacks=[callback])
    assert callback.reconfigurations[0].changes
    return model, callback, x


def on_fake_clock(
        monkeypatch, **kwargs
) -> tuple[tf_prunetrain.Reconfigure, Callable[[float], None]]:
    """A `Reconfigure(interval=1, penalty_ratio=None, **kwargs)` on a
    model_zoo ResNet with 40% of its channel groups zeroed, its clock
    replaced by a fake one; returns it and `step(seconds)`, which runs one
    train-batch callback pair that lasts `seconds` on that clock."""
    from tf_prunetrain import runlog

    now = [0.0]
    monkeypatch.setattr(runlog.time, "perf_counter", lambda: now[0])
    model = tf_prunetrain.add_group_lasso(model_zoo.resnet_basic(), 1e-3)
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    zero_random_groups(model, 0.4, seed=3)
    callback = tf_prunetrain.Reconfigure(interval=1, penalty_ratio=None,
                                         **kwargs)
    callback.set_model(model)

    def step(seconds: float) -> None:
        callback.on_train_batch_begin(0)
        now[0] += seconds
        callback.on_train_batch_end(0, {"loss": 1.0})

    return callback, step
