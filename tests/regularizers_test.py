"""Tests for `tf_prunetrain.regularizers.GroupLasso`."""

from __future__ import annotations

import copy
import os
import pickle

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_prunetrain.regularizers import GroupLasso


def reference_penalty(w: np.ndarray, axes, eps: float = 1e-8) -> float:
    """Plain NumPy group lasso: one group per index along each axis."""
    w = np.asarray(w, dtype=np.float64)
    total = 0.0
    for axis in axes:
        groups = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        total += np.sqrt((groups**2).sum(axis=1) + eps).sum()
    return float(total)


def reference_gradient(w: np.ndarray, axes, eps: float = 1e-8) -> np.ndarray:
    """d/dw of `reference_penalty`: w / ||group|| summed over group axes."""
    w = np.asarray(w, dtype=np.float64)
    grad = np.zeros_like(w)
    for axis in axes:
        axis = axis % w.ndim
        others = tuple(i for i in range(w.ndim) if i != axis)
        norms = np.sqrt((w**2).sum(axis=others, keepdims=True) + eps)
        grad += w / norms
    return grad


CASES = [
    # (name, shape, axes)
    ("conv2d_in_out", (3, 3, 4, 5), (-2, -1)),
    ("conv2d_out", (3, 3, 4, 5), (-1,)),
    ("conv2d_in", (3, 3, 4, 5), (-2,)),
    ("conv2d_positive_axes", (3, 3, 4, 5), (3, 2)),
    ("conv2d_spatial", (3, 3, 4, 5), (0,)),
    ("conv1d_in_out", (5, 4, 6), (-2, -1)),
    ("conv3d_in_out", (2, 3, 3, 4, 5), (-2, -1)),
    ("conv3d_three_axes", (2, 3, 3, 4, 5), (0, -2, -1)),
    ("dense_in", (7, 6), (-2,)),
    ("dense_in_out", (7, 6), (-2, -1)),
    ("dense_out", (7, 6), (1,)),
    ("depthwise_channels", (3, 3, 4, 2), (-2,)),
    ("depthwise_mult1", (3, 3, 8, 1), (-2,)),
    ("bias", (9,), (-1,)),
]


@pytest.mark.parametrize("name,shape,axes", CASES, ids=[c[0] for c in CASES])
def test_matches_numpy(name, shape, axes):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    w = rng.standard_normal(shape).astype("float32")
    reg = GroupLasso(strength=0.37, axes=axes)
    expected = reference_penalty(w, axes)
    np.testing.assert_allclose(float(reg.penalty(w)), expected, rtol=1e-5)
    np.testing.assert_allclose(float(reg(w)), 0.37 * expected, rtol=1e-5)
    # Same result on a variable and on a tensor.
    np.testing.assert_allclose(
        float(reg(tf.Variable(w))), 0.37 * expected, rtol=1e-5
    )
    np.testing.assert_allclose(
        float(reg(keras.Variable(w))), 0.37 * expected, rtol=1e-5
    )


def test_layer_losses_match_numpy():
    layers = [
        (keras.layers.Conv1D(6, 3), (2, 8, 4), (-2, -1)),
        (keras.layers.Conv2D(5, 3), (2, 8, 8, 3), (-1,)),
        (keras.layers.Conv3D(4, 2), (1, 4, 4, 4, 3), (-2, -1)),
        (keras.layers.Dense(3), (2, 7), (-2,)),
    ]
    for layer, input_shape, axes in layers:
        layer.kernel_regularizer = None
        config = layer.get_config()
        config["kernel_regularizer"] = keras.regularizers.serialize(
            GroupLasso(0.5, axes)
        )
        layer = layer.__class__.from_config(config)
        layer.build(input_shape)
        (loss,) = layer.losses
        expected = 0.5 * reference_penalty(layer.kernel.numpy(), axes)
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    depthwise = keras.layers.DepthwiseConv2D(
        3, depth_multiplier=2, depthwise_regularizer=GroupLasso(0.5, (-2,))
    )
    depthwise.build((1, 6, 6, 4))
    expected = 0.5 * reference_penalty(depthwise.kernel.numpy(), (-2,))
    np.testing.assert_allclose(float(depthwise.losses[0]), expected, rtol=1e-5)


