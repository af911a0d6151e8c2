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
    graph = tf_prunetrain.channel_groups(model)
    tf_prunetrain.coupling.zero_groups(graph, roots)


def zero_random_groups(model: keras.Model, fraction: float, seed: int = 0
                       ) -> tuple[int, int]:
    """Zeroes a random `fraction` of the prunable groups; returns
    (number zeroed, number prunable)."""
    graph = tf_prunetrain.channel_groups(model)
    roots = graph.prunable()
    rng = np.random.default_rng(seed)
    dead = rng.choice(roots, int(len(roots) * fraction), replace=False)
    tf_prunetrain.coupling.zero_groups(graph, dead.tolist())
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
                                  tf_prunetrain.RunLog, np.ndarray]:
    """A model_zoo model with GroupLasso, half its channel groups zeroed and
    removed in place by `Reconfigure(DeadChannels(interval=1), round_to=1)`
    during one epoch of `fit`, with a `RunLog` after it; returns the model,
    the two callbacks and the 16 inputs it was fitted on."""
    model = tf_prunetrain.add_group_lasso(
        model_zoo.randomize_batchnorm(build()), 1e-3)
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    zero_random_groups(model, 0.5, seed=1)
    x = model_zoo.random_input(model, batch_size=16)
    callback = tf_prunetrain.Reconfigure(
        tf_prunetrain.DeadChannels(interval=1), penalty_ratio=None,
        round_to=1, verbose=0)
    log = tf_prunetrain.RunLog()
    model.fit(x, np.arange(16) % 10, epochs=1, verbose=0,
              callbacks=[callback, log])
    assert callback.reconfigurations[0].changes
    return model, callback, log, x


def dead_channel_plan(callback: tf_prunetrain.Reconfigure
                      ) -> tf_prunetrain.planning.Plan:
    """The plan that removes the dead channels of `callback`'s model now,
    with its schedule's threshold and its width rules (what
    `DeadChannels` decides when a cut is due)."""
    return tf_prunetrain.planning.plan_pruning(
        tf_prunetrain.channel_groups(callback.model),
        callback.schedule.threshold, round_to=callback.round_to,
        min_channels=callback.min_channels)


def on_fake_clock(
        batch_size: int | None = None, **kwargs
) -> tuple[tf_prunetrain.Reconfigure, tf_prunetrain.RunLog,
           Callable[[float], None]]:
    """A `Reconfigure(DeadChannels(interval=1), penalty_ratio=None,
    round_to=1, **kwargs)` and a `RunLog(batch_size=batch_size)` after it,
    whose clock is a fake one, set on a model_zoo ResNet with 40% of its
    channel groups zeroed (through a `CallbackList`, as `fit` does, so the
    `RunLog` hears of every reconfiguration); returns them and
    `step(seconds)`, which runs one train-batch callback pair of both that
    lasts `seconds` on that clock. Call `on_train_begin` of both first."""
    now = [0.0]
    model = tf_prunetrain.add_group_lasso(model_zoo.resnet_basic(), 1e-3)
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    zero_random_groups(model, 0.4, seed=3)
    kwargs = {"penalty_ratio": None, "round_to": 1, **kwargs}
    callback = tf_prunetrain.Reconfigure(
        tf_prunetrain.DeadChannels(interval=1), **kwargs)
    log = tf_prunetrain.RunLog(batch_size=batch_size, clock=lambda: now[0])
    callbacks = keras.callbacks.CallbackList([callback, log], model=model)

    def step(seconds: float) -> None:
        callbacks.on_train_batch_begin(0)
        now[0] += seconds
        callbacks.on_train_batch_end(0, {"loss": 1.0})

    return callback, log, step


def two_convs(first: int = 16, second: int = 16,
              activation: str | None = None) -> keras.Model:
    """conv c1 (`first`) -> conv c2 (`second`) -> dense fc (10): both
    convolutions prunable, c2 holding most FLOPs when it is as wide."""
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(first, 3, padding="same", activation=activation,
                            name="c1")(x)
    h = keras.layers.Conv2D(second, 3, padding="same",
                            activation=activation, name="c2")(h)
    y = keras.layers.Dense(10, name="fc")(
        keras.layers.GlobalAveragePooling2D(name="gap")(h))
    return keras.Model(x, y)


def schedule_context(model: keras.Model, epochs: int = 10, round_to: int = 1,
                     min_channels: int = 1) -> tf_prunetrain.schedules.Context:
    """What a schedule sees of a run of `epochs` epochs that starts now."""
    return tf_prunetrain.schedules.Context(
        model, epochs, tf_prunetrain.cost.forward_flops(model), round_to,
        min_channels)


class OutputsAroundCuts(keras.callbacks.Callback):
    """The model's inference outputs just before and just after each cut
    (`pairs`); list it before `Reconfigure`, so that its `on_epoch_end`
    runs first."""

    def __init__(self, x):
        super().__init__()
        self.x, self.before, self.pairs = x, None, []

    def on_epoch_end(self, epoch, logs=None):
        self.before = np.asarray(self.model(self.x, training=False))

    def on_reconfigure(self, reconfiguration, plan):
        self.pairs.append((self.before,
                           np.asarray(self.model(self.x, training=False))))
