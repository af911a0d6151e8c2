"""The library's only door to Keras and TensorFlow internals.

Every private Keras attribute and every `keras.src` module the library uses
is reached through this module, and listed in `REQUIRED`: `missing()` names
the ones the installed Keras lacks (tests/keras_internals_test.py runs it),
and `setup.py` pins the Keras minor versions this list was checked against.
A new Keras minor that renames one fails that test, not a reconfiguration.

What is used, and why:

* the functional graph: `Functional`, a Sequential model's `_functional`,
  `_nodes_by_depth`, a tensor's `_keras_history` and `_shape`, an
  operation's `_inbound_nodes`, `_inputs_struct`/`_outputs_struct`;
* re-pointing a live functional model at new outputs (in-place removal of
  residual branches): `keras.src.ops.function.map_graph`, the model's
  `_outputs`, `_nodes`, `_operations`, `_operations_by_depth` and tracked
  `_layers`, an operation's `_outbound_nodes`;
* the `keras.ops` operation classes (`keras.src.ops.nn`, `.numpy`) that
  appear in a graph when `keras.ops` functions are called on KerasTensors;
* `SafeModeScope` (re-creating Lambda layers from this process's config);
* a layer's variable lists, its tracker lock and `_build_shapes_dict`
  (in-place reconfiguration gives the same layer new variables), and its
  `_seed_generators` and sub-layers (`_flatten_layers`), whose random
  state `Checkpoint` carries;
* an optimizer's `_trainable_variables`, `_variables` and per-variable slot
  lists (its state is carried over to the smaller model), and its
  `_learning_rate` (a variable or a schedule object: the public property
  evaluates it);
* TensorFlow's trainer (`reduce_per_replica`, `_maybe_symbolic_build`,
  `_symbolic_build`, `_distribute_strategy`) for `fix_multi_worker_fit`;
* the `CallbackList` that calls a callback's `set_model` (found on the call
  stack: `fit_callbacks`), for the other callbacks of the same `fit`
  (`Reconfigure` tells them its events); no attribute to list, so
  tests/keras_internals_test.py runs Keras' `fit`, `evaluate` and
  `predict` through it.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Iterator

import keras
import tensorflow as tf

try:
    from keras.src.backend.tensorflow import trainer as _tf_trainer
    from keras.src.models.functional import Functional
    from keras.src.ops import function as _function
    from keras.src.ops import nn as ops_nn
    from keras.src.ops import numpy as ops_numpy
    from keras.src.saving import serialization_lib as _serialization
except ImportError as e:  # a Keras that moved its modules
    raise ImportError(
        f"tf_prunetrain uses Keras internals that Keras {keras.__version__} "
        f"does not have ({e}). Install a Keras version tf_prunetrain "
        "supports (setup.py pins it): pip install 'keras>=3.15,<3.16'.") from e

# (where, attribute): every private name this module touches.
REQUIRED: tuple[tuple[str, str], ...] = (
    ("keras.Sequential instance", "_functional"),
    ("Functional", "_nodes_by_depth"),
    ("Functional", "_inputs_struct"),
    ("Functional", "_outputs_struct"),
    ("Functional", "_outputs"),
    ("Functional", "_nodes"),
    ("Functional", "_operations"),
    ("Functional", "_operations_by_depth"),
    ("Functional", "_layers"),
    ("keras.src.ops.function", "map_graph"),
    ("KerasTensor", "_keras_history"),
    ("KerasTensor", "_shape"),
    ("Layer", "_inbound_nodes"),
    ("Layer", "_outbound_nodes"),
    ("Layer", "_trainable_variables"),
    ("Layer", "_non_trainable_variables"),
    ("Layer", "_tracker"),
    ("Layer", "_lock_state"),
    ("Layer", "_build_shapes_dict"),
    ("Layer", "_seed_generators"),
    ("Layer", "_flatten_layers"),
    ("Optimizer", "_trainable_variables"),
    ("Optimizer", "_variables"),
    ("Optimizer", "_learning_rate"),
    ("keras.src.saving.serialization_lib", "SafeModeScope"),
    ("keras.src.backend.tensorflow.trainer", "reduce_per_replica"),
    ("TensorFlowTrainer", "_maybe_symbolic_build"),
    ("TensorFlowTrainer", "_symbolic_build"),
    ("TensorFlowTrainer", "_distribute_strategy"),
    *(("keras.src.ops.nn", name) for name in (
        "Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "HardSilu",
        "Softplus", "LeakyRelu", "Elu", "Selu", "Gelu")),
    *(("keras.src.ops.numpy", name) for name in (
        "Add", "Subtract", "Multiply", "Maximum", "Minimum", "Tanh",
        "Negative", "Absolute", "Square")),
)


def _samples() -> dict[str, Any]:
    """One live object per `REQUIRED` place, to look the attributes up on."""
    x = keras.Input((4,))
    dense = keras.layers.Dense(2)
    functional = keras.Model(x, dense(x))
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.SGD(momentum=0.9)
    optimizer.build(functional.trainable_variables)
    functional.compile(optimizer, "mse")
    return {
        "keras.Sequential instance": sequential,
        "Functional": functional,
        "KerasTensor": x,
        "Layer": dense,
        "Optimizer": optimizer,
        "TensorFlowTrainer": functional,
        "keras.src.saving.serialization_lib": _serialization,
        "keras.src.ops.function": _function,
        "keras.src.backend.tensorflow.trainer": _tf_trainer,
        "keras.src.ops.nn": ops_nn,
        "keras.src.ops.numpy": ops_numpy,
    }


def missing() -> list[str]:
    """The `REQUIRED` internals the installed Keras lacks ('where.name')."""
    samples = _samples()
    return [f"{where}.{name}" for where, name in REQUIRED
            if not hasattr(samples[where], name)]


# -- The functional graph ---------------------------------------------------
def sequential_graph(model: keras.Sequential) -> Functional | None:
    """The functional graph of a Sequential model (None until it is built)."""
    return getattr(model, "_functional", None)


def nodes_by_depth(graph: Functional) -> dict[int, list]:
    return graph._nodes_by_depth


def inputs_struct(graph: Functional) -> Any:
    return graph._inputs_struct


def outputs_struct(graph: Functional) -> Any:
    return graph._outputs_struct


def history(tensor: Any) -> tuple[Any, int, int]:
    """(operation, node index, tensor index) that made a KerasTensor."""
    return tuple(tensor._keras_history)


def inbound_nodes(operation: Any) -> list:
    return operation._inbound_nodes


def set_shape(tensor: Any, shape: tuple) -> None:
    tensor._shape = tuple(shape)


_GRAPH_STATE = ("_outputs_struct", "_outputs", "_nodes", "_nodes_by_depth",
                "_operations", "_operations_by_depth")


class GraphSnapshot:
    """A functional graph's node and operation lists, its tracked layers
    and its operations' node lists, to put back after a failed `rewire`."""

    def __init__(self, graph: Functional):
        self.graph = graph
        self.state = {key: getattr(graph, key) for key in _GRAPH_STATE}
        self.layers = list(graph._layers)
        self.nodes = [(op, list(op._inbound_nodes), list(op._outbound_nodes))
                      for op in graph._operations]

    def restore(self) -> None:
        for key, value in self.state.items():
            object.__setattr__(self.graph, key, value)
        self.graph._layers[:] = self.layers
        for op, inbound, outbound in self.nodes:
            op._inbound_nodes[:], op._outbound_nodes[:] = inbound, outbound