def test_epsilon_enters_every_group():
    reg = GroupLasso(strength=1.0, axes=(-2, -1), epsilon=1e-4)
    w = np.zeros((3, 3, 2, 5), "float32")
    # 2 + 5 groups, each sqrt(eps) = 0.01.
    np.testing.assert_allclose(float(reg(w)), 7 * 0.01, rtol=1e-5)


def test_dtypes():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 3, 4, 5))
    expected = reference_penalty(w, (-2, -1))
    reg = GroupLasso(2.0)
    out64 = reg(w.astype("float64"))
    assert keras.backend.standardize_dtype(out64.dtype) == "float64"
    np.testing.assert_allclose(float(out64), 2 * expected, rtol=1e-10)
    for half in ("float16", "bfloat16"):
        out = reg(tf.constant(w, dtype=half))
        # Half-precision weights are reduced in float32 and returned float32.
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        np.testing.assert_allclose(float(out), 2 * expected, rtol=2e-2)
    # Large float16 weights: the sum of squares would overflow in float16.
    big = np.full((3, 3, 64, 64), 200.0, "float16")
    out = reg.penalty(big)
    assert np.isfinite(float(out))
    np.testing.assert_allclose(
        float(out), reference_penalty(big.astype("float64"), (-2, -1)), rtol=1e-5
    )


@pytest.mark.parametrize("axes", [(-2, -1), (-1,), (-2,), (0, 1, 2, 3)])
def test_gradient_finite_on_zero_groups(axes):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 3, 4, 5)).astype("float32")
    w[..., 2] = 0.0  # one dead output channel
    w[:, :, 1, :] = 0.0  # one dead input channel
    reg = GroupLasso(strength=0.5, axes=axes)
    for value in (w, np.zeros_like(w)):
        var = tf.Variable(value)
        with tf.GradientTape() as tape:
            loss = reg(var)
        grad = tape.gradient(loss, var).numpy()
        assert np.all(np.isfinite(grad)), axes
        assert np.all(grad[..., 2] == 0.0)
        assert np.all(grad[:, :, 1, :] == 0.0)
        np.testing.assert_allclose(
            grad, 0.5 * reference_gradient(value, axes), rtol=1e-4, atol=1e-6
        )


def test_strength_setter_and_variable():
    w = np.ones((2, 3), "float32")  # column norms sqrt(2), row norms sqrt(3)
    reg = GroupLasso(strength=0.0, axes=(-1,))
    assert float(reg(w)) == 0.0
    variable = reg.strength_variable
    reg.strength = 2.5
    assert reg.strength == 2.5
    assert reg.strength_variable is variable
    assert not variable.trainable
    np.testing.assert_allclose(float(reg(w)), 2.5 * 3 * np.sqrt(2), rtol=1e-6)
    reg.strength = np.float32(0.1)
    assert reg.strength == 0.1  # reported without float32 noise
    with pytest.raises(ValueError, match="strength"):
        reg.strength = -1.0
    with pytest.raises(ValueError, match="strength"):
        reg.strength = float("nan")
    with pytest.raises(TypeError, match="strength"):
        reg.strength = "big"
    assert reg.strength == 0.1  # failed assignments change nothing


def test_strength_change_in_traced_function_without_retrace():
    reg = GroupLasso(strength=1.0, axes=(-1,))
    var = tf.Variable(np.ones((2, 3), "float32"))

    @tf.function
    def f():
        return reg(var)

    np.testing.assert_allclose(float(f()), 3 * np.sqrt(2), rtol=1e-6)
    reg.strength = 3.0
    np.testing.assert_allclose(float(f()), 9 * np.sqrt(2), rtol=1e-6)
    assert f.experimental_get_tracing_count() == 1


def test_regularizer_not_tracked_as_layer_weight():
    layer = keras.layers.Dense(3, kernel_regularizer=GroupLasso(1.0, (-2,)))
    layer.build((None, 4))
    assert len(layer.weights) == 2
    model = keras.Sequential([keras.Input((4,)), layer])
    assert len(model.weights) == 2


class _StrengthSchedule(keras.callbacks.Callback):
    def __init__(self, reg, schedule, counter):
        super().__init__()
        self.reg, self.schedule, self.counter = reg, schedule, counter
        self.calls_at_epoch_end = []

    def on_epoch_end(self, epoch, logs=None):
        self.calls_at_epoch_end.append(self.counter["n"])
        if epoch + 1 < len(self.schedule):
            self.reg.strength = self.schedule[epoch + 1]


