"""The FLOPs-budget mode: `budget.plan_to_flops` and
`Reconfigure(flops_target=...)`."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import model_zoo
import pruning_testing as pt
import tf_prunetrain
from tf_prunetrain import budget
from tf_prunetrain import proximal
from tf_prunetrain.models import resnet_cifar

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# -- plan_to_flops ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["plain_cnn", "resnet_basic",
                                  "mobilenetv2_like", "separable_net",
                                  "densenet_like"])
@pytest.mark.parametrize("fraction", [0.3, 0.6])
def test_plan_meets_the_goal_within_one_channel_set(name, fraction):
    model = model_zoo.ALL_BUILDERS[name]()
    graph = tf_prunetrain.channel_groups(model)
    start = tf_prunetrain.forward_flops(model)
    reachable = budget.reachable_flops(graph) / start
    goal = max(fraction, reachable + 0.05) * start
    plan = budget.plan_to_flops(graph, goal)
    small = plan.apply()
    exact = tf_prunetrain.forward_flops(small)
    # The estimate is the handler table's count (bias adds aside).
    assert budget.estimate_flops(graph, plan.keep) == pytest.approx(
        exact, rel=2e-3)
    assert exact <= goal * 1.002
    # Undershoot: less than the costliest single channel set it removed.
    costliest = max(_set_flops(graph, root, start)
                    for root in np.flatnonzero(~plan.keep))
    assert goal - exact <= costliest * 1.01
    assert all(after > 0 for _, _, after in plan.changes())


def _set_flops(graph, root, start):
    keep = np.ones(len(graph.root), bool)
    keep[root] = False
    return start - budget.estimate_flops(graph, keep)


def test_plan_cuts_dead_channels_first_and_keeps_the_function():
    model = model_zoo.randomize_batchnorm(model_zoo.resnet_basic())
    pt.zero_random_groups(model, 0.5, seed=2)
    graph = tf_prunetrain.channel_groups(model)
    dead_only = tf_prunetrain.plan_pruning(graph, remove_blocks=False)
    dead_flops = budget.estimate_flops(graph, dead_only.keep)
    start = tf_prunetrain.forward_flops(model)
    # A goal above what the dead channels free: only dead ones are cut.
    plan = budget.plan_to_flops(graph, (dead_flops + start) / 2,
                                floor=(dead_flops + start) / 2)
    removed = ~plan.keep
    assert removed.any() and not np.any(removed & dead_only.keep)
    x = model_zoo.random_input(model, batch_size=8)
    assert pt.relative_error(model.predict(x, verbose=0),
                             plan.apply().predict(x, verbose=0)) < 1e-5
    # With the floor at the goal's level, the other dead sets stay.
    assert np.count_nonzero(removed) < np.count_nonzero(~dead_only.keep)


def test_plan_rounds_widths_and_still_meets_the_goal():
    model = model_zoo.resnet_basic()
    graph = tf_prunetrain.channel_groups(model)
    start = tf_prunetrain.forward_flops(model)
    plan = budget.plan_to_flops(graph, 0.5 * start, round_to=4)
    small = plan.apply()
    # Met, and not overshot by the rounding: channels were given back.
    assert 0.46 * start <= tf_prunetrain.forward_flops(small) \
        <= 0.5 * start * 1.002
    for layer in small.layers:
        if isinstance(layer, keras.layers.Conv2D):
            original = model.get_layer(layer.name).filters
            assert layer.filters % 4 == 0 or layer.filters == original, \
                layer.name


def test_plan_never_empties_a_layer():
    model = model_zoo.plain_cnn()
    graph = tf_prunetrain.channel_groups(model)
    plan = budget.plan_to_flops(graph, 0.0, min_channels=2)
    small = plan.apply()
    for layer in small.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert layer.filters >= 2, layer.name
    assert budget.reachable_flops(graph, min_channels=2) == pytest.approx(
        tf_prunetrain.forward_flops(small), rel=2e-3)


def test_schedule_falls_from_one_to_the_target():
    schedule = budget.FlopsSchedule(target=0.3, target_epoch=6)
    goals = [schedule.goal(e) for e in range(9)]
    assert goals[0] == 1.0 and goals[6] == goals[8] == pytest.approx(0.3)
    assert all(a > b for a, b in zip(goals[:6], goals[1:7]))
    # Cubic: most of the cut comes early.
    assert goals[2] < 0.3 + 0.5 * 0.7


# -- Reconfigure(flops_target=...) ---------------------------------------------------
def _fit(target, epochs=6, proximal_step=True, scales=True, strength=0.05,
         build=None, compile_kwargs=None, callbacks=(), **reconfigure):
    keras.utils.set_random_seed(0)
    build = build or (lambda: resnet_cifar(
        8, input_shape=(12, 12, 1), widths=(8, 16, 32), seed=0))
    model = tf_prunetrain.add_group_lasso(build(), strength=strength,
                                          proximal=proximal_step,
                                          scales=scales)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS,
                  **(compile_kwargs or {}))
    rng = np.random.default_rng(0)
    x = rng.random((128, *model.input_shape[1:]), np.float32)
    y = np.arange(128) % 10
    callback = tf_prunetrain.Reconfigure(
        flops_target=target, penalty_ratio=None, verbose=0, batch_size=32,
        **reconfigure)
    history = model.fit(x, y, epochs=epochs, batch_size=32, verbose=0,
                        shuffle=False, callbacks=[*callbacks, callback])
    return model, callback, history, x


def _achieved(callback):
    return callback.cost.inference_flops / callback.initial_cost.inference_flops


@pytest.mark.parametrize("target", [0.3, 0.6])
def test_target_is_met_by_target_epoch_then_training_goes_on(target):
    model, callback, history, x = _fit(target, epochs=8)
    assert callback.target_epoch == 2  # 25% of 8 epochs
    assert callback.target_reached is not None
    assert callback.target_reached <= callback.target_epoch
    assert abs(_achieved(callback) - target) <= 0.02
    flops = history.history["prunetrain_flops"]
    reached = callback.target_reached
    assert flops[reached - 1] == callback.cost.inference_flops
    assert len(set(flops[reached - 1:])) == 1  # no change after the target
    assert all(r.epoch <= reached for r in callback.reconfigurations)
    # The lasso is off and gone from the train step.
    assert callback.strength == 0.0
    for variable in model.trainable_variables:
        assert variable.regularizer is None, variable.path
        assert not isinstance(variable.constraint, proximal.ProximalStep)
    assert np.all(np.isfinite(history.history["loss"]))


@pytest.mark.parametrize("kwargs", [
    dict(proximal_step=False, scales=False, strength=1e-3),  # loss term
    dict(round_to=2),
    dict(target_epoch=3, interval=1),
])
def test_target_is_met_in_every_lasso_mode(kwargs):
    model, callback, _, _ = _fit(0.4, **kwargs)
    assert abs(_achieved(callback) - 0.4) <= 0.02
    assert callback.target_reached <= callback.target_epoch
    assert callback.target_epoch == kwargs.get("target_epoch", 2)
    if "round_to" in kwargs:
        for layer in model.layers:
            if isinstance(layer, keras.layers.Conv2D):
                assert layer.filters % 2 == 0, layer.name


def test_mixed_precision_and_jit_compile():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, callback, history, _ = _fit(
            0.5, epochs=4, compile_kwargs={"jit_compile": True})
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert abs(_achieved(callback) - 0.5) <= 0.02
    assert np.all(np.isfinite(history.history["loss"]))


class _Probe(keras.callbacks.Callback):
    """Predicts a fixed batch at every epoch end (inference mode)."""

    def __init__(self, x):
        super().__init__()
        self.x, self.outputs = x, []

    def on_epoch_end(self, epoch, logs=None):
        self.outputs.append(self.model.predict(self.x, verbose=0))


class _ZeroHalf(keras.callbacks.Callback):
    """Kills half the channel groups at the end of the first epoch."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            pt.zero_random_groups(self.model, 0.6, seed=3)


