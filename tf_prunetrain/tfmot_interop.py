"""Handing a pruned Keras 3 model to TensorFlow Model Optimization (TFMOT).

TFMOT 0.8.1 (quantization-aware training, 2:4 sparsity) accepts only tf_keras
(Keras 2) models. `to_tf_keras` rewrites a functional or Sequential Keras 3
model as the same tf_keras model — same layers, names and weights — and
checks that both compute the same outputs. Which layer kinds tf_keras can
express, and how their configs differ, is in the handler table
(`handlers.TfKeras`).

tf_keras and TFMOT are the optional `tfmot` extra (see the README's
"Handing the pruned model to TFMOT"); this module imports them only when
called, so `import tf_prunetrain` never needs them.
"""

from __future__ import annotations

import os
import types
from typing import Any

import keras
import numpy as np

from tf_prunetrain import _checks
from tf_prunetrain import graph as graph_lib
from tf_prunetrain import handlers
from tf_prunetrain.export import largest_difference, random_inputs

INSTALL = ('pip install "tf-prunetrain[tfmot]" && pip install --no-deps '
           '"tf-keras==2.21.*" "tensorflow-model-optimization==0.8.1"')

# Config keys of training-only objects: the weights are copied, so the
# converted model computes the same function without them.
_NOT_CARRIED = ("_initializer", "_regularizer", "_constraint")


def _missing(package: str, error: ImportError) -> ImportError:
    return ImportError(
        f"tf_prunetrain.tfmot_interop needs {package}, which is not "
        f"installed ({error}). Install the 'tfmot' extra: {INSTALL}")


def load_tf_keras() -> types.ModuleType:
    """The `tf_keras` module, or an ImportError that says how to install it."""
    try:
        import tf_keras
    except ImportError as e:
        raise _missing("tf_keras", e) from e
    return tf_keras


def load_tfmot() -> types.ModuleType:
    """The `tensorflow_model_optimization` module, imported without its side
    effect: TFMOT sets `TF_USE_LEGACY_KERAS=1` for the whole process (which
    turns `tf.keras` into tf_keras); the variable is put back as it was.

    Example:
    >>> from tf_prunetrain import tfmot_interop
    >>> tfmot = tfmot_interop.load_tfmot()
    >>> callable(tfmot.quantization.keras.quantize_model)
    True
    """
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as e:
        raise _missing("tensorflow-model-optimization", e) from e
    finally:
        if before is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = before
    return tfmot


def to_tf_keras(model: keras.Model, sample_inputs: Any = None,
                tolerance: float = 1e-5, seed: int = 0) -> Any:
    """The tf_keras (Keras 2) twin of a functional or Sequential `model`.

    Every layer becomes the tf_keras layer of the same class and name, with
    the same config and a copy of its weights; nested models stay nested.
    Initializers, regularizers (`GroupLasso` included) and constraints are
    not carried over: they only matter to further training. The twin is run
    on `sample_inputs` (default: four standard-normal examples per input) in
    inference mode and must match `model` within `tolerance`. `model` is not
    changed.

    Raises:
      ImportError: tf_keras is not installed (the message gives the command).
      TypeError: `model` is subclassed (tf_keras needs its layer graph).
      ValueError: a layer tf_keras cannot express (a custom layer or
        subclass, a `keras.ops` call in the graph, a Keras 3-only setting),
        named with what to do; or the twin's outputs differ.

    Example:
    >>> import keras, numpy as np
    >>> from tf_prunetrain import tfmot_interop
    >>> x = keras.Input((8, 8, 3))
    >>> h = keras.layers.Conv2D(4, 3, name="conv")(x)
    >>> h = keras.layers.BatchNormalization(name="bn")(h)
    >>> y = keras.layers.Dense(2, name="out")(
    ...     keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h)))
    >>> model = keras.Model(x, y)
    >>> twin = tfmot_interop.to_tf_keras(model)
    >>> type(twin).__module__.split(".")[0], twin.get_layer("conv").filters
    ('tf_keras', 4)
    >>> v = np.ones((1, 8, 8, 3), "float32")
    >>> bool(np.allclose(twin(v), model(v), atol=1e-6))
    True
    """
    _checks.non_negative(tolerance, "tolerance", "to_tf_keras")
    tf_keras = load_tf_keras()
    twin = _convert(graph_lib.functional_of(model), model.name, tf_keras, {})
    samples = (random_inputs(model, seed, caller="to_tf_keras")
               if sample_inputs is None else keras.tree.flatten(sample_inputs))
    args = samples[0] if len(samples) == 1 else samples
    difference = largest_difference(model(args, training=False),
                                    twin(args, training=False))
    if difference > tolerance:
        raise ValueError(
            f"to_tf_keras: the tf_keras twin of model '{model.name}' differs "
            f"from it by {difference:.3g} (> tolerance {tolerance:g}) on the "
            "sample inputs; it should not be used.")
    return twin


