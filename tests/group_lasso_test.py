"""add_group_lasso: an equivalent model with the paper's regularizer layout."""

import os

import keras
import numpy as np
import pytest

import model_zoo
import pruning_testing as pt
import tf_prunetrain


def _reg(model, name, key="kernel_regularizer"):
    return getattr(model.get_layer(name), key)


def test_same_names_weights_outputs_and_paper_axes():
    model = model_zoo.randomize_batchnorm(model_zoo.resnet_basic())
    x = model_zoo.random_input(model)
    reg = tf_prunetrain.add_group_lasso(model, strength=1e-3)
    assert [l.name for l in reg.layers] == [l.name for l in model.layers]
    for a, b in zip(model.weights, reg.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert pt.relative_error(model.predict(x, verbose=0),
                             reg.predict(x, verbose=0)) == 0.0
    assert _reg(reg, "stem_conv").axes == (-1,)  # image channels: no groups
    assert _reg(reg, "classifier").axes == (-2,)  # class outputs: no groups
    assert _reg(reg, "stage1_block1_conv1").axes == (-2, -1)
    assert _reg(reg, "stage2_block1_shortcut_conv").axes == (-2, -1)
    assert _reg(reg, "stem_conv").strength == pytest.approx(1e-3)


def test_scales_regularize_batchnorm_gamma_of_prunable_channels_only():
    model = model_zoo.randomize_batchnorm(model_zoo.resnet_basic())
    x = model_zoo.random_input(model)
    plain = tf_prunetrain.add_group_lasso(model, strength=1e-3)
    assert all(l.gamma_regularizer is None for l in plain.layers
               if isinstance(l, keras.layers.BatchNormalization))
    reg = tf_prunetrain.add_group_lasso(model, strength=1e-3, scales=True,
                                        proximal=True)
    assert pt.relative_error(model.predict(x, verbose=0),
                             reg.predict(x, verbose=0)) == 0.0
    batchnorms = [l for l in reg.layers
                  if isinstance(l, keras.layers.BatchNormalization)]
    assert batchnorms
    for layer in batchnorms:
        gamma = layer.gamma_regularizer
        assert isinstance(gamma, tf_prunetrain.GroupLasso), layer.name
        assert (gamma.axes, gamma.proximal) == ((-1,), True)
        assert layer.beta_regularizer is None
    # Element-wise groups: the penalty of a vector is its L1 norm.
    g = np.array([0.5, -2.0, 0.0], "float32")
    assert float(batchnorms[0].gamma_regularizer.penalty(g)) == \
        pytest.approx(2.5, abs=1e-3)
    # The stem has frozen image-channel inputs, but its BatchNorm's channels
    # are prunable; an input-channel BatchNorm of a frozen tensor is not.
    x_in = keras.Input((8, 8, 3))
    h = keras.layers.BatchNormalization(name="input_bn")(x_in)
    h = keras.layers.Conv2D(4, 3, name="conv")(h)
    h = keras.layers.BatchNormalization(name="conv_bn")(h)
    y = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h))
    small = tf_prunetrain.add_group_lasso(keras.Model(x_in, y), scales=True)
    assert small.get_layer("input_bn").gamma_regularizer is None
    assert small.get_layer("conv_bn").gamma_regularizer is not None


def test_depthwise_and_separable_kernels_get_channel_groups():
    reg = tf_prunetrain.add_group_lasso(model_zoo.mobilenetv2_like())
    dws = [l for l in reg.layers if isinstance(l, keras.layers.DepthwiseConv2D)]
    assert dws and all(l.depthwise_regularizer.axes == (-2,) for l in dws)
    sep = tf_prunetrain.add_group_lasso(model_zoo.separable_net())
    seps = [l for l in sep.layers
            if isinstance(l, keras.layers.SeparableConv2D)]
    assert seps
    for layer in seps:
        assert layer.depthwise_regularizer.axes == (-2,)
        assert layer.pointwise_regularizer.axes == (-2, -1)


def test_penalty_matches_numpy():
    model = tf_prunetrain.add_group_lasso(model_zoo.plain_cnn(), strength=0.5)
    expected = 0.0
    for layer in model.layers:
        reg = getattr(layer, "kernel_regularizer", None)
        if reg is None:
            continue
        w = layer.kernel.numpy().astype(np.float64)
        for axis in reg.axes:
            other = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
            expected += np.sqrt((w * w).sum(axis=other) + 1e-8).sum()
    got = float(sum(float(loss) for loss in model.losses))
    assert got == pytest.approx(0.5 * expected, rel=1e-5)


def test_existing_regularizer_needs_replace_existing():
    base = tf_prunetrain.models.resnet_cifar(
        depth=8, input_shape=(16, 16, 3), widths=(4, 8, 8), weight_decay=1e-4)
    with pytest.raises(ValueError, match="stem_conv.*replace_existing"):
        tf_prunetrain.add_group_lasso(base)
    reg = tf_prunetrain.add_group_lasso(base, replace_existing=True)
    assert isinstance(_reg(reg, "stem_conv"), tf_prunetrain.GroupLasso)
    # Applying it twice is fine: GroupLasso replaces GroupLasso.
    again = tf_prunetrain.add_group_lasso(reg, strength=2.0)
    assert _reg(again, "stem_conv").strength == 2.0


def test_regularized_model_round_trips_through_keras_file(tmp_path):
    model = tf_prunetrain.add_group_lasso(
        model_zoo.randomize_batchnorm(model_zoo.squeeze_excite()), 3e-4)
    tf_prunetrain.regularizers.set_strength(model, 5e-4, calibrated=True)
    x = model_zoo.random_input(model)
    path = os.path.join(tmp_path, "reg.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert pt.relative_error(model.predict(x, verbose=0),
                             loaded.predict(x, verbose=0)) == 0.0
    checked = 0
    for layer in model.layers:
        reg = getattr(layer, "kernel_regularizer", None)
        if isinstance(reg, tf_prunetrain.GroupLasso):
            other = loaded.get_layer(layer.name).kernel_regularizer
            assert other.calibrated and other.strength == 5e-4
            assert other.get_config() == reg.get_config()  # λ, calibrated
            checked += 1
    assert checked >= 3


def test_training_with_group_lasso_shrinks_channel_groups():
    """Same data, seed and optimizer: the lasso run ends with smaller
    channel-group norms than the plain run."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 10, 64)
    norms = []
    for strength in (0.0, 0.05):
        model = tf_prunetrain.add_group_lasso(model_zoo.plain_cnn(), strength)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        model.fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=False)
        norms.append(tf_prunetrain.importance.GroupNorm().score(
            tf_prunetrain.channel_groups(model)).sum())
    assert norms[1] < 0.8 * norms[0]
