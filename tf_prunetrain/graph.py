"""Walking the graph of a functional Keras model, nested sub-models included.

Everything else in the library sees a graph through `walk`, `NodeView` and
the helpers below; the Keras internals they rest on are in `_keras`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Iterator

import keras
import numpy as np

from tf_prunetrain import _keras
from tf_prunetrain._keras import Functional


def functional_of(model: keras.Model) -> Functional:
    """Returns the functional graph of a Functional or built Sequential model.

    Raises:
      TypeError: for subclassed models, whose graph Keras does not record.
      ValueError: for a Sequential model that has not been built yet.
    """
    if isinstance(model, keras.Sequential):
        graph = _keras.sequential_graph(model)
        if graph is None:
            raise ValueError(
                f"Sequential model '{model.name}' has no input shape yet: build "
                "it first (start it with keras.Input(shape=...) or call "
                "model.build(input_shape))."
            )
        return graph
    if isinstance(model, Functional):
        return model
    raise TypeError(
        f"Model '{model.name}' ({type(model).__name__}) is a subclassed model: "
        "tf_prunetrain needs the layer graph, which Keras records only for "
        "functional and Sequential models. Rebuild it with the functional API "
        "(keras.Input → layers → keras.Model(inputs, outputs))."
    )


@dataclasses.dataclass(frozen=True)
class NodeView:
    """One call of an operation inside a functional model."""

    node: Any
    owner: Functional  # the functional graph the node belongs to
    path: str  # '/'-joined names of enclosing sub-models and the operation

    @property
    def operation(self) -> Any:
        return self.node.operation

    @property
    def inputs(self) -> list:
        return list(self.node.input_tensors)

    @property
    def outputs(self) -> list:
        return list(self.node.outputs)

    @property
    def has_array_constants(self) -> bool:
        """True when a call argument besides the tensors is a non-scalar
        array (a per-channel constant that channel removal would break)."""
        arguments = self.node.arguments
        return any(not isinstance(a, keras.KerasTensor) and np.ndim(a) > 0
                   for a in keras.tree.flatten((arguments.args,
                                                arguments.kwargs)))

    def call_args(self, values: dict[int, Any]) -> tuple[tuple, dict]:
        """The node's call arguments with every input tensor replaced."""
        return self.node.arguments.fill_in(values)


def nodes(graph: Functional, prefix: str = "") -> Iterator[NodeView]:
    """Yields the computing nodes of `graph` in topological order."""
    by_depth = _keras.nodes_by_depth(graph)
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            yield NodeView(node, graph, prefix + node.operation.name)


def walk(
    graph: Functional,
    inputs: list,
    visit: Callable[[NodeView, dict[int, Any]], list | None],
    prefix: str = "",
) -> list:
    """Maps values through `graph` in topological order.

    `visit(view, values)` returns the values of the node's outputs, or None to
    leave them undefined (a removed node). Returns the values of the graph
    outputs (None where undefined).
    """
    values: dict[int, Any] = {id(t): v for t, v in zip(graph.inputs, inputs)}
    for view in nodes(graph, prefix):
        outs = visit(view, values)
        if outs is None:
            continue
        for t, v in zip(view.outputs, outs):
            values[id(t)] = v
    return [values.get(id(t)) for t in graph.outputs]


def input_name(tensor: Any) -> str:
    """The name of the Input layer that created an input tensor."""
    return _keras.history(tensor)[0].name


def output_structure(graph: Functional, outputs: list) -> Any:
    """`outputs` packed like the graph's outputs (single, list or dict)."""
    return keras.tree.pack_sequence_as(_keras.outputs_struct(graph),
                                     outputs)


def input_structure(graph: Functional, inputs: list) -> Any:
    """`inputs` packed like the graph's inputs (single, list or dict)."""
    return keras.tree.pack_sequence_as(_keras.inputs_struct(graph),
                                     inputs)


def set_shape(tensor: Any, shape: tuple) -> None:
    """Records a new static shape on a graph tensor (in-place surgery), so
    `model.summary()` and nested models' input checks see the new widths."""
    _keras.set_shape(tensor, shape)


def layer_from_config(old: Any, config: dict) -> Any:
    """A new layer like `old` from an (edited) config. Lambda layers are
    allowed: the config comes from this process, not from a file."""
    try:
        with _keras.unsafe_deserialization():
            return type(old).from_config(copy.deepcopy(config))
    except (TypeError, ValueError, NotImplementedError) as e:
        raise TypeError(
            f"tf_prunetrain cannot re-create layer '{old.name}' "
            f"({type(old).__name__}) from its config: {e}. The class needs a "
            "get_config() that returns every constructor argument.") from e


def producer(tensor: Any) -> Any:
    """The node that computed `tensor` (a KerasTensor of a functional graph)."""
    operation, node_index, _ = _keras.history(tensor)
    return _keras.inbound_nodes(operation)[node_index]


def is_model(operation: Any) -> bool:
    return isinstance(operation, (Functional, keras.Sequential))


def assign_weights(layer: Any, values: list[np.ndarray]) -> None:
    """Assigns `values` to `layer.weights` (a rebuilt or resized layer).

    Raises:
      RuntimeError: the layer's weights do not have the values' shapes.
    """
    shapes = [tuple(w.shape) for w in layer.weights]
    if shapes != [v.shape for v in values]:
        raise RuntimeError(
            f"internal error: layer '{layer.name}' was rebuilt with weights "
            f"{shapes}, but its sliced weights are {[v.shape for v in values]}.")
    for variable, value in zip(layer.weights, values):
        variable.assign(value)
