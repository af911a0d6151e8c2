"""Training cost of a model, from the per-layer handler table's formulas.

Conventions (the PruneTrain paper's):

* FLOPs: a multiply-add counts 2; only weight products (convolutions,
  depthwise/separable convolutions, Dense) and their bias adds count.
* Training FLOPs of one step: batch × Σ over layer calls of forward + weight
  gradient + input gradient (≈ 3 × forward). The input gradient is skipped
  where nothing trainable lies upstream (the first convolution), the weight
  gradient for frozen (`trainable=False`) layers.
* Memory traffic: layers without FLOPs (BatchNorm, activations, pooling,
  merges) are bandwidth-bound; each costs 8 memory accesses per output
  activation per step (3 forward, 5 backward). Views (Flatten, Reshape,
  Identity) cost nothing.
* Gradient bytes: the trainable variables' sizes × their dtypes' widths —
  what data-parallel training all-reduces every step.
* Activation bytes: the model inputs and every layer output except views,
  for one example, in the tensors' (compute) dtypes — the memory that limits
  the mini-batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tf_prunetrain import _checks
from tf_prunetrain import graph as graph_lib
from tf_prunetrain import handlers

ACCESSES_PER_ACTIVATION = 8  # 3 forward + 5 backward (the paper's count)


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One layer's share; FLOPs and bytes for one example, summed over the
    layer's calls. `channels` is the output channel count of its first call."""

    path: str
    kind: str
    channels: int | None
    params: int
    forward_flops: int
    train_flops: int
    activation_bytes: int
    memory_traffic_bytes: int
    gradient_bytes: int


@dataclasses.dataclass(frozen=True)
class TrainingCost:
    """A model's cost at one mini-batch size (see the module docstring).

    Attributes:
      batch_size: examples per step the per-step figures assume.
      train_flops: forward + backward FLOPs of one training step.
      inference_flops: forward FLOPs of one example.
      params: all parameters (`model.count_params()`).
      gradient_bytes: bytes all-reduced per data-parallel step.
      activation_bytes: activation memory of one example.
      memory_traffic_bytes: bandwidth-bound layers' traffic of one step.
      layers: the per-layer breakdown, in graph order.
    """

    batch_size: int
    train_flops: int
    inference_flops: int
    params: int
    gradient_bytes: int
    activation_bytes: int
    memory_traffic_bytes: int
    layers: tuple[LayerCost, ...]

    def totals(self) -> dict[str, int]:
        """The scalar fields as a dict (JSON-ready)."""
        return {f.name: getattr(self, f.name)
                for f in dataclasses.fields(self) if f.name != "layers"}

    def channels(self) -> dict[str, int]:
        """Output channels of the layers that compute FLOPs (the prunable
        convolutions and Dense layers), by layer path."""
        return {row.path: row.channels for row in self.layers
                if row.forward_flops and row.channels is not None}

    def summary(self, initial: TrainingCost | None = None) -> str:
        """A `model.summary()`-style table: per layer with parameters or
        FLOPs, channels (initial → now when `initial` is given), parameters
        and share of the training FLOPs; then the totals."""
        before = {row.path: row for row in initial.layers} if initial else {}
        header = ("Layer", "Type", "Channels", "Params", "Train FLOPs")
        rows = []
        for row in self.layers:
            if not (row.params or row.forward_flops):
                continue
            old = before.get(row.path)
            channels = "" if row.channels is None else str(row.channels)
            if old is not None and old.channels not in (None, row.channels):
                channels = f"{old.channels} -> {channels}"
            share = row.train_flops * self.batch_size / max(self.train_flops, 1)
            rows.append((row.path, row.kind, channels, f"{row.params:,}",
                         f"{100.0 * share:.1f}%"))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
        lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                           for i, (cell, w) in enumerate(zip(r, widths)))
                 for r in [header, *rows]]
        rule = "-" * len(lines[0])
        totals = []
        for label, key in (("Parameters", "params"),
                           ("Train FLOPs/step", "train_flops"),
                           ("Inference FLOPs/example", "inference_flops"),
                           ("Gradient bytes/step", "gradient_bytes"),
                           ("Activation bytes/example", "activation_bytes"),
                           ("Memory traffic bytes/step",
                            "memory_traffic_bytes")):
            now = getattr(self, key)
            text = f"{label}: {now:,}"
            if initial is not None:
                was = getattr(initial, key)
                text += (f" (initial {was:,}, "
                         f"{100.0 * (now / max(was, 1) - 1):+.1f}%)")
            totals.append(text)
        return "\n".join([rule, lines[0], rule, *lines[1:], rule, *totals,
                          f"(batch size {self.batch_size}; a multiply-add "
                          "counts 2 FLOPs)"])


def _bytes(dtype: Any) -> int:
    return np.dtype(keras.backend.standardize_dtype(dtype)).itemsize


