"""`experimental.Rewarm`: the learning rate lifted after a cut, composed with
Keras' schedules and learning-rate callbacks."""

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_prunetrain
from recipes import common
from tf_prunetrain.models import resnet_cifar
from tf_prunetrain.experimental.rewarm import Rewarm, Rewarmed
from tools import rewarm_control

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
STEPS = 4  # per epoch: 128 examples, batch 32


def _model(optimizer, strategy=None):
    """`optimizer()` is made in the strategy's scope (Keras: else its step
    count is a plain variable every replica increments)."""
    keras.utils.set_random_seed(0)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = tf_prunetrain.add_group_lasso(resnet_cifar(
            8, input_shape=(12, 12, 1), widths=(8, 16, 32), seed=0),
            strength=0.05, proximal=True, scales=True)
        model.compile(optimizer(), LOSS)
    return model


def _cut(epoch=2):
    return tf_prunetrain.Reconfigure(
        tf_prunetrain.FlopsBudget(0.5, target_epoch=epoch, interval=epoch,
                                  gentle=False),
        penalty_ratio=None, round_to=1, verbose=0)


def _data():
    rng = np.random.default_rng(0)
    return rng.random((128, 12, 12, 1), np.float32), np.arange(128) % 10


def _fit(model, callbacks, epochs=4):
    x, y = _data()
    return model.fit(x, y, epochs=epochs, batch_size=32, verbose=0,
                     shuffle=False, callbacks=callbacks)


def _lifted(base, peak, length):
    """The re-warm's rates for the steps after a cut, given the base rate
    of each."""
    return [b + max(peak - b, 0.0) * 0.5 * (1 + math.cos(math.pi * s / length))
            for s, b in enumerate(base)]


class _Worse(keras.callbacks.Callback):
    """Logs a metric that never improves (ReduceLROnPlateau cuts the rate
    after every epoch but the first)."""

    def on_epoch_end(self, epoch, logs=None):
        logs["never_better"] = float(epoch)


@pytest.mark.parametrize("first", [True, False])
def test_lift_leaves_reduce_lr_on_plateau_its_own_rate(first):
    model = _model(lambda: keras.optimizers.SGD(0.1, momentum=0.9))
    plateau = keras.callbacks.ReduceLROnPlateau(
        "never_better", factor=0.5, patience=0, mode="min", min_delta=0)
    rewarm = Rewarm(epochs=1.5)  # 6 steps: epoch 3 and half of epoch 4
    callbacks = [_Worse(), _cut(), plateau]
    callbacks = [rewarm, *callbacks] if first else [*callbacks, rewarm]
    history = _fit(model, callbacks, epochs=5)
    # The plateau halves the rate after epochs 2, 3, 4 from what it set,
    # as if there were no lift (it reads the rate between steps; its log
    # is the epoch's rate, before it halves it).
    np.testing.assert_allclose(history.history["learning_rate"],
                               [0.1, 0.1, 0.05, 0.025, 0.0125])
    # After the cut (end of epoch 2): from the peak (0.1, epoch 1's rate)
    # down to the plateau's rate of each step over 6 steps.
    base = [0.05] * STEPS + [0.025] * 2
    np.testing.assert_allclose(rewarm.rates, _lifted(base, 0.1, 6),
                               rtol=1e-6)
    assert float(model.optimizer.learning_rate.numpy()) == \
        pytest.approx(0.00625)


def test_lift_on_a_keras_schedule_and_given_back(tmp_path):
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 5 * STEPS)
    model = _model(lambda: keras.optimizers.SGD(schedule, momentum=0.9))
    rewarm = Rewarm(epochs=1, peak=0.08)
    saved = os.path.join(tmp_path, "during.keras")
    save = keras.callbacks.ModelCheckpoint(saved)  # the last: epoch 5's
    _fit(model, [_cut(), rewarm, save], epochs=5)
    base = [float(schedule(step)) for step in range(2 * STEPS, 3 * STEPS)]
    np.testing.assert_allclose(rewarm.rates, _lifted(base, 0.08, STEPS),
                               rtol=1e-5)
    assert rewarm.rates[0] == pytest.approx(0.08)
    plain = _model(lambda: keras.optimizers.SGD(schedule, momentum=0.9))
    _fit(plain, [_cut()], epochs=5)
    assert max(np.abs(a.numpy() - b.numpy()).max() for a, b in
               zip(model.weights, plain.weights)) > 1e-3  # the lift trained
    assert tf_prunetrain._keras.learning_rate(model.optimizer) is schedule  # given back
    loaded = keras.saving.load_model(saved)
    assert type(tf_prunetrain._keras.learning_rate(loaded.optimizer)) is \
        keras.optimizers.schedules.CosineDecay
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(Rewarmed(schedule)))
    assert restored.get_config() == schedule.get_config()


