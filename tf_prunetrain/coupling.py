"""Channel coupling: which weight slices of a model live or die together.

`channel_groups(model)` propagates a channel id along every tensor of the
functional graph (see `handlers`), unions the ids that residual adds, depthwise
convolutions and other channel-preserving layers tie together, and returns a
`ChannelGraph`: the groups of `(layer, weight, axis, index)` slices that must be
kept or removed together, and which groups are frozen (touch the model's
inputs, outputs or a layer the library cannot follow).
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from tf_prunetrain import graph as graph_lib
from tf_prunetrain import handlers

FROZEN = 0  # id 0 is the root of every frozen channel


@dataclasses.dataclass
class Binding:
    """A weight axis whose indices carry channel ids."""

    layer: Any
    path: str
    weight: str
    axis: int
    ids: np.ndarray
    judge: bool  # counts for deadness (kernels), or is only sliced along


@dataclasses.dataclass
class Record:
    """One visited node: its handler and channel ids of inputs and outputs."""

    view: graph_lib.NodeView
    handler: handlers.Handler | None  # None for a nested model
    ins: list[handlers.Ids]
    outs: list[handlers.Ids]


@dataclasses.dataclass(frozen=True)
class Slice:
    """Indices along one axis of one weight of one layer."""

    layer: str
    weight: str
    axis: int
    indices: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Weight slices that are kept or removed together."""

    slices: tuple[Slice, ...]
    frozen: bool


