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

Inside the train step, or after it. With `in_step=True` the shrink of every
trainable target is a constraint the optimizer applies after its update
(`Faded`, around the variable's own `ProximalStep`, if any), with the rate
in a variable the fade sets between steps: it costs no graph of its own
if the train function is traced after the fade begins (`Reconfigure`
folds it in when the fade's epoch starts with a train function not yet
traced: after a cut, or at a `fit`'s start), and `close()` takes it out
again (before the cut). Frozen targets, targets with other constraints,
and every target when `in_step` is False, are shrunk after each step by a
`tf.function` of their own (one trace per fade). Both multiply by the same
float32 factors: the weights agree to float32 rounding (inside the step
the graph may order the multiplies otherwise).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_prunetrain import coupling
from tf_prunetrain import planning
from tf_prunetrain import regularizers


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

    def __init__(self, plan: planning.Plan, steps: int,
                 in_step: bool = False) -> None:
        if steps < 1:
            raise ValueError(f"Fade: steps must be >= 1, got {steps!r}.")
        graph = plan.graph
        doomed = np.flatnonzero(~plan.keep)
        doomed = doomed[doomed != coupling.FROZEN]
        self.left = steps
        self._targets: list[tuple[Any, np.ndarray]] = []
        self._folded: list[Any] = []  # variables whose constraint fades
        self._rate: Any = None
        for b in graph.bindings.values():
            if not b.judge:
                continue
            hit = np.isin(graph.roots(b.ids), doomed)
            if not hit.any():
                continue
            variable = coupling.weight(b.layer, b.weight)
            shape = [1] * len(variable.shape)
            shape[b.axis] = len(hit)
            if in_step and _foldable(variable):
                self._fold(variable, hit.reshape(shape), steps)
            else:
                self._targets.append((variable, hit.reshape(shape)))
        self._step = tf.function(self._shrink) if self._targets else None

    @property
    def traced(self) -> bool:
        """Whether this fade has a graph of its own (targets it shrinks
        after the step)."""
        return self._step is not None

    @property
    def folded(self) -> bool:
        """Whether this fade runs inside the train step (constraints on
        some of its targets)."""
        return bool(self._folded)

    def _fold(self, variable: Any, hit: np.ndarray, steps: int) -> None:
        if self._rate is None:
            self._rate = tf.Variable(1.0 / steps, trainable=False,
                                     dtype=tf.float32, name="fade_rate")
        variable.constraint = Faded(variable.constraint, hit, self._rate)
        self._folded.append(variable)

    def close(self) -> None:
        """Gives the folded targets their own constraints back."""
        for variable in self._folded:
            while isinstance(variable.constraint, Faded):
                variable.constraint = variable.constraint.inner
        self._folded = []

    def _shrink(self, rate: Any) -> None:
        for variable, hit in self._targets:
            factor = tf.where(hit, 1.0 - rate, 1.0)
            variable.assign(variable * tf.cast(factor, variable.dtype))

    @classmethod
    def for_epoch(cls, plan: planning.Plan, model: keras.Model,
                  params: dict | None, schedule: Any, ran: Any = None,
                  fold: bool = True) -> "Fade":
        """A fade over one epoch of `model`'s `fit` (`params`: the
        callbacks'), in the train step if `fold` (the caller knows the step
        is traced after this anyway; it is decided by the run's course, not
        by the process, so a resumed run folds where the first did), one
        step per call and no distribution strategy. If the train function
        already ran (it is `ran`, the last step's), it is traced again."""
        steps = (params or {}).get("steps")
        if not steps:
            raise ValueError(
                f"Reconfigure: {schedule!r} fades channels over an epoch, so "
                "it needs the number of steps per epoch: pass "
                "steps_per_epoch to fit, or a dataset of known size.")
        fade = cls(plan, int(steps), in_step=(
            fold and model.steps_per_execution == 1
            and not tf.distribute.has_strategy()))
        if fade.folded and model.train_function is ran:
            model.make_train_function(force=True)
        return fade

    def step(self, steps: int = 1) -> None:
        """`steps` train steps done: shrink by `steps/left` of what is left
        (as many single steps would: the factors' product telescopes)."""
        steps = min(steps, self.left)
        if steps <= 0:
            return
        if self._step is not None:
            self._step(tf.constant(steps / self.left, tf.float32))
        self.left -= steps
        if self._rate is not None:  # the next step's (0: done)
            self._rate.assign(1.0 / self.left if self.left else 0.0)


def close(fade: Fade | None) -> None:
    """`fade.close()`, if there is a fade."""
    if fade is not None:
        fade.close()


def _foldable(variable: Any) -> bool:
    """A variable the optimizer updates, whose constraint (if any) is the
    lasso's proximal step or a fade's (a kernel faded on both axes): its
    fade can be a constraint around it."""
    return variable.trainable and (
        variable.constraint is None or isinstance(
            variable.constraint, (regularizers.ProximalStep, Faded)))


class Faded(keras.constraints.Constraint):
    """`inner` (a constraint or None), then the fade's shrink: the slices
    `hit` marks times `1 − rate` (`Fade(in_step=True)`)."""

    def __init__(self, inner: Any, hit: np.ndarray, rate: Any) -> None:
        self.inner, self.hit, self.rate = inner, hit, rate

    def __call__(self, w: Any) -> Any:
        if self.inner is not None:
            w = self.inner(w)
        factor = tf.where(self.hit, 1.0 - self.rate, 1.0)
        return w * tf.cast(factor, w.dtype)
