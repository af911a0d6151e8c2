"""`add_group_lasso`: attach PruneTrain's channel group lasso to a model."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tf_prunetrain import coupling
from tf_prunetrain import handlers
from tf_prunetrain import surgery
from tf_prunetrain.regularizers import GroupLasso


def add_group_lasso(
    model: keras.Model,
    strength: float = 0.0,
    epsilon: float = 1e-8,
    replace_existing: bool = False,
    proximal: bool = False,
    scales: bool = False,
) -> keras.Model:
    """Returns an equivalent model with `GroupLasso` on every prunable kernel.

    Groups follow the channel-coupling analysis: an axis of a kernel gets
    groups only when its channels can be removed at all, so the first
    convolution's image-channel inputs and the classifier's class outputs are
    not regularized (the paper's rule), nor are channels frozen by layers the
    library cannot follow. Weights, names and compile settings are kept.
    An axis only partly frozen (a layer reading `Concatenate([image, h])`)
    is regularized whole: `GroupLasso` groups every index of its axes; the
    frozen slices are merely shrunk, never removed.

    Keras regularizers do not combine: a kernel that already has one (say
    L2 weight decay) raises a ValueError unless `replace_existing=True`. The
    paper keeps weight decay on; put it on the optimizer instead
    (`keras.optimizers.SGD(..., weight_decay=5e-4)`).

    Args:
      model: a built functional or Sequential model.
      strength: initial coefficient λ of every GroupLasso (the `Reconfigure`
        callback calibrates it from a penalty ratio at the first step).
      epsilon: added inside each group's square root.
      replace_existing: replace kernels' existing regularizers.
      proximal: apply the penalty as a proximal step after each update
        (`GroupLasso(proximal=True)`, see there) instead of a loss term;
        channels then die while the learning rate is still high.
      scales: also put an element-wise `GroupLasso` (L1) on the per-channel
        scales of prunable channels (BatchNormalization's `gamma`). A
        convolution followed by BatchNorm is scale-invariant, so the lasso
        on its kernel alone cannot tell a useless channel from a useful one;
        a zero `gamma` silences the channel, after which its kernel slices
        get no gradient and the lasso zeroes them (the paper leaves gamma
        alone: off by default).

    Example:
    >>> import keras, tf_prunetrain
    >>> x = keras.Input((8, 8, 3))
    >>> h = keras.layers.Conv2D(4, 3, name="conv")(x)
    >>> y = keras.layers.Dense(2, name="classifier")(
    ...     keras.layers.GlobalAveragePooling2D()(h))
    >>> m = tf_prunetrain.add_group_lasso(keras.Model(x, y), strength=1e-4)
    >>> m.get_layer("conv").kernel_regularizer.axes
    (-1,)
    >>> m.get_layer("classifier").kernel_regularizer.axes
    (-2,)
    """
    graph = coupling.channel_groups(model)
    axes = _prunable_axes(graph, scales)
    clashes = [
        f"'{layer.name}'.{key}" for layer in _layers(graph)
        for key in axes.get(id(layer), {})
        if not isinstance(getattr(layer, key, None), (type(None), GroupLasso))
    ]
    if clashes and not replace_existing:
        raise ValueError(
            "add_group_lasso: these kernels already have a regularizer: "
            f"{', '.join(clashes)}. Pass replace_existing=True to replace "
            "them (move weight decay to the optimizer's weight_decay).")

    def config_fn(layer: Any, config: dict) -> dict:
        for key, layer_axes in axes.get(id(layer), {}).items():
            config[key] = GroupLasso(strength, layer_axes, epsilon, proximal)
        return config

    return surgery.Plan.keep_all(graph).apply(config_fn)


def _layers(graph: coupling.ChannelGraph) -> list[Any]:
    """The distinct layers that own channel-carrying weights."""
    return list({id(b.layer): b.layer for b in graph.bindings.values()}.values())


def _prunable_axes(graph: coupling.ChannelGraph, scales: bool
                   ) -> dict[int, dict[str, tuple[int, ...]]]:
    """id(layer) -> {regularizer config key: weight axes to regularize}."""
    found: dict[int, dict[str, tuple[int, ...]]] = {}
    for b in graph.bindings.values():
        handler = handlers.handler_for(b.layer)
        key = (handler.regularizers if b.judge else
               handler.scale_regularizers if scales else {}).get(b.weight)
        if key is None or np.all(graph.is_frozen(b.ids)):
            continue
        rank = len(coupling.weight(b.layer, b.weight).shape)
        layer_axes = found.setdefault(id(b.layer), {})
        layer_axes[key] = tuple(sorted({*layer_axes.get(key, ()), b.axis - rank}))
    return found