def _elements(tensor: Any, where: str) -> int:
    shape = tuple(tensor.shape)[1:]
    if None in shape:
        raise ValueError(
            f"training_cost: '{where}' has output shape {tuple(tensor.shape)}; "
            "costs need static spatial dimensions — build the model with a "
            "fixed input size, e.g. keras.Input((32, 32, 3)).")
    return int(np.prod(shape, dtype=np.int64))


def _size(weights: list) -> int:
    return sum(int(np.prod(w.shape, dtype=np.int64)) for w in weights)


def _weight_bytes(weights: Any) -> int:
    return sum(_size([w]) * _bytes(w.dtype) for w in weights)


def training_cost(model: keras.Model, batch_size: int = 1) -> TrainingCost:
    """The training and inference cost of `model` at `batch_size`.

    Example:
    >>> import keras, tf_prunetrain
    >>> x = keras.Input((8, 8, 3))
    >>> y = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(x)
    >>> cost = tf_prunetrain.training_cost(keras.Model(x, y), batch_size=2)
    >>> cost.inference_flops  # 2·(3·3·3·4)·(8·8)
    13824
    >>> cost.train_flops  # 2 examples × (forward + weight gradient)
    55296
    """
    _checks.positive_int(batch_size, "batch_size", "training_cost")
    rows: dict[str, dict] = {}
    seen: set[int] = set()

    def visit(view: graph_lib.NodeView, values: dict) -> list:
        op = view.operation
        upstream = any(values.get(id(t)) for t in view.inputs)
        if graph_lib.is_model(op):
            inner = graph_lib.functional_of(op)
            return graph_lib.walk(inner, [values.get(id(t)) for t in
                                          view.inputs], visit,
                                  prefix=view.path + "/")
        handler = handlers.handler_for(op)
        try:
            flops = handler.flops(op, [tuple(t.shape) for t in view.inputs],
                                  [tuple(t.shape) for t in view.outputs])
        except ValueError as e:
            raise ValueError(f"training_cost: layer '{view.path}': {e} Build "
                             "the model with a fixed input size.") from e
        trainable = list(getattr(op, "trainable_weights", []))
        out_bytes = 0 if handler.view else sum(
            _elements(t, view.path) * _bytes(t.dtype) for t in view.outputs)
        train = flops.forward + (flops.weight_grad if trainable else 0) + (
            flops.input_grad if upstream else 0)
        row = rows.setdefault(view.path, {
            "path": view.path, "kind": type(op).__name__,
            "channels": handlers.channels(tuple(view.outputs[0].shape))
            if view.outputs else None,
            "params": 0, "forward_flops": 0, "train_flops": 0,
            "activation_bytes": 0, "memory_traffic_bytes": 0,
            "gradient_bytes": 0})
        if id(op) not in seen:  # a shared layer's weights count once
            seen.add(id(op))
            row["params"] += _size(getattr(op, "weights", []))
            row["gradient_bytes"] += _weight_bytes(trainable)
        row["forward_flops"] += flops.forward
        row["train_flops"] += train
        row["activation_bytes"] += out_bytes
        if not flops.forward:
            row["memory_traffic_bytes"] += ACCESSES_PER_ACTIVATION * out_bytes
        return [upstream or bool(trainable)] * len(view.outputs)

    top = graph_lib.functional_of(model)
    graph_lib.walk(top, [False] * len(top.inputs), visit)
    layers = tuple(LayerCost(**row) for row in rows.values())
    inputs = sum(_elements(t, graph_lib.input_name(t)) * _bytes(t.dtype)
                 for t in top.inputs)
    return TrainingCost(
        batch_size=batch_size,
        train_flops=batch_size * sum(r.train_flops for r in layers),
        inference_flops=sum(r.forward_flops for r in layers),
        params=model.count_params(),
        gradient_bytes=gradient_bytes(model),
        activation_bytes=inputs + sum(r.activation_bytes for r in layers),
        memory_traffic_bytes=batch_size * sum(r.memory_traffic_bytes
                                              for r in layers),
        layers=layers)


def gradient_bytes(model: keras.Model) -> int:
    """Bytes of the trainable variables: what data-parallel training
    all-reduces every step (works for any model, dynamic sizes included)."""
    return _weight_bytes({id(v): v for v in model.trainable_variables}.values())


def forward_flops(model: keras.Model) -> int:
    """Forward FLOPs of one example (`training_cost(model).inference_flops`).

    Example:
    >>> import keras, tf_prunetrain
    >>> x = keras.Input((8, 8, 3))
    >>> y = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(x)
    >>> tf_prunetrain.cost.forward_flops(keras.Model(x, y))  # 2·3·3·3·4·8·8
    13824
    """
    return training_cost(model).inference_flops