def test_a_cut_of_dead_channels_only_keeps_the_outputs():
    """Enough channels are dead at the cut: the target is met by removing
    dead channels only, and the outputs do not change."""
    x = np.random.default_rng(1).random((16, 12, 12, 1), np.float32)
    before, after = _Probe(x), _Probe(x)

    def build():
        return model_zoo.randomize_batchnorm(resnet_cifar(
            8, input_shape=(12, 12, 1), widths=(8, 16, 32), seed=0))

    keras.utils.set_random_seed(0)
    model = tf_prunetrain.add_group_lasso(build(), strength=0.0)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    callback = tf_prunetrain.Reconfigure(flops_target=0.9, target_epoch=1,
                                         penalty_ratio=None, verbose=0)
    rng = np.random.default_rng(0)
    model.fit(rng.random((64, 12, 12, 1), np.float32), np.arange(64) % 10,
              epochs=2, batch_size=32, verbose=0,
              callbacks=[_ZeroHalf(), before, callback, after])
    assert callback.reconfigurations[0].changes
    # Within one channel set (a trunk channel here costs about 3%).
    assert 0.85 <= _achieved(callback) <= 0.9
    assert pt.relative_error(before.outputs[0], after.outputs[0]) < 1e-5


def test_mirrored_run_has_the_single_device_architecture():
    def train(strategy):
        with strategy.scope():
            model = tf_prunetrain.add_group_lasso(
                tf_prunetrain.synchronize_batchnorm(
                    model_zoo.resnet_basic()), strength=0.05, proximal=True)
            model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
        x = model_zoo.random_input(model, batch_size=32, seed=1)
        callback = tf_prunetrain.Reconfigure(flops_target=0.5, target_epoch=2,
                                             penalty_ratio=None, verbose=0)
        model.fit(x, np.arange(32) % 10, epochs=3, batch_size=16,
                  shuffle=False, verbose=0, callbacks=[callback])
        return model, callback

    mirrored, mirrored_cb = train(tf_prunetrain.make_strategy("mirrored"))
    single, single_cb = train(tf.distribute.get_strategy())
    assert mirrored_cb.target_reached == single_cb.target_reached == 2
    assert [r.changes for r in mirrored_cb.reconfigurations] == \
        [r.changes for r in single_cb.reconfigurations]
    assert [tuple(w.shape) for w in mirrored.weights] == \
        [tuple(w.shape) for w in single.weights]
    assert abs(_achieved(mirrored_cb) - 0.5) <= 0.02


