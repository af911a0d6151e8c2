"""register_layer: custom layer kinds, frozen until described, then pruned."""

import os

import keras
import numpy as np
import pytest

import model_zoo
import pruning_testing as pt
import tf_prunetrain
from tf_prunetrain import handlers

TOL = 1e-5


@pytest.fixture(autouse=True)
def _table_restored():
    """Every test leaves the process-wide handler table as it found it."""
    before = handlers.registered_kinds()
    yield
    for cls in set(handlers.registered_kinds()) - set(before):
        handlers.unregister_layer(cls)
    assert handlers.registered_kinds() == before


def _custom_layers():
    """Fresh classes per test: a padding layer and a convolution, written
    as a user would."""

    class EdgePad(keras.layers.Layer):
        """Reflects `pad` pixels at every border: channels pass through."""

        def __init__(self, pad=1, **kwargs):
            super().__init__(**kwargs)
            self.pad = pad

        def call(self, x):
            p = self.pad
            return keras.ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]],
                                 mode="reflect")

        def get_config(self):
            return {**super().get_config(), "pad": self.pad}

    class TinyConv(keras.layers.Layer):
        """A 'valid' convolution with a bias, from keras.ops."""

        def __init__(self, filters, size=3, kernel_regularizer=None,
                     **kwargs):
            super().__init__(**kwargs)
            self.filters, self.size = filters, size
            self.kernel_regularizer = keras.regularizers.get(
                kernel_regularizer)

        def build(self, input_shape):
            self.kernel = self.add_weight(
                name="kernel", regularizer=self.kernel_regularizer,
                shape=(self.size, self.size, input_shape[-1], self.filters))
            self.bias = self.add_weight(name="bias", shape=(self.filters,),
                                        initializer="random_normal")

        def call(self, x):
            return keras.ops.conv(x, self.kernel) + self.bias

        def get_config(self):
            return {**super().get_config(), "filters": self.filters,
                    "size": self.size, "kernel_regularizer":
                    keras.regularizers.serialize(self.kernel_regularizer)}

    return EdgePad, TinyConv


def _model(EdgePad, TinyConv):
    x = keras.Input((10, 10, 3))
    h = keras.layers.Conv2D(8, 3, name="c1")(x)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = EdgePad(name="pad")(keras.layers.ReLU()(h))
    h = TinyConv(6, name="tiny")(h)
    h = keras.layers.Conv2D(5, 1, name="c3")(keras.layers.ReLU()(h))
    y = keras.layers.Dense(4, name="out")(
        keras.layers.GlobalAveragePooling2D()(h))
    model = model_zoo.randomize_batchnorm(keras.Model(x, y), seed=3)
    return model, model_zoo.random_input(model, batch_size=4, seed=1)


def _register(EdgePad, TinyConv):
    tf_prunetrain.register_layer(EdgePad, handlers.PASS_THROUGH)
    tf_prunetrain.register_layer(TinyConv, handlers.Kernel(-2, -1, "filters"))


def _ids(graph, name):
    return graph.layer_outputs()[name]


def test_unregistered_custom_layers_freeze_their_channels():
    EdgePad, TinyConv = _custom_layers()
    model, _ = _model(EdgePad, TinyConv)
    with pytest.warns(UserWarning, match=r"'pad' \(EdgePad\).*register_layer"):
        graph = tf_prunetrain.channel_groups(model)
    assert graph.is_frozen(_ids(graph, "c1")).all()
    assert graph.is_frozen(_ids(graph, "tiny")).all()
    with pytest.raises(ValueError, match="channel 0 of 'c1' is frozen"):
        tf_prunetrain.coupling.zero_channels(model, {"c1": [0]})