def rewire(graph: Functional, outputs: list) -> None:
    """Points a live functional model at new output tensors computed from
    its own inputs: its nodes, operations and tracked layers become those
    of the new graph (the same object, so `fit` and the optimizer see it)."""
    old_layers = [op for op in graph._operations
                  if isinstance(op, keras.layers.Layer)]
    nodes, by_depth, operations, operations_by_depth = _function.map_graph(
        graph._inputs, outputs)
    new = dict(zip(_GRAPH_STATE, (
        keras.tree.pack_sequence_as(graph._outputs_struct, outputs),
        list(outputs), nodes, by_depth, operations, operations_by_depth)))
    for key, value in new.items():
        object.__setattr__(graph, key, value)
    kept = {id(op) for op in operations}
    for layer in old_layers:
        if id(layer) not in kept and layer in graph._layers:
            graph._layers.remove(layer)
    for op in operations:
        if isinstance(op, keras.layers.Layer):
            graph._tracker.track(op)


def unsafe_deserialization() -> Any:
    """A scope in which `from_config` may re-create Lambda layers."""
    return _serialization.SafeModeScope(False)


# -- Layer state (in-place reconfiguration) ---------------------------------
def variable_lists(layer: Any) -> tuple[list, list]:
    """The layer's own trainable and non-trainable variable lists (the
    lists themselves: changing them changes the layer)."""
    return layer._trainable_variables, layer._non_trainable_variables