def test_fit_strength_changes_between_epochs_and_fit_calls(monkeypatch):
    counter = {"n": 0}
    original = GroupLasso.penalty

    def counting_penalty(self, x):
        counter["n"] += 1  # runs only while tracing inside `fit`
        return original(self, x)

    monkeypatch.setattr(GroupLasso, "penalty", counting_penalty)
    keras.utils.set_random_seed(0)
    reg = GroupLasso(strength=0.0, axes=(-2, -1))
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, use_bias=False, kernel_regularizer=reg),
        ]
    )
    # lr = 0: weights (hence data loss and penalty) stay constant, so each
    # epoch's loss is data_loss + strength * penalty exactly.
    model.compile(keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    x = np.random.default_rng(0).standard_normal((32, 4)).astype("float32")
    y = np.zeros((32, 3), "float32")
    data_loss = float(np.mean((x @ model.layers[0].kernel.numpy()) ** 2))
    penalty = reference_penalty(model.layers[0].kernel.numpy(), (-2, -1))

    schedule = [0.0, 0.5, 2.0]
    callback = _StrengthSchedule(reg, schedule, counter)
    history = model.fit(
        x, y, batch_size=8, epochs=3, verbose=0, callbacks=[callback],
        shuffle=False,
    )
    expected = [data_loss + s * penalty for s in schedule]
    np.testing.assert_allclose(history.history["loss"], expected, rtol=1e-4)
    traced = callback.calls_at_epoch_end[0]
    assert traced >= 1
    assert callback.calls_at_epoch_end == [traced] * 3  # no retrace

    # A later `fit` call reuses the train function and sees the new value.
    reg.strength = 0.25
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_allclose(
        history.history["loss"], [data_loss + 0.25 * penalty], rtol=1e-4
    )
    assert counter["n"] == traced


def test_fit_under_float16_policy():
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("float16")
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(3, kernel_regularizer=GroupLasso(1e-2)),
            ]
        )
        model.compile(keras.optimizers.SGD(1e-3), loss="mse")
        history = model.fit(
            np.ones((8, 4)), np.ones((8, 3)), epochs=1, verbose=0
        )
        assert np.isfinite(history.history["loss"][0])
    finally:
        keras.config.set_dtype_policy(previous)


def test_config_round_trip():
    reg = GroupLasso(strength=0.3, axes=(-2,), epsilon=1e-10)
    reg.strength = 1e-4
    config = reg.get_config()
    assert config == {"strength": 1e-4, "axes": [-2], "epsilon": 1e-10,
                      "proximal": False, "calibrated": False}
    assert type(config["strength"]) is float
    clone = GroupLasso.from_config(config)
    assert clone.get_config() == config
    assert clone.axes == (-2,)
    assert clone.strength_variable is not reg.strength_variable

    serialized = keras.regularizers.serialize(reg)
    assert serialized["registered_name"] == "tf_prunetrain>GroupLasso"
    restored = keras.regularizers.deserialize(serialized)
    assert isinstance(restored, GroupLasso)
    assert restored.get_config() == config
    assert isinstance(keras.regularizers.get(serialized), GroupLasso)


def test_calibrated_mark_is_kept_by_config_and_copies():
    # Set after construction (as `regularizers.set_strength` does): saved.
    reg = GroupLasso(strength=0.3, axes=(-1,), proximal=True)
    reg.calibrated = True
    config = reg.get_config()
    assert config["calibrated"] is True and config["proximal"] is True
    assert GroupLasso.from_config(config).calibrated is True
    restored = keras.regularizers.deserialize(keras.regularizers.serialize(reg))
    assert restored.calibrated is True
    for other in (copy.copy(reg), copy.deepcopy(reg),
                  pickle.loads(pickle.dumps(reg))):
        assert other.calibrated is True
        assert other.get_config() == config
    assert GroupLasso(0.3, axes=(-1,)).calibrated is False  # the default


def test_copies_are_independent():
    reg = GroupLasso(strength=0.3, axes=(-1,))
    for other in (
        copy.copy(reg),
        copy.deepcopy(reg),
        pickle.loads(pickle.dumps(reg)),
    ):
        assert other.get_config() == reg.get_config()
        other.strength = 5.0
        assert reg.strength == 0.3


