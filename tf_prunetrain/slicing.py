"""What a `Plan` means for one layer: its sliced weights, config and shapes.

The one place both engines (`surgery`, the rebuilt copy, and `inplace`, the
live model) turn a plan into layer edits, so slicing logic exists once.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np

from tf_prunetrain import coupling
from tf_prunetrain import graph as graph_lib
from tf_prunetrain import handlers
from tf_prunetrain.planning import Plan


def weight_slices(plan: Plan, layer: Any
                  ) -> dict[str, list[tuple[int, np.ndarray]]]:
    """For each weight of `layer`: the (axis, kept indices) to take."""
    slices: dict[str, list[tuple[int, np.ndarray]]] = {}
    for b in plan.graph.bindings_of(layer):
        slices.setdefault(b.weight, []).append(
            (b.axis, np.flatnonzero(plan.mask(b.ids))))
    return slices


def slice_weight(plan: Plan, layer: Any, name: str,
                 value: np.ndarray) -> np.ndarray:
    """The kept part of `value`, the weight `name` of `layer` (or a value
    shaped like it, e.g. an optimizer slot)."""
    for axis, idx in weight_slices(plan, layer).get(name, []):
        value = np.take(value, idx, axis=axis)
    return value


def sliced_weights(plan: Plan, layer: Any) -> list[np.ndarray]:
    """The kept part of every weight of `layer`, in `layer.weights` order."""
    return [slice_weight(plan, layer, w.name, np.asarray(w.numpy()))
            for w in layer.weights]


def shape(plan: Plan, full: tuple, ids: handlers.Ids) -> tuple:
    """`full` (channels last) with only the kept channels of `ids`."""
    mask = plan.mask(ids)
    if mask is None:
        return tuple(full)
    return (*full[:-1], int(np.count_nonzero(mask)))


def layer_config(plan: Plan, record: coupling.Record) -> dict:
    """The config of `record`'s layer with only the kept channels."""
    op = record.view.operation
    return record.handler.config(
        op, op.get_config(), [plan.mask(i) for i in record.ins],
        [plan.mask(o) for o in record.outs])


def merged(plan: Plan, view: graph_lib.NodeView, values: dict[int, Any],
           operation: Callable[[], Any]) -> Any:
    """The output of a merge that loses branches (`plan.merges`), computed
    from the values of its kept inputs: `operation()` (the merge layer the
    engine uses) on them, or the one kept input, plus the removed branches'
    constant as a `Rescaling` offset."""
    edit = plan.merges[id(view.node)]
    kept = [values[id(view.inputs[i])] for i in edit.kept]
    out = kept[0] if len(kept) == 1 else operation()(kept)
    if edit.offset is not None:
        record = next(r for r in plan.graph.records if r.view.node is
                      view.node)
        out = keras.layers.Rescaling(
            1.0, offset=edit.offset[plan.mask(record.outs[0])],
            name=f"{view.operation.name}_offset")(out)
    return out