@contextlib.contextmanager
def unlocked(layer: Any) -> Iterator[None]:
    """Lets variables be added to or removed from a built layer."""
    layer._tracker.unlock()
    try:
        yield
    finally:
        layer._lock_state()


def unlock(layer: Any) -> None:
    """Unlocks the layer's tracker; `build` locks it again."""
    layer._tracker.unlock()


def build_shapes(layer: Any) -> Any:
    """The input shapes Keras recorded when the layer was built."""
    return getattr(layer, "_build_shapes_dict", None)


def set_build_shapes(layer: Any, record: Any) -> None:
    layer._build_shapes_dict = record


def seed_states(model: Any) -> list[Any]:
    """The state variable of every `SeedGenerator` in `model`'s layers
    (Dropout, GaussianNoise, random augmentation, ...), in the order of
    the layer tree (not by name: sub-layers a custom layer makes get names
    from a per-process counter). `.keras` files do not save them: a loaded
    model would draw other random numbers than the saved one went on to
    draw."""
    states: list[Any] = []

    def walk(layer: Any) -> None:
        states.extend(generator.state for generator in layer._seed_generators)
        for inner in layer._flatten_layers(include_self=False,
                                           recursive=False):
            walk(inner)

    walk(model)
    return states


# -- Optimizer state --------------------------------------------------------
def trained_variables(optimizer: Any) -> list:
    """The model variables the optimizer was built for, in slot order."""
    return list(getattr(optimizer, "_trainable_variables", []))


def optimizer_variables(optimizer: Any) -> list:
    """Every variable the optimizer owns (slots, iterations, ...)."""
    return list(optimizer._variables)


def slot_lists(optimizer: Any) -> dict[str, list]:
    """The optimizer's per-variable state lists (SGD momentums, Adam's
    moments, ...): attribute lists with one variable per trained variable."""
    n = len(trained_variables(optimizer))
    return {
        name: value for name, value in vars(optimizer).items()
        if name not in ("_trainable_variables", "_variables")
        and isinstance(value, list) and n and len(value) == n
        and all(isinstance(v, keras.Variable) for v in value)
    }


def learning_rate(optimizer: Any) -> Any:
    """What the optimizer holds as its learning rate: a `keras.Variable`
    (a float rate), a `LearningRateSchedule`, or a callable."""
    return optimizer._learning_rate


# -- The callbacks of one fit ---------------------------------------------------
def fit_callbacks(callback: Any, depth: int = 8) -> list:
    """The callbacks of the `keras.callbacks.CallbackList` whose `set_model`
    is calling `callback.set_model` (Keras' `fit`, `evaluate` and `predict`
    build one around their callbacks and set the model on each, in order);
    [] when `set_model` was called otherwise."""
    frame = inspect.currentframe()
    try:
        for _ in range(depth):
            frame = frame.f_back if frame is not None else None
            if frame is None:
                return []
            owner = frame.f_locals.get("self")
            if isinstance(owner, keras.callbacks.CallbackList) and any(
                    c is callback for c in owner.callbacks):
                return list(owner.callbacks)
        return []
    finally:
        del frame


# -- Multi-worker fit ---------------------------------------------------------
_FIXED = False


def _multi_worker(strategy: Any) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def fix_multi_worker_fit() -> None:
    """Makes Keras 3.15's `fit` run under `MultiWorkerMirroredStrategy`.

    Two spots of Keras' TensorFlow trainer reduce per-replica values in ways
    the collective strategy rejects (keras-team/keras#20585): the first-batch
    build reduces the whole (x, y) tuple at once, and the step's logs reduce
    scalars along axis 0. Under a multi-worker strategy the fix reduces each
    tensor separately and averages logs over replicas (what Keras does for a
    single worker); under any other strategy Keras' own code runs. Idempotent.
    """
    global _FIXED
    if _FIXED:
        return
    original_reduce = _tf_trainer.reduce_per_replica
    original_build = _tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values, strategy, reduction):
        if _multi_worker(strategy) and reduction in ("auto", "mean"):
            return keras.tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or not _multi_worker(
                self.distribute_strategy) or iterator is None:
            return original_build(self, iterator=iterator,
                                  data_batch=data_batch)
        strategy = self.distribute_strategy
        for _, _, batches in iterator:
            data_batch = keras.tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None)
                if isinstance(v, tf.distribute.DistributedValues) else v,
                next(batches))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    _tf_trainer.reduce_per_replica = reduce_per_replica
    _tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    _FIXED = True
