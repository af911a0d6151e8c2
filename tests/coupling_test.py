"""channel_groups: which slices the analysis couples, from the graph alone."""

import keras
import numpy as np
import pytest

import model_zoo
import tf_prunetrain


def _outs(graph, path):
    for r in graph.records:
        if r.view.path == path:
            return graph.roots(r.outs[0])
    raise AssertionError(f"no record {path}")


def _binding(graph, layer_name, weight, axis):
    for b in graph.bindings.values():
        if b.path.split("/")[-1] == layer_name and b.weight == weight \
                and b.axis == axis:
            return graph.roots(b.ids)
    raise AssertionError(f"no binding {layer_name}.{weight}[{axis}]")


def test_residual_trunk_shares_one_channel_set():
    graph = tf_prunetrain.channel_groups(model_zoo.resnet_basic())
    stem = _outs(graph, "stem_conv")
    # Every block of stage 1 writes the trunk: its last conv is coupled to the
    # stem; the inner conv of a block is not.
    np.testing.assert_array_equal(_outs(graph, "stage1_block1_conv2"), stem)
    np.testing.assert_array_equal(_outs(graph, "stage1_block2_conv2"), stem)
    assert not set(_outs(graph, "stage1_block1_conv1")) & set(stem)
    # The projection shortcut starts a new trunk shared with stage 2 blocks.
    np.testing.assert_array_equal(_outs(graph, "stage2_block1_shortcut_conv"),
                                  _outs(graph, "stage2_block2_conv2"))


def test_inputs_and_outputs_are_frozen():
    model = model_zoo.resnet_basic()
    graph = tf_prunetrain.channel_groups(model)
    assert np.all(_binding(graph, "stem_conv", "kernel", 2) == 0)
    assert np.all(_binding(graph, "classifier", "kernel", 1) == 0)
    assert np.all(_binding(graph, "classifier", "kernel", 0) != 0)


def test_concatenate_lists_inputs_in_order():
    graph = tf_prunetrain.channel_groups(model_zoo.densenet_like())
    concat = next(r for r in graph.records
                  if isinstance(r.view.operation, keras.layers.Concatenate))
    np.testing.assert_array_equal(
        graph.roots(concat.outs[0]),
        np.concatenate([graph.roots(i) for i in concat.ins]))


def test_flatten_maps_each_channel_to_every_position():
    model = model_zoo.plain_cnn()
    graph = tf_prunetrain.channel_groups(model)
    flatten = next(r for r in graph.records
                   if isinstance(r.view.operation, keras.layers.Flatten))
    channels = len(flatten.ins[0])
    rows = graph.roots(flatten.outs[0])
    positions = len(rows) // channels
    assert positions > 1
    np.testing.assert_array_equal(rows, np.tile(graph.roots(flatten.ins[0]),
                                                positions))


def test_depthwise_couples_expand_and_project():
    graph = tf_prunetrain.channel_groups(model_zoo.mobilenetv2_like())
    expands = {tuple(graph.roots(r.outs[0])) for r in graph.records
               if isinstance(r.view.operation, keras.layers.Conv2D)
               and r.view.operation.kernel_size == (1, 1)}
    depthwise = [tuple(graph.roots(b.ids)) for b in graph.bindings.values()
                 if isinstance(b.layer, keras.layers.DepthwiseConv2D)
                 and b.weight == "kernel"]
    assert len(depthwise) == 3
    assert sum(ids in expands for ids in depthwise) >= 2  # the expand convs


def test_squeeze_excite_multiply_couples_gate_and_features():
    graph = tf_prunetrain.channel_groups(model_zoo.squeeze_excite())
    mul = next(r for r in graph.records
               if isinstance(r.view.operation, keras.layers.Multiply))
    features, gate = (graph.roots(i) for i in mul.ins)
    np.testing.assert_array_equal(features, gate)
    assert np.any(features != 0)


def test_groups_list_every_coupled_slice():
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, name="c1")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    y = keras.layers.Conv2D(5, 3, name="c2")(h)
    graph = tf_prunetrain.channel_groups(keras.Model(x, y))
    live = [g for g in graph.groups if not g.frozen]
    assert len(live) == 4
    for index, group in enumerate(sorted(
            live, key=lambda g: min(s.indices for s in g.slices))):
        kinds = {(s.layer, s.weight, s.axis) for s in group.slices}
        assert kinds == {("c1", "kernel", 3), ("c1", "bias", 0),
                         ("bn", "gamma", 0), ("bn", "beta", 0),
                         ("bn", "moving_mean", 0), ("bn", "moving_variance", 0),
                         ("c2", "kernel", 2)}
        assert all(s.indices == (index,) for s in group.slices)


def test_nested_models_are_followed():
    graph = tf_prunetrain.channel_groups(model_zoo.nested_model())
    paths = {b.path for b in graph.bindings.values()}
    assert "inner_block/inner1_conv" in paths or any(
        p.startswith("inner_block/") for p in paths)
    assert any(p.startswith("inner_seq/") for p in paths)
    stem = _outs(graph, "stem_conv")
    inner_first = next(b for b in graph.bindings.values()
                       if b.path.startswith("inner_block/") and b.axis == 2
                       and b.weight == "kernel")
    np.testing.assert_array_equal(graph.roots(inner_first.ids), stem)


def test_grouped_and_channels_first_layers_freeze_with_warning():
    x = keras.Input((8, 8, 4))
    h = keras.layers.Conv2D(4, 1, name="a")(x)
    h = keras.layers.Conv2D(4, 3, groups=2, name="grouped")(h)
    y = keras.layers.Conv2D(2, 1, name="b")(h)
    with pytest.warns(UserWarning, match="'grouped'.*grouped convolution"):
        graph = tf_prunetrain.channel_groups(keras.Model(x, y))
    assert np.all(_outs(graph, "a") == 0)
    assert np.all(_outs(graph, "grouped") == 0)