def test_lift_on_a_schedule_under_mirrored_strategy():
    strategy = tf_prunetrain.distribute.make_strategy("mirrored")
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 4 * STEPS // 2)
    model = _model(lambda: keras.optimizers.SGD(schedule), strategy)
    rewarm = Rewarm(epochs=1)
    x, y = _data()
    model.fit(x, y, epochs=4, batch_size=64, verbose=0, shuffle=False,
              callbacks=[_cut(), rewarm])
    base = [float(schedule(step)) for step in range(4, 6)]  # 2 steps/epoch
    np.testing.assert_allclose(rewarm.rates, _lifted(base, 0.1, 2),
                               rtol=1e-5)


def test_the_lift_is_what_trains_and_nothing_else_changes():
    def final(rewarm):
        model = _model(lambda: keras.optimizers.SGD(0.1, momentum=0.9))
        step = keras.callbacks.LearningRateScheduler(
            lambda epoch: 0.1 if epoch < 2 else 0.01)
        _fit(model, [_cut(), step] + ([rewarm] if rewarm else []))
        return [w.numpy() for w in model.weights]

    plain = final(None)
    # A peak under the base lifts nothing: the run is the plain one.
    for a, b in zip(final(Rewarm(peak=0.001)), plain):
        np.testing.assert_array_equal(a, b)
    lifted = final(Rewarm())
    assert max(np.abs(a - b).max() for a, b in zip(lifted, plain)) > 1e-3


def test_bad_arguments_and_runs_it_cannot_serve():
    for epochs in (0, -1, float("inf")):
        with pytest.raises(ValueError, match="Rewarm: epochs must be"):
            Rewarm(epochs=epochs)
    with pytest.raises(ValueError, match="Rewarm: peak must be >= 0"):
        Rewarm(peak=-0.1)
    model = _model(lambda: keras.optimizers.SGD(lambda: 0.1))
    with pytest.raises(ValueError, match="Rewarm: the optimizer's "
                       "learning_rate is a plain callable"):
        _fit(model, [Rewarm()], epochs=1)
    model = _model(lambda: keras.optimizers.SGD(0.1))
    x, y = _data()
    unsized = tf.data.Dataset.from_tensor_slices((x, y)).filter(
        lambda a, b: True).batch(32)
    with pytest.raises(ValueError, match="Rewarm: the re-warm lasts epochs, "
                       "so it needs the number of steps per epoch"):
        model.fit(unsized, epochs=3, verbose=0,
                  callbacks=[_cut(1), Rewarm()])