# -- bad input -----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(flops_target=0.0), "flops_target must be a number in"),
    (dict(flops_target=1.0), "flops_target must be a number in"),
    (dict(flops_target=-0.5), "flops_target must be a number in"),
    (dict(flops_target=math.nan), "flops_target must be a number in"),
    (dict(flops_target="0.5"), "flops_target must be a number in"),
    (dict(flops_target=True), "flops_target must be a number in"),
    (dict(flops_target=0.5, penalty_epochs=3), "conflict"),
    (dict(target_epoch=3), "target_epoch needs flops_target"),
    (dict(flops_target=0.5, target_epoch=0), "target_epoch must be an integer"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tf_prunetrain.Reconfigure(**kwargs)


def _untouched_after(callback, epochs=3, build=None):
    """Fits with `callback`, which must raise at train begin; checks that
    the model was left exactly as it was; returns the error."""
    build = build or (lambda: resnet_cifar(
        8, input_shape=(12, 12, 1), widths=(8, 16, 32), seed=0))
    model = tf_prunetrain.add_group_lasso(build(), strength=0.05,
                                          proximal=True)
    model.compile(keras.optimizers.SGD(0.05), LOSS)
    weights = [w.numpy().copy() for w in model.weights]
    x = np.zeros((8, *model.input_shape[1:]), np.float32)
    with pytest.raises(ValueError) as error:
        model.fit(x, np.arange(8) % 10, epochs=epochs, verbose=0,
                  callbacks=[callback])
    assert len(weights) == len(model.weights)
    for before, now in zip(weights, model.weights):
        np.testing.assert_array_equal(before, now.numpy())
    assert all(v.constraint is None for v in model.trainable_variables)
    return str(error.value)


def test_target_epoch_past_the_last_epoch():
    message = _untouched_after(tf_prunetrain.Reconfigure(
        flops_target=0.5, target_epoch=5, verbose=0), epochs=3)
    assert "target_epoch=5 is past fit's last epoch (3)" in message


def test_too_few_epochs_for_the_schedule():
    message = _untouched_after(tf_prunetrain.Reconfigure(
        flops_target=0.5, verbose=0), epochs=1)
    assert "fit runs 1 epoch(s); flops_target needs at least 2" in message


def test_target_below_what_the_model_can_reach():
    def mostly_frozen():
        x = keras.Input((8, 8, 3))
        h = keras.layers.Conv2D(8, 3, padding="same", name="free")(x)
        h = keras.layers.LayerNormalization(name="frozen_norm")(h)  # freezes
        h = keras.layers.Conv2D(8, 3, padding="same", name="big")(h)
        y = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
        return keras.Model(x, y)

    message = _untouched_after(tf_prunetrain.Reconfigure(
        flops_target=0.1, verbose=0), build=mostly_frozen)
    assert "flops_target=0.1 is below what model" in message
    reachable = float(message.split("can reach (")[1].split(" ")[0])
    assert 0.1 < reachable < 1