def _convert(graph: Any, name: str, tf_keras: types.ModuleType,
             done: dict[int, Any], prefix: str = "") -> Any:
    """Rebuilds one functional graph in tf_keras; `done` maps Keras 3 layers
    (by id) to their tf_keras twins, so shared layers stay shared; `prefix`
    names the enclosing models in errors."""
    inputs = [tf_keras.Input(shape=tuple(t.shape)[1:],
                             dtype=keras.backend.standardize_dtype(t.dtype),
                             name=graph_lib.input_name(t))
              for t in graph.inputs]

    def visit(view: graph_lib.NodeView, values: dict[int, Any]) -> list:
        operation = view.operation
        twin = done.get(id(operation))
        new = twin is None
        if new:
            twin = (_convert(graph_lib.functional_of(operation),
                             operation.name, tf_keras, done, view.path + "/")
                    if graph_lib.is_model(operation)
                    else _layer(operation, view.path, tf_keras))
            done[id(operation)] = twin
        args, kwargs = view.call_args(values)
        # Keras 3 lets the model's `training` override the one a layer call
        # recorded (even random augmentation's default `training=True`);
        # tf_keras would keep a recorded one for good. As in Keras 3, the
        # model's call decides.
        kwargs.pop("training", None)
        outputs = keras.tree.flatten(twin(*args, **kwargs))
        if new and not graph_lib.is_model(operation):
            _copy_weights(operation, twin, view.path)
        return outputs

    outputs = graph_lib.walk(graph, inputs, visit, prefix)
    return tf_keras.Model(graph_lib.input_structure(graph, inputs),
                          graph_lib.output_structure(graph, outputs),
                          name=name)


def _layer(layer: Any, path: str, tf_keras: types.ModuleType) -> Any:
    """The tf_keras layer for one Keras 3 layer (weights not yet copied)."""
    kind = type(layer).__name__
    spec = handlers.handler_for(layer).tf_keras
    cls = None if spec is None else getattr(tf_keras.layers, kind, None)
    if cls is None:
        raise ValueError(
            f"to_tf_keras: layer '{path}' ({kind}) has no faithful tf_keras "
            "counterpart, so TFMOT cannot take this model. Custom layers, "
            "subclasses of Keras layers and keras.ops calls have none, nor "
            "a few Keras layers (README, 'Handing the pruned model to "
            "TFMOT'): rebuild that part with Keras layers that convert (e.g. "
            "keras.layers.ReLU instead of keras.ops.relu).")
    config = layer.get_config()
    for key, value in spec.drop.items():
        if key in config and config.pop(key) != value:
            raise ValueError(
                f"to_tf_keras: layer '{path}' ({kind}) has {key}="
                f"{layer.get_config()[key]!r}, which tf_keras cannot express "
                f"(only {value!r}); rebuild the layer with that setting.")
    config = {spec.rename.get(key, key): _plain(value)
              for key, value in config.items()
              if not key.endswith(_NOT_CARRIED)}
    config["dtype"] = layer.dtype_policy.name
    try:
        return cls.from_config(config)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"to_tf_keras: tf_keras cannot build layer '{path}' ({kind}) "
            f"from its Keras 3 config: {e}") from e


def _plain(value: Any) -> Any:
    """A config value as tf_keras takes it: serialized arrays (a per-channel
    `Rescaling` offset) become nested lists, which tf_keras can clone and
    save; anything else is left as it is."""
    if isinstance(value, dict) and value.get("class_name") == "__numpy__":
        array = keras.saving.deserialize_keras_object(value)
        return np.asarray(array).tolist()
    return value


def _copy_weights(layer: Any, twin: Any, path: str) -> None:
    """Copies weights by name (kernel, bias, gamma, moving_mean, ...)."""
    spec = handlers.handler_for(layer).tf_keras
    values = {spec.weights.get(w.name, w.name): w.numpy()
              for w in layer.weights}
    names = [w.name.split("/")[-1].split(":")[0] for w in twin.weights]
    if sorted(names) != sorted(values):
        raise ValueError(
            f"to_tf_keras: layer '{path}' ({type(layer).__name__}) has "
            f"weights {sorted(values)} in Keras 3 but {sorted(names)} in "
            "tf_keras.")
    twin.set_weights([values[n] for n in names])
