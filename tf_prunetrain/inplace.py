"""In-place reconfiguration: apply a pruning `Plan` to the live model.

The same `keras.Model` object and the same layer objects get smaller
variables; weights, BatchNorm statistics and the optimizer's state keep their
surviving slices, and the model's train/test/predict functions are re-traced,
so a running `model.fit` continues on the smaller model. The plan is the one
`prune_channels` applies (see `planning`), with residual-branch removal off:
in place, a dead branch keeps `min_channels` channels.

If anything fails, the model and its optimizer are restored and the error is
raised as a `RuntimeError` that says so.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tf_prunetrain import _keras
from tf_prunetrain import graph as graph_lib
from tf_prunetrain import planning


@dataclasses.dataclass
class _LayerChange:
    layer: Any
    attributes: dict[str, Any]  # config attributes that change
    shapes: list[tuple]  # new input shapes (for build)
    values: list[np.ndarray] | None  # new weights in layer.weights order


def reconfigure_in_place(model: keras.Model, plan: planning.Plan) -> None:
    """Shrinks `model` in place to what `plan` keeps.

    Raises:
      ValueError: the plan removes residual branches (not possible in place).
      RuntimeError: the change failed; the model is left as it was.
    """
    if plan.removed or plan.merges:
        raise ValueError("reconfigure_in_place cannot remove residual "
                         "branches: plan with remove_blocks=False.")
    changes = _layer_changes(plan)
    tensors = _tensor_shapes(plan)
    if not changes and not tensors:
        return
    optimizer = getattr(model, "optimizer", None) if model.compiled else None
    snapshot = [_Snapshot(c.layer) for c in changes]
    old_shapes = {id(t): t.shape for t, _ in tensors}
    owner = {id(w): (c.layer, w.name) for c in changes for w in c.layer.weights}
    try:
        with model.distribute_strategy.scope():
            for change in changes:
                _apply(change)
            for tensor, shape in tensors:
                graph_lib.set_shape(tensor, shape)
            if optimizer is not None:
                model.optimizer = _rebuilt_optimizer(model, optimizer, plan,
                                                     owner)
        _retrace(model)
    except Exception as e:
        for state in snapshot:
            state.restore()
        for tensor, _ in tensors:
            graph_lib.set_shape(tensor, old_shapes[id(tensor)])
        if optimizer is not None:
            model.optimizer = optimizer
        _retrace(model)
        raise RuntimeError(
            f"in-place reconfiguration of '{model.name}' failed and was rolled "
            f"back; the model is unchanged: {type(e).__name__}: {e}") from e


def _layer_changes(plan: planning.Plan) -> list[_LayerChange]:
    changes, seen = [], set()
    for record in plan.graph.records:
        layer = record.view.operation
        if (record.handler is None or id(layer) in seen
                or not isinstance(layer, keras.layers.Layer)):
            continue
        seen.add(id(layer))
        old = layer.get_config()
        new = plan.layer_config(record)
        attributes = {
            key: keras.saving.deserialize_keras_object(value)
            if isinstance(value, dict) else value
            for key, value in new.items() if not _same(value, old.get(key))
        }
        shapes = [plan.shape(t.shape, ids)
                  for t, ids in zip(record.view.inputs, record.ins)]
        sliced = any(not np.all(plan.mask(b.ids))
                     for b in plan.graph.bindings_of(layer))
        resized = shapes != [tuple(t.shape) for t in record.view.inputs]
        if not (attributes or sliced or resized):
            continue
        values = plan.sliced_weights(layer) if layer.weights else None
        changes.append(_LayerChange(layer, attributes, shapes, values))
    return changes


def _tensor_shapes(plan: planning.Plan) -> list[tuple[Any, tuple]]:
    """New shapes of every graph tensor that loses channels (layer outputs
    and the inputs of nested models)."""
    found = []
    for record in plan.graph.records:
        pairs = list(zip(record.view.outputs, record.outs))
        if graph_lib.is_model(record.view.operation):
            inner = graph_lib.functional_of(record.view.operation).inputs
            pairs += list(zip(inner, record.ins))
        for tensor, ids in pairs:
            shape = plan.shape(tensor.shape, ids)
            if shape != tuple(tensor.shape):
                found.append((tensor, shape))
    return list({id(t): (t, s) for t, s in found}.values())


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a, dtype=object),
                                   np.asarray(b, dtype=object)))
    except Exception:  # values that numpy cannot compare: compare reprs
        return repr(a) == repr(b)


class _Snapshot:
    """What `_apply` changes on a layer, to put back on failure."""

    def __init__(self, layer: Any):
        self.layer = layer
        self.state = dict(vars(layer))
        self.variables = [list(v) for v in _keras.variable_lists(layer)]

    def restore(self) -> None:
        layer = self.layer
        with _keras.unlocked(layer):
            for current, saved in zip(_keras.variable_lists(layer),
                                      self.variables):
                current[:] = saved
            for key in set(vars(layer)) - set(self.state):
                object.__delattr__(layer, key)
            for key, value in self.state.items():
                object.__setattr__(layer, key, value)


def _apply(change: _LayerChange) -> None:
    layer = change.layer
    for key, value in change.attributes.items():
        object.__setattr__(layer, key, value)
    if change.values is None:
        _keras.set_build_shapes(layer, _build_record(layer, change.shapes))
        return
    # Constraints bound to variables, not to the layer's config
    # (`ProximalStep`), go over to the new variables.
    constraints = [w.constraint for w in layer.weights]
    _keras.unlock(layer)  # build() locks it again
    for variables in _keras.variable_lists(layer):
        variables.clear()
    layer.built = False
    layer.build(change.shapes[0] if len(change.shapes) == 1 else change.shapes)
    graph_lib.assign_weights(layer, change.values)
    for variable, constraint in zip(layer.weights, constraints):
        variable.constraint = constraint


def _build_record(layer: Any, shapes: list[tuple]) -> Any:
    record = _keras.build_shapes(layer)
    if not record or len(record) != 1:
        return record
    key = next(iter(record))
    return {key: shapes[0] if len(shapes) == 1 else shapes}


def _rebuilt_optimizer(model: keras.Model, old: Any, plan: planning.Plan,
                       owner: dict[int, tuple[Any, str]]) -> Any:
    """A fresh optimizer like `old`, built on the model's new variables, with
    every slot's surviving slice, the iteration count and other state.
    `owner` maps the old variables of changed layers to (layer, weight)."""
    new = type(old).from_config(old.get_config())
    new.build(model.trainable_variables)
    pairs = [(old, new)]
    if hasattr(old, "inner_optimizer"):  # LossScaleOptimizer
        pairs.append((old.inner_optimizer, new.inner_optimizer))
    for old_opt, new_opt in pairs:
        trained = _keras.trained_variables(old_opt)
        old_slots = _keras.slot_lists(old_opt)
        new_slots = _keras.slot_lists(new_opt)
        for name, slots in old_slots.items():
            for variable, slot, target in zip(trained, slots, new_slots[name]):
                value = np.asarray(slot.numpy())
                if id(variable) in owner:
                    value = plan.slice_weight(*owner[id(variable)], value)
                if tuple(target.shape) != value.shape:
                    raise RuntimeError(
                        f"optimizer state '{name}' of {type(old_opt).__name__}"
                        f" has shape {tuple(slot.shape)}, not its variable's: "
                        "its slices cannot be carried over.")
                target.assign(value)
        in_slots = {id(s) for slots in (*old_slots.values(),
                                        *new_slots.values()) for s in slots}
        # Each optimizer's own other state (iterations, loss scale, ...).
        rest_old = [v for v in _keras.optimizer_variables(old_opt)
                    if id(v) not in in_slots]
        rest_new = [v for v in _keras.optimizer_variables(new_opt)
                    if id(v) not in in_slots]
        for source, target in zip(rest_old, rest_new, strict=True):
            target.assign(source)
    return new


def _retrace(model: keras.Model) -> None:
    """Drops the traced functions so the next call re-traces them."""
    model.train_function = None
    model.test_function = None
    model.predict_function = None
    if model.compiled:
        model.make_train_function(force=True)
        model.make_test_function(force=True)
    model.make_predict_function(force=True)