def test_registered_custom_layers_prune_and_keep_the_function(tmp_path):
    EdgePad, TinyConv = _custom_layers()
    _register(EdgePad, TinyConv)
    model, x = _model(EdgePad, TinyConv)
    graph = tf_prunetrain.channel_groups(model)
    assert not graph.is_frozen(_ids(graph, "c1")).any()
    assert not graph.is_frozen(_ids(graph, "tiny")).any()
    assert tf_prunetrain.coupling.zero_channels(
        model, {"c1": [0, 3], "tiny": [1, 2, 5]}) == 5
    before = model.predict(x, verbose=0)
    small = tf_prunetrain.prune_channels(model)
    assert small.get_layer("c1").filters == 6
    assert small.get_layer("tiny").filters == 3
    assert small.get_layer("tiny").kernel.shape == (3, 3, 6, 3)
    after = small.predict(x, verbose=0)
    assert pt.relative_error(before, after) < TOL
    # FLOPs count the custom convolution through its handler.
    assert (tf_prunetrain.cost.forward_flops(small)
            < tf_prunetrain.cost.forward_flops(model))

    path = os.path.join(tmp_path, "small.keras")
    small.save(path)
    loaded = keras.saving.load_model(
        path, custom_objects={"EdgePad": EdgePad, "TinyConv": TinyConv})
    assert loaded.get_layer("tiny").filters == 3
    np.testing.assert_allclose(loaded.predict(x, verbose=0), after,
                               rtol=0, atol=1e-6)


def test_registered_custom_conv_gets_the_lasso_and_shrinks_in_place():
    EdgePad, TinyConv = _custom_layers()
    _register(EdgePad, TinyConv)
    model, x = _model(EdgePad, TinyConv)
    model = tf_prunetrain.add_group_lasso(model, strength=1e-3)
    regularizer = model.get_layer("tiny").kernel_regularizer
    assert isinstance(regularizer, tf_prunetrain.GroupLasso)
    assert regularizer.axes == (-2, -1)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    tiny = model.get_layer("tiny")
    tf_prunetrain.coupling.zero_channels(model, {"tiny": [0, 4]})
    before = model.predict(x, verbose=0)
    graph = tf_prunetrain.channel_groups(model)
    tf_prunetrain.inplace.reconfigure_in_place(
        model, tf_prunetrain.planning.plan_pruning(graph, remove_blocks=False))
    assert model.get_layer("tiny") is tiny and tiny.filters == 4
    assert tiny.kernel.shape == (3, 3, 8, 4)
    assert pt.relative_error(before, model.predict(x, verbose=0)) < TOL
    history = model.fit(x, np.zeros((4, 4)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_register_layer_refuses_bad_input_and_keeps_the_table():
    EdgePad, _ = _custom_layers()
    table = handlers.registered_kinds()
    with pytest.raises(TypeError, match="cls must be a Keras layer class"):
        tf_prunetrain.register_layer("EdgePad", handlers.PASS_THROUGH)
    with pytest.raises(TypeError, match="handler for EdgePad must be a"):
        tf_prunetrain.register_layer(EdgePad, "pass")
    with pytest.raises(ValueError, match="Conv2D already has a handler.*"
                                         "replace=True"):
        tf_prunetrain.register_layer(keras.layers.Conv2D, handlers.FREEZE)
    assert handlers.registered_kinds() == table
    conv = handlers.handler_for(keras.layers.Conv2D(2, 1))
    tf_prunetrain.register_layer(keras.layers.Conv2D, conv, replace=True)
    assert handlers.registered_kinds() == table
    tf_prunetrain.register_layer(EdgePad, handlers.PASS_THROUGH)
    handlers.unregister_layer(EdgePad)
    assert handlers.handler_for(EdgePad()) is handlers.FREEZE_UNKNOWN
    with pytest.raises(KeyError, match="no handler of its own"):
        handlers.unregister_layer(EdgePad)


def test_one_lookup_rule_subclasses_inherit_channels_not_tf_keras():
    class MyConv(keras.layers.Conv2D):
        pass

    base = handlers.handler_for(keras.layers.Conv2D(2, 1))
    derived = handlers.handler_for(MyConv(2, 1))
    assert isinstance(derived, handlers.Kernel)
    assert derived.count_key == base.count_key == "filters"
    assert base.tf_keras is not None and derived.tf_keras is None
    assert handlers.handler_for(keras.layers.Layer()) is handlers.FREEZE_UNKNOWN