def test_clone_model_gets_fresh_regularizers():
    reg = GroupLasso(strength=0.2, axes=(-2,))
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, kernel_regularizer=reg)]
    )
    clone = keras.models.clone_model(model)
    cloned_reg = clone.layers[0].kernel_regularizer
    assert isinstance(cloned_reg, GroupLasso)
    assert cloned_reg is not reg
    assert cloned_reg.get_config() == reg.get_config()
    cloned_reg.strength = 1.0
    assert reg.strength == 0.2


def _small_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(
        4, 3, padding="same", kernel_regularizer=GroupLasso(1e-3, (-1,)),
        name="stem",
    )(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.DepthwiseConv2D(
        3, padding="same", depthwise_regularizer=GroupLasso(2e-3, (-2,)),
        name="dw",
    )(x)
    x = keras.layers.Conv2D(
        6, 1, kernel_regularizer=GroupLasso(3e-3, (-2, -1), 1e-10), name="pw"
    )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(
        2, kernel_regularizer=GroupLasso(4e-3, (-2,)), name="fc"
    )(x)
    return keras.Model(inputs, outputs)


def _regularizers(model):
    return {
        "stem": model.get_layer("stem").kernel_regularizer,
        "dw": model.get_layer("dw").depthwise_regularizer,
        "pw": model.get_layer("pw").kernel_regularizer,
        "fc": model.get_layer("fc").kernel_regularizer,
    }


def test_keras_file_round_trip(tmp_path):
    keras.utils.set_random_seed(3)
    model = _small_model()
    # A value set after construction is what gets saved.
    _regularizers(model)["pw"].strength = 0.05
    _regularizers(model)["fc"].calibrated = True
    x = np.random.default_rng(3).standard_normal((4, 8, 8, 3)).astype(
        "float32"
    )
    expected = model.predict(x, verbose=0)
    expected_losses = [float(v) for v in model.losses]
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)

    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6
    )
    for name, reg in _regularizers(loaded).items():
        original = _regularizers(model)[name]
        assert isinstance(reg, GroupLasso), name
        assert reg.get_config() == original.get_config(), name
        assert reg.strength_variable is not original.strength_variable
    assert _regularizers(loaded)["pw"].strength == 0.05
    assert _regularizers(loaded)["pw"].epsilon == 1e-10
    assert _regularizers(loaded)["dw"].axes == (-2,)
    assert _regularizers(loaded)["fc"].calibrated is True
    assert _regularizers(loaded)["pw"].calibrated is False
    np.testing.assert_allclose(
        [float(v) for v in loaded.losses], expected_losses, rtol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"strength": -1e-3}, ValueError, "strength"),
        ({"strength": float("inf")}, ValueError, "strength"),
        ({"strength": "x"}, TypeError, "strength"),
        ({"axes": ()}, ValueError, "axes"),
        ({"axes": []}, ValueError, "axes"),
        ({"axes": (-1, -1)}, ValueError, "axes"),
        ({"axes": (1.5,)}, TypeError, "axes"),
        ({"axes": (True,)}, TypeError, "axes"),
        ({"axes": None}, TypeError, "axes"),
        ({"epsilon": 0.0}, ValueError, "epsilon"),
        ({"epsilon": -1e-8}, ValueError, "epsilon"),
        ({"epsilon": float("nan")}, ValueError, "epsilon"),
        ({"proximal": 1}, TypeError, "proximal"),
        ({"calibrated": "yes"}, TypeError, "calibrated"),
        ({"calibrated": None}, TypeError, "calibrated"),
    ],
)
def test_argument_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        GroupLasso(**kwargs)


def test_single_int_axis_accepted():
    assert GroupLasso(axes=-1).axes == (-1,)


def test_call_time_axis_errors_name_shape():
    w = np.ones((3, 3, 4, 5), "float32")
    with pytest.raises(ValueError, match=r"\(3, 3, 4, 5\)"):
        GroupLasso(axes=(-5,))(w)
    with pytest.raises(ValueError, match=r"\(3, 3, 4, 5\)"):
        GroupLasso(axes=(4,)).penalty(w)
    # Distinct as given, but the same axis for a rank-4 weight.
    with pytest.raises(ValueError, match=r"same axis.*\(3, 3, 4, 5\)"):
        GroupLasso(axes=(-1, 3))(w)
    with pytest.raises(ValueError, match=r"\(7,\)"):
        GroupLasso(axes=(-2, -1))(np.ones((7,), "float32"))
