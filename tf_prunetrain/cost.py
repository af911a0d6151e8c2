"""Cost of a model, from the per-layer handler table's formulas.

Issue-level scope today: forward FLOPs (the paper's inference FLOPs, and the
basis of its training FLOPs ≈ 3 × forward × batch).
"""

from __future__ import annotations

from typing import Any

import keras

from tf_prunetrain import graph as graph_lib
from tf_prunetrain import handlers


def forward_flops(model: keras.Model) -> int:
    """Forward floating-point operations for one example.

    Convolutions, depthwise/separable convolutions and Dense layers count
    2 per multiply-add plus one per bias add; other layers count zero (the
    paper's accounting). Nested models count once per call.

    Example:
    >>> import keras, tf_prunetrain
    >>> x = keras.Input((8, 8, 3))
    >>> y = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(x)
    >>> tf_prunetrain.forward_flops(keras.Model(x, y))  # 2·3·3·3·4·8·8
    13824
    """
    total = 0

    def visit(view: graph_lib.NodeView, values: dict) -> list:
        nonlocal total
        op = view.operation
        if graph_lib.is_model(op):
            inner = graph_lib.functional_of(op)
            graph_lib.walk(inner, [None] * len(inner.inputs), visit)
        else:
            total += handlers.handler_for(op).flops(
                op, [tuple(t.shape) for t in view.inputs],
                [tuple(t.shape) for t in view.outputs])
        return [None] * len(view.outputs)

    top = graph_lib.functional_of(model)
    graph_lib.walk(top, [None] * len(top.inputs), visit)
    return total