class _Stop(keras.callbacks.Callback):
    """Raises at the start of the given (0-based epoch, batch)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise RuntimeError("stopped")


@pytest.mark.parametrize("scheduled", [False, True])
def test_a_fit_an_error_ends_leaves_no_lift_behind(scheduled):
    schedule = keras.optimizers.schedules.CosineDecay(0.01, 10**6)
    model = _model(lambda: keras.optimizers.SGD(
        schedule if scheduled else 0.01, momentum=0.9))
    rewarm = Rewarm(epochs=1, peak=0.1)
    with pytest.raises(RuntimeError, match="stopped"):  # mid-lift, in a
        _fit(model, [_cut(), rewarm, _Stop(2, 1)])     # step's begin
    lifted = float(model.optimizer.learning_rate.numpy())
    assert lifted > 0.05  # the error left the lifted rate in place
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[rewarm])
    rate = tf_prunetrain._keras.learning_rate(model.optimizer)
    if scheduled:  # given back once, not a wrapper of a wrapper
        assert type(rate) is keras.optimizers.schedules.CosineDecay
    else:
        assert float(rate.numpy()) == pytest.approx(0.01)
    # The lift went on in the second fit: the 2 steps before the error
    # (the second never ran) and the 3 left of its 4.
    assert len(rewarm.rates) == 2 + 3


def test_steps_per_execution_counts_steps_not_callbacks():
    keras.utils.set_random_seed(0)
    model = tf_prunetrain.add_group_lasso(resnet_cifar(
        8, input_shape=(12, 12, 1), widths=(8, 16, 32), seed=0),
        strength=0.05)
    model.compile(keras.optimizers.SGD(0.01), LOSS, steps_per_execution=2)
    rewarm = Rewarm(epochs=1, peak=0.1)
    _fit(model, [_cut(), rewarm])
    # 4 steps of lift in 2 callbacks of 2 steps: weights 1 and ½.
    np.testing.assert_allclose(rewarm.rates, _lifted([0.01, 0.01], 0.1, 2),
                               rtol=1e-6)


def test_mixed_precision_lifts_the_inner_optimizers_schedule():
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 4, 0.5)
        model = _model(lambda: keras.optimizers.SGD(schedule))
        assert hasattr(model.optimizer, "inner_optimizer")  # loss scaling
        rewarm = Rewarm(epochs=1)
        _fit(model, [_cut(), rewarm])
    finally:
        keras.mixed_precision.set_global_policy(policy)
    base = [float(schedule(step)) for step in range(2 * STEPS, 3 * STEPS)]
    np.testing.assert_allclose(rewarm.rates, _lifted(base, 0.1, STEPS),
                               rtol=1e-5)


def test_a_checkpoint_carries_the_lift_in_progress():
    model = _model(lambda: keras.optimizers.SGD(0.01))
    rewarm = Rewarm(epochs=2, peak=0.1)
    _fit(model, [_cut(), rewarm], epochs=3)  # 1 of the lift's 2 epochs
    state = json.loads(json.dumps(rewarm.get_state()))
    assert state["lift"] == [0.1, 2 * STEPS, STEPS]
    resumed = Rewarm(epochs=2, peak=0.1)
    resumed.set_state(state)
    model.fit(*_data(), epochs=1, batch_size=32, verbose=0,
              callbacks=[resumed])
    expected = _lifted([0.01] * 2 * STEPS, 0.1, 2 * STEPS)[STEPS:]
    np.testing.assert_allclose(resumed.rates, expected, rtol=1e-6)


class _Rates(keras.callbacks.Callback):
    """The float32 rate of every step, read where the step reads it (the
    last callback of each step's begin)."""

    def __init__(self):
        super().__init__()
        self.bits = []

    def on_train_batch_begin(self, batch, logs=None):
        self.bits.append(_bits(self.model.optimizer.learning_rate.numpy()))


def _bits(rate):
    """A rate's float32 bit pattern."""
    return int(np.float32(rate).view(np.uint32))


class _LiftAt(Rewarm):
    """`Rewarm` on a run with no cut: the lift starts with epoch `at`."""

    def __init__(self, at, **kwargs):
        super().__init__(**kwargs)
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            self.on_reconfigure(None, None)


def test_the_controls_formula_trains_as_rewarm_bit_for_bit():
    # Issue 40: tools/rewarm_control.py's formula kept the rate under its
    # lift in the schedule's `base`, so the epochs after the lift ran at a
    # tenth of their rate: its runs and Rewarm's differed, though the
    # lifted steps' rates were the same.
    lifted = rewarm_control.LIFTED_EPOCH
    config = common.Config(learning_rate=0.1, lr_decay=0.1,
                           lr_decay_epochs=(lifted, lifted + 1))

    def train(callbacks):
        model = _model(lambda: keras.optimizers.SGD(
            0.1, momentum=0.9, weight_decay=5e-4))
        rates = _Rates()
        _fit(model, [*callbacks, rates], epochs=lifted + 2)
        return rates.bits, [w.numpy() for w in model.weights]

    formula = train([rewarm_control.Lifted(config, 0.1)])
    rewarm = train([_LiftAt(lifted, epochs=1, peak=rewarm_control.PEAK),
                    common._StepLearningRate(config, 0.1)])
    assert formula[0][lifted * STEPS] == _bits(0.1)  # the lift's peak
    assert formula[0][(lifted + 1) * STEPS:] == [_bits(0.001)] * STEPS
    assert formula[0] == rewarm[0]
    for a, b in zip(formula[1], rewarm[1]):
        np.testing.assert_array_equal(a, b)
