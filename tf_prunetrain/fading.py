"""Fading: the channels a cut will remove, shrunk to zero before it.

A cut of live channels changes the model's function at once; a cut of
channels that are already zero does not (the library's core invariant).
`Fade` bridges the two: over the `steps` train steps before a cut, every
kernel slice coupled to a channel the cut will remove (the producer's
output slice and every consumer's input slice, as `ChannelGraph.zero`)
is multiplied after each step by `1 − 1/left`, `left` the steps to go, so
its magnitude falls linearly and is exactly zero at the last step, while
the gradient keeps training what the rest of the model does without it.
`schedules.FlopsBudget(gentle=True)` uses it for the epoch before each
cut (the "gentle cut" of issue 31).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tf_prunetrain import coupling
from tf_prunetrain import planning


class Fade:
    """Shrinks the channels `plan` removes to zero over `steps` steps.

    Args:
      plan: the cut to come (its graph is the model now).
      steps: train steps until the cut; `step()` is called after each.

    Example:
    >>> import keras, numpy as np, tf_prunetrain
    >>> from tf_prunetrain import budget, fading
    >>> x = keras.Input((8, 8, 3))
    >>> h = keras.layers.Conv2D(8, 3, padding="same", name="c1")(x)
    >>> model = keras.Model(x, keras.layers.Conv2D(2, 1, name="c2")(h))
    >>> graph = tf_prunetrain.channel_groups(model)
    >>> plan = budget.plan_to_flops(graph, 0.5 * tf_prunetrain.cost
    ...                             .forward_flops(model))
    >>> fade = fading.Fade(plan, steps=2)
    >>> fade.step(); fade.step(); fade.left
    0
    >>> norms = np.abs(model.get_layer("c1").kernel.numpy()).max((0, 1, 2))
    >>> bool(np.all(norms[~plan.mask(graph.layer_outputs()["c1"])] == 0))
    True
    >>> budget.plan_to_flops(tf_prunetrain.channel_groups(model),
    ...                      0.5 * tf_prunetrain.cost.forward_flops(model)
    ...                      ).changes() == plan.changes()
    True
    """

    def __init__(self, plan: planning.Plan, steps: int) -> None:
        if steps < 1:
            raise ValueError(f"Fade: steps must be >= 1, got {steps!r}.")
        graph = plan.graph
        doomed = np.flatnonzero(~plan.keep)
        doomed = doomed[doomed != coupling.FROZEN]
        self.left = steps
        self._targets: list[tuple[Any, np.ndarray]] = []
        for b in graph.bindings.values():
            if not b.judge:
                continue
            hit = np.isin(graph.roots(b.ids), doomed)
            if not hit.any():
                continue
            variable = coupling.weight(b.layer, b.weight)
            shape = [1] * len(variable.shape)
            shape[b.axis] = len(hit)
            self._targets.append((variable, hit.reshape(shape)))
        self._step = tf.function(self._shrink) if self._targets else None

    def _shrink(self, rate: Any) -> None:
        for variable, hit in self._targets:
            factor = tf.where(hit, 1.0 - rate, 1.0)
            variable.assign(variable * tf.cast(factor, variable.dtype))

    @classmethod
    def for_epoch(cls, plan: planning.Plan, params: dict | None,
                  schedule: Any) -> "Fade":
        """A fade over one epoch of `fit` (`params`: the callbacks')."""
        steps = (params or {}).get("steps")
        if not steps:
            raise ValueError(
                f"Reconfigure: {schedule!r} fades channels over an epoch, so "
                "it needs the number of steps per epoch: pass "
                "steps_per_epoch to fit, or a dataset of known size.")
        return cls(plan, int(steps))

    def step(self, steps: int = 1) -> None:
        """`steps` train steps done: shrink by `steps/left` of what is left
        (as many single steps would: the factors' product telescopes)."""
        steps = min(steps, self.left)
        if steps <= 0:
            return
        if self._step is not None:
            self._step(tf.constant(steps / self.left, tf.float32))
        self.left -= steps
