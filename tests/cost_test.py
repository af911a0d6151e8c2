"""forward_flops: hand-computed layer counts and an independent model count."""

import keras
import pytest

import pruning_testing as pt
import tf_prunetrain

L = keras.layers


def _flops(shape, *layers):
    x = keras.Input(shape)
    y = x
    for layer in layers:
        y = layer(y)
    return tf_prunetrain.forward_flops(keras.Model(x, y))


def test_conv2d_strides_padding_bias_and_groups():
    # 3x3 conv, 4 -> 6 channels, stride 2, 'valid' on 9x9: 4x4 outputs.
    assert _flops((9, 9, 4), L.Conv2D(6, 3, strides=2)) == \
        2 * 3 * 3 * 4 * 6 * 16 + 6 * 16
    # 'same' on 9x9 with stride 2: 5x5 outputs; no bias.
    assert _flops((9, 9, 4), L.Conv2D(6, 3, strides=2, padding="same",
                                      use_bias=False)) == 2 * 3 * 3 * 4 * 6 * 25
    # groups=2: each output sees 2 of the 4 inputs.
    assert _flops((8, 8, 4), L.Conv2D(6, 3, padding="same", groups=2,
                                      use_bias=False)) == 2 * 3 * 3 * 2 * 6 * 64


def test_depthwise_separable_dense_transpose_and_1d():
    assert _flops((8, 8, 5), L.DepthwiseConv2D(3, depth_multiplier=2,
                                               use_bias=False)) == \
        2 * 3 * 3 * 5 * 2 * 36
    assert _flops((8, 8, 5), L.SeparableConv2D(7, 3, padding="same",
                                               use_bias=False)) == \
        2 * 3 * 3 * 5 * 64 + 2 * 5 * 7 * 64
    assert _flops((10,), L.Dense(3)) == 2 * 10 * 3 + 3
    assert _flops((6, 10), L.Dense(3, use_bias=False)) == 2 * 10 * 3 * 6
    # Transposed conv: the kernel is applied at every input position.
    assert _flops((4, 4, 3), L.Conv2DTranspose(5, 3, strides=2,
                                               use_bias=False)) == \
        2 * 3 * 3 * 3 * 5 * 16
    assert _flops((16, 4), L.Conv1D(8, 5, use_bias=False)) == \
        2 * 5 * 4 * 8 * 12
    # BatchNormalization, pooling, activations: zero (the paper's count).
    assert _flops((8, 8, 3), L.BatchNormalization(), L.ReLU(),
                  L.MaxPooling2D()) == 0


def test_resnet50_matches_tensorflows_own_count_within_one_percent():
    model = keras.applications.ResNet50(weights=None)  # 224x224
    ours, reference = tf_prunetrain.forward_flops(model), pt.forward_flops(model)
    assert ours == pytest.approx(reference, rel=0.01)
    assert ours == pytest.approx(7.73e9, rel=0.01)  # 3.86 GMACs


def test_dynamic_spatial_dims_give_a_clear_error():
    x = keras.Input((None, None, 3))
    model = keras.Model(x, L.Conv2D(4, 3)(x))
    with pytest.raises(ValueError, match="static spatial"):
        tf_prunetrain.forward_flops(model)