class ChannelGraph:
    """The channel-coupling analysis of one functional or Sequential model.

    Example:
    >>> import keras, tf_prunetrain
    >>> x = keras.Input((8, 8, 3))
    >>> y = keras.layers.Conv2D(4, 3, name="c1")(x)
    >>> y = keras.layers.Conv2D(5, 3, name="c2")(y)
    >>> g = tf_prunetrain.channel_groups(keras.Model(x, y))
    >>> len([grp for grp in g.groups if not grp.frozen])  # c1's 4 channels
    4
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.records: list[Record] = []
        self.bindings: dict[tuple[int, str, int], Binding] = {}
        self.warnings: list[str] = []
        self._parent: list[int] = [FROZEN]
        self._path = ""
        self._view: graph_lib.NodeView | None = None  # the node propagated
        self._calls: dict[int, tuple[list, list]] = {}  # first call per op
        top = graph_lib.functional_of(model)
        inputs = [self._input_ids(t) for t in top.inputs]
        outputs = self._analyze(top, inputs, "")
        for ids in inputs + outputs:
            self.freeze(ids)
        self.root = np.array([self._find(i) for i in range(len(self._parent))])
        self._by_layer: dict[int, list[Binding]] = {}
        for b in self.bindings.values():
            self._by_layer.setdefault(id(b.layer), []).append(b)
        for message in dict.fromkeys(self.warnings):
            warnings.warn(message, stacklevel=3)

    # -- Context used by handlers ------------------------------------------
    def fresh(self, n: int) -> np.ndarray:
        start = len(self._parent)
        self._parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for i, j in zip(a.tolist(), b.tolist()):
            ri, rj = self._find(i), self._find(j)
            if ri != rj:  # the smaller root wins, so FROZEN stays a root
                self._parent[max(ri, rj)] = min(ri, rj)

    def freeze(self, ids: handlers.Ids) -> None:
        if ids is not None:
            self.union(np.zeros_like(ids), ids)

    def bind(self, layer: Any, weight: str, axis: int, ids: np.ndarray,
             judge: bool) -> None:
        key = (id(layer), weight, axis)
        if key in self.bindings:  # a shared layer: all its calls agree
            self.union(self.bindings[key].ids, ids)
        else:
            self.bindings[key] = Binding(layer, self._path, weight, axis, ids,
                                         judge)

    def has_array_constants(self) -> bool:
        return self._view.has_array_constants

    def warn(self, layer: Any, reason: str) -> None:
        self.warnings.append(
            f"tf_prunetrain: layer '{self._path}' ({type(layer).__name__}): "
            f"{reason}.")

    # -- Analysis -----------------------------------------------------------
    def _find(self, i: int) -> int:
        parent = self._parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def _tie(self, a: handlers.Ids, b: handlers.Ids) -> None:
        if a is None or b is None or len(a) != len(b):
            self.freeze(a)
            self.freeze(b)
        elif a is not b:
            self.union(a, b)

    def _input_ids(self, tensor: Any) -> handlers.Ids:
        n = handlers.channels(tensor.shape)
        return None if n is None else self.fresh(n)

    def _analyze(self, functional: Any, inputs: list, prefix: str) -> list:
        def visit(view: graph_lib.NodeView, values: dict) -> list:
            op = view.operation
            ins = [values[id(t)] for t in view.inputs]
            if graph_lib.is_model(op):
                sub = graph_lib.functional_of(op)
                outs, handler = self._analyze(sub, ins, view.path + "/"), None
            else:
                self._path, self._view = view.path, view
                handler = handlers.handler_for(op)
                outs = handler.propagate(
                    self, op, ins, [tuple(t.shape) for t in view.inputs],
                    [tuple(t.shape) for t in view.outputs])
            self.records.append(Record(view, handler, ins, outs))
            first = self._calls.setdefault(id(op), (ins, outs))
            for a, b in zip(first[0] + first[1], ins + outs):
                self._tie(a, b)  # a shared layer or model: calls agree
            return outs

        return graph_lib.walk(functional, inputs, visit, prefix)

    # -- Queries ------------------------------------------------------------
    def bindings_of(self, layer: Any) -> list[Binding]:
        """The weight axes of `layer` that carry channel ids."""
        return self._by_layer.get(id(layer), [])

    def roots(self, ids: np.ndarray) -> np.ndarray:
        """The group (root id) of every channel id."""
        return self.root[ids]

    def is_frozen(self, ids: np.ndarray) -> np.ndarray:
        return self.roots(ids) == FROZEN

    def layer_outputs(self) -> dict[str, np.ndarray]:
        """Path -> channel ids of the output of every layer that has one."""
        outputs: dict[str, np.ndarray] = {}
        for r in self.records:
            if r.handler is not None and r.outs and r.outs[0] is not None:
                outputs.setdefault(r.view.path, r.outs[0])
        return outputs

    def prunable(self) -> np.ndarray:
        """The root ids of every group that can be removed (not frozen)."""
        return np.unique(self.root[self.root != FROZEN])

    @property
    def groups(self) -> list[ChannelGroup]:
        """Every channel group with the weight slices it owns."""
        members: dict[int, list[Slice]] = {}
        for b in self.bindings.values():
            for root in np.unique(self.roots(b.ids)).tolist():
                idx = np.flatnonzero(self.roots(b.ids) == root)
                members.setdefault(root, []).append(
                    Slice(b.path, b.weight, b.axis, tuple(idx.tolist())))
        return [ChannelGroup(tuple(s), root == FROZEN)
                for root, s in members.items()]


def weight(layer: Any, name: str) -> Any:
    for w in layer.weights:
        if w.name == name:
            return w
    raise KeyError(f"layer '{layer.name}' has no weight '{name}'")


def channel_groups(model: keras.Model) -> ChannelGraph:
    """Analyzes which channels of `model` are coupled.

    Args:
      model: a built functional or Sequential Keras model (nested functional
        and Sequential sub-models are followed).

    Returns:
      A `ChannelGraph`; its `groups` list the coupled weight slices.

    Raises:
      TypeError: for a subclassed model.
    """
    return ChannelGraph(model)


def zero_groups(graph: ChannelGraph, roots: Any) -> None:
    """Zeroes every judged kernel slice, on all coupled sides, of the groups
    `roots` of `graph`: what the group lasso does to a channel it kills."""
    roots = np.asarray(sorted(roots), dtype=np.int64)
    for b in graph.bindings.values():
        idx = np.flatnonzero(np.isin(graph.roots(b.ids), roots))
        if not b.judge or not idx.size:
            continue
        var = weight(b.layer, b.weight)
        value = np.array(var.numpy())
        index = [slice(None)] * value.ndim
        index[b.axis] = idx
        value[tuple(index)] = 0.0
        var.assign(value)


def zero_channels(model: keras.Model,
                  channels: Mapping[str, Sequence[int]]) -> int:
    """Zeroes output channels of layers with everything coupled to them.

    Each listed channel's group — the producer's output slice, every
    consumer's input slice, across residual adds — gets zero kernels, as if
    the group lasso had killed it: `prune_channels` then removes it without
    changing the model's function. For tests, examples and benchmarks.

    Args:
      model: a built functional or Sequential model.
      channels: `{layer name: output channel indices}` (nested layers are
        named 'submodel/layer').

    Returns:
      How many channel groups were zeroed.

    Raises:
      ValueError: an unknown layer, an index out of range, or a frozen
        channel (it cannot be removed, so zeroing it would only change the
        model). Nothing is zeroed then.

    Example:
    >>> import keras, tf_prunetrain
    >>> x = keras.Input((8, 8, 3))
    >>> h = keras.layers.Conv2D(4, 3, name="c1")(x)
    >>> m = keras.Model(x, keras.layers.Conv2D(2, 3, name="c2")(h))
    >>> tf_prunetrain.coupling.zero_channels(m, {"c1": [0, 1]})
    2
    >>> tf_prunetrain.prune_channels(m).get_layer("c1").filters
    2
    """
    graph = channel_groups(model)
    outputs = graph.layer_outputs()
    roots: set[int] = set()
    for path, indices in channels.items():
        if path not in outputs:
            raise ValueError(
                f"zero_channels: no layer '{path}' with a channel output; "
                f"known layers: {', '.join(sorted(outputs))}.")
        ids = outputs[path]
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, numbers.Integral) \
                    or not -len(ids) <= i < len(ids):
                raise ValueError(
                    f"zero_channels: '{path}' has {len(ids)} output channels;"
                    f" index {i!r} is not one of them.")
            root = int(graph.roots(ids[i]))
            if root == FROZEN:
                raise ValueError(
                    f"zero_channels: channel {i} of '{path}' is frozen (it "
                    "reaches a model input/output or a layer whose channels "
                    "cannot be removed): zeroing it would change the model.")
            roots.add(root)
    zero_groups(graph, roots)
    return len(roots)
