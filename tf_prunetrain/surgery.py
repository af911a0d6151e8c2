"""The offline rebuild: a physically smaller copy of a model.

`prune_channels(model)` plans (`planning.plan_pruning`) and rebuilds: new
layers from edited configs, called on new tensors, given the surviving
weight slices. The original model is not modified. `clone(model,
config_fn)` is the same rebuild with nothing removed: the one way this
library copies a model (`add_group_lasso`, `synchronize_batchnorm`,
`strip_prunetrain`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Mapping

import keras

from tf_prunetrain import _checks
from tf_prunetrain import coupling
from tf_prunetrain import graph as graph_lib
from tf_prunetrain import slicing
from tf_prunetrain.planning import Plan, plan_pruning

ConfigFn = Callable[[Any, dict], dict]


def rebuild(plan: Plan, config_fn: ConfigFn | None = None) -> keras.Model:
    """The model `plan` describes, built anew; the original is not modified.

    `config_fn(layer, config)` may edit each new layer's config further
    (`add_group_lasso` uses it to attach regularizers). A compiled model's
    copy is compiled alike, with a fresh optimizer.
    """
    return _Rebuilder(plan, config_fn).model()


def clone(model: keras.Model, config_fn: ConfigFn | None = None
          ) -> keras.Model:
    """A copy of `model` (same layers, names, weights), each layer's config
    passed through `config_fn(layer, config)` first.

    Example:
    >>> import keras
    >>> from tf_prunetrain import surgery
    >>> x = keras.Input((4,))
    >>> model = keras.Model(x, keras.layers.Dense(2, name="d")(x))
    >>> copy = surgery.clone(model, lambda layer, c: {**c, "activation": "relu"})
    >>> copy.get_layer("d").activation.__name__, model.get_layer("d").activation.__name__
    ('relu', 'linear')
    """
    return rebuild(Plan.keep_all(coupling.channel_groups(model)), config_fn)


class _Rebuilder:
    """Builds the pruned model from a plan: new layers from edited configs,
    called on new tensors, then given the sliced weights."""

    def __init__(self, plan: Plan, config_fn: Callable | None):
        self.plan = plan
        self.config_fn = config_fn
        self.records = {id(r.view.node): r for r in plan.graph.records}
        self.layers: dict[int, tuple[Any, Any]] = {}  # old id -> (old, new)
        self.models: dict[int, keras.Model] = {}

    def model(self) -> keras.Model:
        old = self.plan.graph.model
        inputs = graph_lib.functional_of(old).inputs
        new = self._model(old, [None] * len(inputs))
        self._copy_weights()
        if old.compiled:
            new.compile_from_config(old.get_compile_config())
        return new

    def _model(self, old: keras.Model, ids: list) -> keras.Model:
        """Rebuilds a (sub-)model whose inputs keep the kept channels of
        `ids` (None: all); other dimensions, dynamic ones included, stay."""
        functional = graph_lib.functional_of(old)
        inputs = [
            keras.Input(batch_shape=slicing.shape(self.plan, t.shape, i),
                        dtype=t.dtype, name=graph_lib.input_name(t))
            for t, i in zip(functional.inputs, ids)
        ]
        if isinstance(old, keras.Sequential):
            layers = [self._operation(self.records[id(v.node)])
                      for v in graph_lib.nodes(functional)]
            return keras.Sequential([inputs[0], *layers], name=old.name)
        outputs = graph_lib.walk(functional, inputs, self._visit)
        if any(o is None for o in outputs):
            raise RuntimeError(f"internal error: an output of '{old.name}' was "
                               "removed with a residual branch.")
        return keras.Model(graph_lib.input_structure(functional, inputs),
                           graph_lib.output_structure(functional, outputs),
                           name=old.name)

    def _visit(self, view: graph_lib.NodeView, values: dict) -> list | None:
        key = id(view.node)
        if key in self.plan.removed:
            return None
        if key in self.plan.merges:
            return [slicing.merged(
                self.plan, view, values, lambda: self._operation(self.records[key]))]
        args, kwargs = view.call_args(values)
        op = self._operation(self.records[key])
        return keras.tree.flatten(op(*args, **kwargs))

    def _operation(self, record: coupling.Record) -> Any:
        """The new operation for a node: a rebuilt nested model, a new layer
        (one per layer, shared calls included), or the stateless op itself."""
        old = record.view.operation
        if graph_lib.is_model(old):
            if id(old) not in self.models:
                self.models[id(old)] = self._model(old, record.ins)
            return self.models[id(old)]
        if not isinstance(old, keras.layers.Layer):
            return old
        if id(old) not in self.layers:
            config = slicing.layer_config(self.plan, record)
            if self.config_fn is not None:
                config = self.config_fn(old, config)
            self.layers[id(old)] = (old, graph_lib.layer_from_config(old, config))
        return self.layers[id(old)][1]

    def _copy_weights(self) -> None:
        # Same class and config order the weights alike; names may differ
        # (a custom layer's auto-named weights get fresh unique names).
        for old, new in self.layers.values():
            graph_lib.assign_weights(new, slicing.sliced_weights(self.plan, old))


def prune_channels(model: keras.Model, threshold: float = 1e-4,
                   keep: Mapping[str, Any] | None = None, round_to: int = 1,
                   min_channels: int = 1) -> keras.Model:
    """Returns a physically smaller copy of `model` without its dead channels.

    A channel is dead when every kernel slice coupled to it (the producer's
    output slice and every consumer's input slice, across residual adds and
    concatenations) has `max|w| < threshold`. Removing dead channels leaves the
    model's inference function unchanged. `model` itself is not modified; the
    result is compiled like `model` (with a fresh optimizer) if `model` was.

    Args:
      model: a built functional or Sequential model.
      threshold: deadness threshold on absolute kernel values.
      keep: optional `{layer_name: bool mask over its output channels}`
        overriding the threshold for those channels (nested layers are named
        'submodel/layer').
      round_to: keep each convolution/Dense output count a multiple of this
        (e.g. 8 for tensor cores) by keeping the strongest extra channels.
      min_channels: fewest channels any tensor keeps, unless its whole
        residual branch is removed.

    Example:
    >>> import keras, numpy as np, tf_prunetrain
    >>> x = keras.Input((8, 8, 3))
    >>> h = keras.layers.Conv2D(4, 3, name="c1")(x)
    >>> y = keras.layers.Conv2D(2, 3, name="c2")(h)
    >>> m = keras.Model(x, y)
    >>> w = m.get_layer("c2").kernel.numpy(); w[:, :, :2] = 0
    >>> _ = m.get_layer("c2").kernel.assign(w)
    >>> k = m.get_layer("c1").kernel.numpy(); k[..., :2] = 0
    >>> _ = m.get_layer("c1").kernel.assign(k)
    >>> tf_prunetrain.prune_channels(m).get_layer("c1").filters
    2
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"prune_channels: model must be a keras.Model, got "
                        f"{type(model).__name__} {model!r:.80}.")
    _checks.non_negative(threshold, "threshold", "prune_channels")
    if math.isinf(threshold):
        warnings.warn(
            "prune_channels: threshold=inf counts every channel as dead, so "
            "every prunable layer keeps only min_channels (rounded up to "
            "round_to) of its channels. Pass a finite threshold (the default "
            "1e-4) to remove only the channels the lasso zeroed.",
            stacklevel=2)
    graph = coupling.channel_groups(model)
    return rebuild(plan_pruning(graph, threshold, keep, round_to,
                                min_channels))
