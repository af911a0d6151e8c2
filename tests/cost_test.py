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
    return tf_prunetrain.cost.forward_flops(keras.Model(x, y))


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
    ours = tf_prunetrain.cost.forward_flops(model)
    reference = pt.forward_flops(model)
    assert ours == pytest.approx(reference, rel=0.01)
    assert ours == pytest.approx(7.73e9, rel=0.01)  # 3.86 GMACs


def test_dynamic_spatial_dims_give_a_clear_error():
    x = keras.Input((None, None, 3))
    model = keras.Model(x, L.Conv2D(4, 3)(x))
    with pytest.raises(ValueError, match="static spatial"):
        tf_prunetrain.cost.forward_flops(model)


def test_training_cost_of_a_small_cnn_by_hand():
    x = keras.Input((9, 9, 4))
    y = L.Conv2D(6, 3, strides=2, name="conv")(x)        # 4x4x6 outputs
    y = L.BatchNormalization(name="bn")(y)
    y = L.ReLU(name="relu")(y)
    y = L.Dense(3, name="fc")(L.Flatten(name="flat")(y))  # 96 -> 3
    cost = tf_prunetrain.training_cost(keras.Model(x, y), batch_size=2)
    rows = {row.path: row for row in cost.layers}
    conv_fwd = 2 * 3 * 3 * 4 * 6 * 16 + 96
    # The first conv needs no input gradient: forward + weight gradient.
    assert rows["conv"].train_flops == 2 * conv_fwd
    fc_products = 2 * 96 * 3
    assert rows["fc"].train_flops == (fc_products + 3) * 2 + fc_products
    assert rows["bn"].forward_flops == rows["relu"].train_flops == 0
    assert (rows["conv"].params, rows["bn"].params, rows["fc"].params) == \
        (3 * 3 * 4 * 6 + 6, 4 * 6, 96 * 3 + 3)
    assert rows["bn"].gradient_bytes == 2 * 6 * 4  # gamma, beta; float32
    # Bandwidth-bound layers: 8 accesses per output activation.
    assert rows["bn"].memory_traffic_bytes == 8 * 96 * 4
    assert rows["conv"].memory_traffic_bytes == 0
    assert rows["flat"].activation_bytes == 0  # a view
    assert rows["conv"].channels == 6 and rows["fc"].channels == 3
    assert cost.train_flops == 2 * (2 * conv_fwd + 3 * fc_products + 6)
    assert cost.inference_flops == conv_fwd + fc_products + 3
    assert cost.params == 222 + 24 + 291
    assert cost.gradient_bytes == (222 + 12 + 291) * 4
    assert cost.activation_bytes == (9 * 9 * 4 + 3 * 96 + 3) * 4
    assert cost.memory_traffic_bytes == 2 * 2 * 8 * 96 * 4
    assert cost.channels() == {"conv": 6, "fc": 3}


def test_training_cost_of_depthwise_separable_frozen_and_shared_layers():
    x = keras.Input((8, 8, 3))
    y = L.Conv2D(5, 1, use_bias=False, name="stem")(x)
    y = L.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False,
                          name="dw")(y)                 # 6x6x10
    y = L.SeparableConv2D(4, 3, padding="same", name="sep")(y)
    frozen = L.Conv2D(4, 1, use_bias=False, name="frozen", trainable=False)
    shared = L.Conv2D(4, 1, use_bias=False, name="shared")
    y = shared(shared(frozen(y)))
    cost = tf_prunetrain.training_cost(keras.Model(x, y))
    rows = {row.path: row for row in cost.layers}
    dw = 2 * 3 * 3 * 5 * 2 * 36
    assert rows["dw"].train_flops == 3 * dw  # input gradient needed
    sep = 2 * (3 * 3 * 10 + 10 * 4) * 36
    assert rows["sep"].forward_flops == sep + 4 * 36
    assert rows["sep"].train_flops == 3 * sep + 2 * 4 * 36
    pointwise = 2 * 4 * 4 * 36
    # Frozen: no weight gradient; still an input gradient for "sep".
    assert rows["frozen"].train_flops == 2 * pointwise
    assert rows["frozen"].gradient_bytes == 0
    # Shared: two calls of FLOPs, one set of weights.
    assert rows["shared"].forward_flops == 2 * pointwise
    assert rows["shared"].params == 16
    assert cost.params == 15 + 90 + (90 + 40 + 4) + 16 + 16


def test_mixed_precision_activations_are_half_width_gradients_full():
    x = keras.Input((4, 4, 3))
    y = L.Conv2D(2, 1, dtype="mixed_float16", name="c")(x)
    cost = tf_prunetrain.training_cost(keras.Model(x, y))
    assert cost.layers[0].activation_bytes == 4 * 4 * 2 * 2
    assert cost.gradient_bytes == (3 * 2 + 2) * 4


def test_nested_models_and_resnet50_training_flops():
    inner_in = keras.Input((6, 6, 3))
    inner = keras.Model(inner_in, L.Conv2D(4, 3, name="c")(inner_in),
                        name="inner")
    x = keras.Input((6, 6, 3))
    cost = tf_prunetrain.training_cost(keras.Model(x, inner(x)))
    assert [row.path for row in cost.layers] == ["inner/c"]
    model = keras.applications.ResNet50(weights=None)
    cost = tf_prunetrain.training_cost(model, batch_size=64)
    # ≈ 3 × forward (the paper's accounting), less the first conv's input
    # gradient.
    assert 2.9 < cost.train_flops / (64 * cost.inference_flops) < 3.0
    assert cost.params == model.count_params()
    summary = cost.summary(cost)
    assert "conv1_conv" in summary and "Train FLOPs/step" in summary


def test_training_cost_validates_its_arguments():
    x = keras.Input((4, 4, 3))
    model = keras.Model(x, L.Conv2D(2, 1)(x))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="batch_size"):
            tf_prunetrain.training_cost(model, batch_size=bad)
    x = keras.Input((None, None, 3))
    with pytest.raises(ValueError, match="layer 'c'.*static spatial"):
        tf_prunetrain.training_cost(keras.Model(x, L.Conv2D(2, 1, name="c")(x)))
