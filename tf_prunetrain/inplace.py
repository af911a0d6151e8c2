"""In-place reconfiguration: apply a pruning `Plan` to the live model.

The same `keras.Model` object and the same layer objects get smaller
variables; weights, BatchNorm statistics and the optimizer's state keep their
surviving slices, and the model's train/test/predict functions are re-traced,
so a running `model.fit` continues on the smaller model. The plan is the one
`prune_channels` applies (see `planning`), residual branches included: a
functional graph that loses a dead branch is re-pointed at new outputs
computed by the same layers (the merge becomes the kept input plus the
branch's constant offset), and the branch's layers and variables leave the
model.

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
from tf_prunetrain import slicing


@dataclasses.dataclass
class _LayerChange:
    layer: Any
    attributes: dict[str, Any]  # config attributes that change
    shapes: list[tuple]  # new input shapes (for build)
    values: list[np.ndarray] | None  # new weights in layer.weights order


def reconfigure_in_place(model: keras.Model, plan: planning.Plan) -> bool:
    """Shrinks `model` in place to what `plan` keeps.

    Returns whether the model changed (False: the plan keeps everything).

    Raises:
      RuntimeError: the change failed; the model is left as it was.
    """
    changes = _layer_changes(plan)
    tensors = _tensor_shapes(plan)
    graphs = _losing_branches(plan)
    if not changes and not tensors and not graphs:
        return False
    rollback = _Rollback(model, [c.layer for c in changes], graphs,
                         [t for t, _ in tensors])
    old_weights = {id(c.layer): list(c.layer.weights) for c in changes}
    try:
        with model.distribute_strategy.scope():
            for change in changes:
                _apply(change)
            for tensor, shape in tensors:
                graph_lib.set_shape(tensor, shape)
            for graph in graphs:
                _rewire(graph, plan)
            if rollback.optimizer is not None:
                replaced = {id(new): (old, change.layer) for change in changes
                            for old, new in zip(old_weights[id(change.layer)],
                                                change.layer.weights)}
                model.optimizer = _rebuilt_optimizer(
                    model, rollback.optimizer, plan, replaced)
        _retrace(model)
    except Exception as e:
        rollback()
        _retrace(model)
        raise RuntimeError(
            f"in-place reconfiguration of '{model.name}' failed and was rolled "
            f"back; the model is unchanged: {type(e).__name__}: {e}") from e
    return True


class _Rollback:
    """What `reconfigure_in_place` changes, as it was before: calling it
    puts the layers' variables (the same objects), graphs, tensor shapes
    and optimizer back (a failed change leaves the model as it was)."""

    def __init__(self, model: keras.Model, layers: list[Any],
                 graphs: list[Any], tensors: list[Any]):
        self.model = model
        self.optimizer = getattr(model, "optimizer", None) \
            if model.compiled else None
        self._layers = [_Snapshot(layer) for layer in layers]
        self._wiring = [_keras.GraphSnapshot(g) for g in graphs]
        self._shapes = [(t, t.shape) for t in tensors]

    def __call__(self) -> None:
        for state in self._layers:
            state.restore()
        for state in reversed(self._wiring):
            state.restore()
        for tensor, shape in self._shapes:
            graph_lib.set_shape(tensor, shape)
        if self.optimizer is not None:
            self.model.optimizer = self.optimizer


def _losing_branches(plan: planning.Plan) -> list[Any]:
    """The functional graphs (the model, nested models) that lose nodes."""
    lose = plan.removed | set(plan.merges)
    graphs = {id(r.view.owner): r.view.owner for r in plan.graph.records
              if id(r.view.node) in lose}
    return list(graphs.values())


def _rewire(graph: Any, plan: planning.Plan) -> None:
    """Calls `graph`'s own layers again from its inputs, without the removed
    nodes, and points the graph at the new outputs."""
    def visit(view: graph_lib.NodeView, values: dict) -> list | None:
        key = id(view.node)
        if key in plan.removed:
            return None
        if key in plan.merges:
            return [slicing.merged(plan, view, values, lambda: view.operation)]
        args, kwargs = view.call_args(values)
        return keras.tree.flatten(view.operation(*args, **kwargs))

    outputs = graph_lib.walk(graph, list(graph.inputs), visit)
    if any(o is None for o in outputs):
        raise RuntimeError(f"internal error: an output of '{graph.name}' was "
                           "removed with a residual branch.")
    _keras.rewire(graph, outputs)


def _layer_changes(plan: planning.Plan) -> list[_LayerChange]:
    changes, seen = [], set()
    for record in plan.graph.records:
        layer = record.view.operation
        edit = plan.merges.get(id(record.view.node))
        if (record.handler is None or id(layer) in seen
                or id(record.view.node) in plan.removed
                or not isinstance(layer, keras.layers.Layer)
                or (edit is not None and len(edit.kept) == 1)):
            continue  # removed, or a merge left with one input (dropped)
        inputs, ins = record.view.inputs, record.ins
        if edit is not None:
            inputs = [inputs[i] for i in edit.kept]
            ins = [ins[i] for i in edit.kept]
        seen.add(id(layer))
        old = layer.get_config()
        new = slicing.layer_config(plan, record)
        attributes = {
            key: keras.saving.deserialize_keras_object(value)
            if isinstance(value, dict) else value
            for key, value in new.items() if not _same(value, old.get(key))
        }
        shapes = [slicing.shape(plan, t.shape, ids) for t, ids in zip(inputs, ins)]
        sliced = any(not np.all(plan.mask(b.ids))
                     for b in plan.graph.bindings_of(layer))
        resized = shapes != [tuple(t.shape) for t in record.view.inputs]
        if not (attributes or sliced or resized):
            continue
        values = slicing.sliced_weights(plan, layer) if layer.weights else None
        changes.append(_LayerChange(layer, attributes, shapes, values))
    return changes


def _tensor_shapes(plan: planning.Plan) -> list[tuple[Any, tuple]]:
    """New shapes of every graph tensor that loses channels (layer outputs
    and the inputs of nested models)."""
    found = []
    for record in plan.graph.records:
        if id(record.view.node) in plan.removed:
            continue
        pairs = list(zip(record.view.outputs, record.outs))
        if graph_lib.is_model(record.view.operation):
            inner = graph_lib.functional_of(record.view.operation).inputs
            pairs += list(zip(inner, record.ins))
        for tensor, ids in pairs:
            shape = slicing.shape(plan, tensor.shape, ids)
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
                       replaced: dict[int, tuple[Any, Any]]) -> Any:
    """A fresh optimizer like `old`, built on the model's variables now,
    with every slot's surviving slice, the iteration count and other state.
    `replaced` maps each new variable of a changed layer to (the variable
    it replaces, the layer); other variables are the old ones. Variables
    that left the model (removed branches) leave their slots behind. An
    optimizer that was never built has no state: it is kept, and builds on
    the new variables at the first step. A learning-rate schedule is kept
    as the same object."""
    if not _keras.trained_variables(old):
        return old
    new = type(old).from_config(old.get_config())
    pairs = [(old, new)]
    if hasattr(old, "inner_optimizer"):  # LossScaleOptimizer
        pairs.append((old.inner_optimizer, new.inner_optimizer))
    for old_opt, new_opt in pairs:
        # The schedule object itself, not a copy from its config: it may
        # hold state (`experimental.Rewarmed`), and callbacks may hold it.
        rate = _keras.learning_rate(old_opt)
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            new_opt.learning_rate = rate
    new.build(model.trainable_variables)
    for old_opt, new_opt in pairs:
        index = {id(v): i for i, v in
                 enumerate(_keras.trained_variables(old_opt))}
        old_slots = _keras.slot_lists(old_opt)
        new_slots = _keras.slot_lists(new_opt)
        for name, targets in new_slots.items():
            for variable, target in zip(_keras.trained_variables(new_opt),
                                        targets):
                source, layer = replaced.get(id(variable), (variable, None))
                if id(source) not in index:
                    raise RuntimeError(
                        f"variable '{source.path}' has no state in "
                        f"{type(old_opt).__name__}: it was not trained before.")
                slot = old_slots[name][index[id(source)]]
                value = np.asarray(slot.numpy())
                if layer is not None:
                    value = slicing.slice_weight(plan, layer, source.name, value)
                if tuple(target.shape) != value.shape:
                    raise RuntimeError(
                        f"optimizer state '{name}' of {type(old_opt).__name__}"
                        f" has shape {tuple(slot.shape)}, not its variable's: "
                        "its slices cannot be carried over.")
                target.assign(value)
    _carry_rest(old, new)
    return new


def _carry_rest(source: Any, target: Any) -> None:
    """Copies an optimizer's own state that is not a slot (iterations, loss
    scale, ...) to another built from its config, and so for an inner
    optimizer (LossScaleOptimizer)."""
    pairs = [(source, target)]
    if hasattr(source, "inner_optimizer"):
        pairs.append((source.inner_optimizer, target.inner_optimizer))
    for old_opt, new_opt in pairs:
        lists = (_keras.slot_lists(old_opt), _keras.slot_lists(new_opt))
        in_slots = {id(s) for slots in lists for group in slots.values()
                    for s in group}
        rest_old = [v for v in _keras.optimizer_variables(old_opt)
                    if id(v) not in in_slots]
        rest_new = [v for v in _keras.optimizer_variables(new_opt)
                    if id(v) not in in_slots]
        for value, variable in zip(rest_old, rest_new, strict=True):
            variable.assign(value)


def _retrace(model: keras.Model) -> None:
    """Drops the traced functions so the next call re-traces them."""
    model.train_function = None
    model.test_function = None
    model.predict_function = None
    if model.compiled:
        model.make_train_function(force=True)
        model.make_test_function(force=True)
    model.make_predict_function(force=True)
